//! The storage conformance suite: what every [`Storage`] backend must do, written once.
//!
//! Each case is a plain `async fn(&dyn Storage)` that starts from an empty store and talks to it only
//! through the trait, so that it says nothing about SQL or one backend's schema. The
//! `conformance_suite!` macro turns every case into one `#[tokio::test]` per backend, in a module named
//! after the backend's constructor (`sqlite::append_assigns_...`), so a failure names the backend.
//!
//! Backends: SQLite, on a fresh database file per test, and PostgreSQL, in a fresh schema per test of
//! the database at `SIGLOOP_TEST_POSTGRES_URL` (by default `postgres://postgres@127.0.0.1:5432/test`).
//! PostgreSQL is required: when it cannot be reached, its cases fail and say so, rather than pass
//! without having checked anything. A backend is one constructor returning a freshly migrated, empty
//! store, and one line `conformance_suite!(name);`. No case changes.
//!
//! Times are small made-up millisecond values: storage never reads the clock, so the cases are
//! deterministic.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;
use sigloop::config::routes::SignalKind;
use sigloop::config::settings::Synchronous;
use sigloop::config::signals::Severity;
use sigloop::config::signals::Window;
use sigloop::decode::{Rejection, RejectionCode};
use sigloop::domain::{AccountId, Millis, MILLIS_PER_DAY};
use sigloop::journey::{BucketDelta, BucketKey, Figures, FiredRow, FleetGroup};
use sigloop::kpi::LoopTiming;
use sigloop::loops::{
    loop_id, CloseReason, EvidenceRow, HistoryRow, LinkRow, LoopRecord, LoopState,
};
use sigloop::pipeline::core::{
    BatchEffects, EntryKind, FailedEntry, LogEntry, OffsetAdvance, OutboxEvent, SignalRow,
};
use sigloop::route::Account;
use sigloop::storage::{
    AppendEntry, JourneyDimension, JourneyQuery, LoopFilter, NewDeadLetter, NewToken,
    PostgresStorage, PurgeCounts, SqliteStorage, Storage, StorageError, StoredOffset, TokenRow,
    MAX_DEAD_LETTER_PAYLOAD,
};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

// ---------------------------------------------------------------------------------------------
// The harness: one constructor per backend, and the macro that runs every case against each.
// ---------------------------------------------------------------------------------------------

/// A fresh, empty store and whatever has to outlive it.
struct Backend {
    storage: Box<dyn Storage>,
    /// The directory holding a file-backed database; deleted when the test ends.
    _directory: Option<tempfile::TempDir>,
    /// The PostgreSQL schema holding the store, dropped once the case has passed (a failed case
    /// leaves it behind to look at).
    schema: Option<TestSchema>,
}

impl Backend {
    /// Releases what the store used once its case has passed.
    async fn finish(self) {
        drop(self.storage);
        if let Some(schema) = self.schema {
            schema.drop_schema().await;
        }
    }
}

/// SQLite as the embedded mode runs it: WAL, `synchronous=FULL`, a new file per test.
async fn sqlite() -> Option<Backend> {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let storage = SqliteStorage::open(&directory.path().join("sigloop.db"), Synchronous::Full)
        .await
        .expect("SQLite storage opens and migrates");
    Some(Backend {
        storage: Box::new(storage),
        _directory: Some(directory),
        schema: None,
    })
}

/// The test database when `SIGLOOP_TEST_POSTGRES_URL` is unset: the local server, trust auth.
const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Connections per test store: enough to overlap a read with a write, few enough that the tests
/// running in parallel stay far below the server's `max_connections`.
const TEST_POOL_SIZE: u32 = 2;

/// Numbers the schemas created by this process.
static SCHEMAS: AtomicU32 = AtomicU32::new(0);

/// A schema of the test database, made for one case.
struct TestSchema {
    options: PgConnectOptions,
    name: String,
}

impl TestSchema {
    /// A new, empty schema in the test database.
    async fn create() -> TestSchema {
        let url = std::env::var("SIGLOOP_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_owned());
        let options = PgConnectOptions::from_str(&url).unwrap_or_else(|error| {
            panic!("SIGLOOP_TEST_POSTGRES_URL is not a PostgreSQL URL: {error}")
        });
        // Named after the host and database, never the whole URL: it may hold a password.
        let server = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("(default database)")
        );
        let mut connection = PgConnection::connect_with(&options)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "the PostgreSQL conformance cases need a server at {server} ({error}); start one \
                     (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) or set \
                     SIGLOOP_TEST_POSTGRES_URL to a database the tests may create schemas in"
                )
            });
        let name = format!(
            "t_{}_{}_{:08x}",
            std::process::id(),
            SCHEMAS.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("cannot create schema {name} at {server}: {error}"));
        connection.close().await.ok();
        TestSchema { options, name }
    }

    /// Options whose connections work in this schema.
    fn connect_options(&self) -> PgConnectOptions {
        self.options
            .clone()
            .options([("search_path", self.name.as_str())])
    }

    async fn drop_schema(self) {
        let mut connection = PgConnection::connect_with(&self.options)
            .await
            .expect("PostgreSQL is still reachable");
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&mut connection)
            .await
            .expect("the test schema drops");
        connection.close().await.ok();
    }
}

/// PostgreSQL as the distributed mode runs it, in a new schema of the test database: the store's
/// connections set `search_path` to it, so the migrations create every table there and each case
/// starts empty, with no server-wide state shared between cases running in parallel.
async fn postgres() -> Option<Backend> {
    let schema = TestSchema::create().await;
    let storage = PostgresStorage::connect_with(schema.connect_options(), TEST_POOL_SIZE)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "PostgreSQL storage connects and migrates in {}: {error}",
                schema.name
            )
        });
    Some(Backend {
        storage: Box::new(storage),
        _directory: None,
        schema: Some(schema),
    })
}

macro_rules! conformance_suite {
    ($backend:ident) => {
        conformance_suite!(@cases $backend:
            append_assigns_increasing_sequence_numbers_and_read_log_returns_entries_after_an_offset_in_order_up_to_a_limit,
            an_id_already_in_the_log_or_repeated_within_one_append_is_a_duplicate_and_stored_once,
            the_same_id_from_another_source_is_not_a_duplicate,
            log_head_is_the_largest_sequence_number_and_zero_for_an_empty_log,
            dead_letters_appended_with_entries_are_stored_in_the_same_call_and_listed_newest_first_with_paging,
            a_dead_letter_payload_is_cut_to_the_maximum_size_on_a_character_boundary,
            free_text_with_a_nul_character_is_stored_rather_than_failing_the_call,
            the_state_of_an_empty_store_is_the_default_state,
            commit_batch_then_load_state_round_trips_offset_clock_accounts_loops_windows_and_cursors,
            a_later_batch_that_updates_a_loop_replaces_its_row_everywhere_it_is_read,
            a_batch_that_fails_to_commit_changes_nothing,
            loop_detail_returns_the_record_trace_history_and_evidence_in_order,
            loop_detail_and_loop_record_of_an_unknown_id_are_none,
            export_returns_every_loop_sorted_by_key_then_generation_with_its_history_and_evidence,
            links_read_back_from_both_sides_in_link_order_with_the_linked_loops_current_state,
            a_trace_journey_stored_compact_reads_back_in_the_object_form,
            list_loops_filters_by_queue_state_kind_and_account,
            list_loops_tag_filter_matches_the_tag_and_its_dotted_descendants_only,
            list_loops_tag_filter_treats_like_wildcards_as_plain_characters,
            list_loops_tag_filter_is_case_sensitive_like_tag_ids,
            list_loops_pages_newest_first_with_before_and_next,
            queues_count_loops_by_queue_and_state_with_breached_and_the_oldest_active_loop,
            queues_of_an_empty_store_is_empty,
            loop_timings_read_the_kpi_fields_of_every_loop_opened_from_the_start_inclusive_to_the_end_exclusive,
            account_view_returns_the_profile_non_closed_loops_and_recent_signals_newest_first,
            account_view_of_an_unknown_account_is_empty,
            purge_deletes_only_processed_log_entries_received_before_the_cutoff_and_old_dead_letters,
            purge_before_any_batch_is_committed_keeps_every_log_entry,
            sequence_numbers_are_not_reused_after_a_purge,
            a_failed_entry_in_a_batch_becomes_a_dead_letter_from_the_processor,
            ping_succeeds_on_a_healthy_store,
            journey_figures_add_up_over_batches_whatever_the_backend_folds_between_them,
            journey_figures_keep_each_of_the_ten_columns_apart_before_and_after_a_fold,
            journey_accounts_are_counted_once_however_often_a_pair_is_written,
            journey_snapshot_returns_summed_rows_from_the_lookback_and_purge_removes_old_journey_rows,
            journey_fleet_merges_the_judged_windows_by_stage_and_tag_with_exact_accounts_markers_and_current_journey_loops,
            source_offsets_round_trip_through_commit_batch_and_move_from_the_stored_offset,
            seen_events_answers_which_ids_a_committed_batch_stored_and_purge_forgets_old_ones,
            a_stale_offset_advance_is_fenced_and_writes_nothing_of_its_batch,
            an_advance_from_no_offset_is_fenced_when_the_partition_already_has_one,
            outbox_events_come_back_in_commit_order_after_an_id_up_to_a_limit,
            claim_outbox_leases_a_sink_to_one_holder_until_the_lease_runs_out,
            advance_outbox_by_a_holder_without_the_lease_is_fenced_and_moves_nothing,
            purge_removes_only_outbox_events_older_than_the_cutoff_that_every_sink_has_delivered,
            list_loops_queue_set_keeps_only_loops_on_those_queues_and_an_empty_set_keeps_none,
            a_token_is_stored_by_the_hash_of_its_secret_and_found_by_that_hash_only,
            tokens_are_listed_oldest_first_with_revoked_and_expired_ones,
            revoking_a_token_keeps_its_first_revocation_time_and_an_unknown_id_is_none,
            a_second_token_with_the_same_id_or_secret_hash_is_refused,
        );
    };
    (@cases $backend:ident: $($case:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(backend) = super::$backend().await else {
                        eprintln!("{} is not configured here; nothing to check", stringify!($backend));
                        return;
                    };
                    super::$case(backend.storage.as_ref()).await;
                    backend.finish().await;
                }
            )+
        }
    };
}

conformance_suite!(sqlite);
conformance_suite!(postgres);

// ---------------------------------------------------------------------------------------------
// Builders for the values the cases store.
// ---------------------------------------------------------------------------------------------

const RECEIVED_AT: Millis = 1_000;

fn event(source: &str, id: &str) -> AppendEntry {
    AppendEntry {
        kind: EntryKind::Event,
        source: source.to_owned(),
        id: id.to_owned(),
        event_type: "support.ticket.created".to_owned(),
        event_time: 500,
        payload: json!({"source": source, "id": id}).to_string(),
    }
}

fn action(id: &str) -> AppendEntry {
    AppendEntry {
        kind: EntryKind::Action,
        source: "sigloop.api".to_owned(),
        id: id.to_owned(),
        event_type: "sigloop.action".to_owned(),
        event_time: 600,
        payload: json!({"loop_id": "lp_x", "action": "acknowledge"}).to_string(),
    }
}

fn dead_letter(index: i64) -> NewDeadLetter {
    NewDeadLetter {
        origin: "http".to_owned(),
        request_index: Some(index),
        event_source: Some("crm".to_owned()),
        event_id: Some(format!("bad-{index}")),
        code: "missing_field".to_owned(),
        message: format!("event {index} has no `time`"),
        payload: format!("{{\"id\": \"bad-{index}\"}}"),
    }
}

fn account(id: &str, tier: &str) -> Account {
    Account {
        account_id: AccountId::parse(id).expect("a valid account id"),
        name: Some(format!("{id} Inc.")),
        tier: Some(tier.to_owned()),
        arr: Some(120_000.0),
        region: Some("emea".to_owned()),
        segment: Some("mid-market".to_owned()),
        csm: Some("alice".to_owned()),
        lifecycle_stage: Some("adoption".to_owned()),
        started_at: Some(100),
    }
}

/// An open account loop on `cs-default`, owned by alice, opened at 1,000.
fn account_loop(account_id: &str, tag: &str, generation: u32) -> LoopRecord {
    let mut record = loop_record(&format!("account:{account_id}:{tag}"), generation, tag);
    record.account_id = Some(account_id.to_owned());
    record
}

/// An open journey loop on `cx-journeys`, owned by bob, opened at 1,000.
fn journey_loop(stage: &str, tag: &str, generation: u32) -> LoopRecord {
    let mut record = loop_record(&format!("journey:{stage}:{tag}"), generation, tag);
    record.kind = SignalKind::Journey;
    record.queue = "cx-journeys".to_owned();
    record.owner = "bob".to_owned();
    record
}

fn loop_record(key: &str, generation: u32, tag: &str) -> LoopRecord {
    LoopRecord {
        id: loop_id(key, generation),
        key: key.to_owned(),
        generation,
        kind: SignalKind::Account,
        account_id: None,
        tag: tag.to_owned(),
        state: LoopState::Open,
        close_reason: None,
        queue: "cs-default".to_owned(),
        owner: "alice".to_owned(),
        priority: 3,
        severity: Severity::Medium,
        sla_policy: Some("standard".to_owned()),
        ack_due: Some(1_000 + 3_600_000),
        resolve_due: Some(1_000 + 86_400_000),
        breached: false,
        opened_at: 1_000,
        updated_at: 1_000,
        acknowledged_at: None,
        resolved_at: None,
        closed_at: None,
        recurrence: 0,
        signal_count: 1,
        first_signal_at: 900,
        last_signal_at: 900,
        predecessor: None,
        watchers: vec!["carol".to_owned()],
        config_version: "cfg-1".to_owned(),
        history_len: 1,
        stage: None,
        journey_loop: None,
        tasks: Vec::new(),
        ack_breached_at: None,
        resolve_breached_at: None,
        verify_due: None,
        verify_confirmed_at: None,
    }
}

fn history(
    record: &LoopRecord,
    seq: u32,
    from_state: Option<LoopState>,
    to_state: LoopState,
) -> HistoryRow {
    HistoryRow {
        loop_id: record.id.clone(),
        seq,
        at: 1_000 + Millis::from(seq) * 10,
        actor: if seq == 0 { "sigloop" } else { "alice" }.to_owned(),
        action: to_state.as_str().to_owned(),
        from_state,
        to_state,
        reason: Some(format!("step {seq}")),
    }
}

fn evidence(record: &LoopRecord, event_id: &str, at: Millis) -> EvidenceRow {
    EvidenceRow {
        loop_id: record.id.clone(),
        at,
        event_time: at - 100,
        event_source: "zendesk".to_owned(),
        event_id: event_id.to_owned(),
        event_type: "support.ticket.created".to_owned(),
        detector: "repeat_tickets".to_owned(),
        severity: Severity::High,
        reason: format!("ticket {event_id}"),
        primary_tag: record.tag.clone(),
        tags: json!([{"tag": record.tag, "rule": "r1", "field": "subject"}]),
        reference: json!({"ticket_id": event_id, "source": "zendesk"}),
        outcome: "join".to_owned(),
        journey: None,
    }
}

fn signal(account_id: &str, time: Millis, event_id: &str) -> SignalRow {
    SignalRow {
        account_id: account_id.to_owned(),
        time,
        detector: "repeat_tickets".to_owned(),
        severity: Severity::High,
        tag: "billing".to_owned(),
        loop_id: "lp_any".to_owned(),
        event_source: "zendesk".to_owned(),
        event_id: event_id.to_owned(),
        reason: "three tickets in seven days".to_owned(),
        stage: "onboarding".to_owned(),
    }
}

/// A batch that commits `offset` and `loops` and nothing else.
fn batch_with_loops(offset: i64, loops: impl IntoIterator<Item = LoopRecord>) -> BatchEffects {
    BatchEffects {
        offset,
        clock: 10_000 + offset,
        loops: loops
            .into_iter()
            .map(|record| (record.id.clone(), record))
            .collect(),
        ..BatchEffects::default()
    }
}

/// Commits each loop in its own batch, so that they are created in the order given.
async fn commit_one_by_one(storage: &dyn Storage, loops: &[LoopRecord]) {
    for (index, record) in loops.iter().enumerate() {
        storage
            .commit_batch(&batch_with_loops(index as i64 + 1, [record.clone()]), 2_000)
            .await
            .expect("the batch commits");
    }
}

fn ids(loops: &[LoopRecord]) -> Vec<String> {
    loops.iter().map(|record| record.id.clone()).collect()
}

fn ids_of<'a>(loops: impl IntoIterator<Item = &'a LoopRecord>) -> Vec<String> {
    loops.into_iter().map(|record| record.id.clone()).collect()
}

async fn listed(storage: &dyn Storage, filter: LoopFilter) -> Vec<String> {
    let page = storage
        .list_loops(&LoopFilter {
            limit: 100,
            ..filter
        })
        .await
        .expect("list_loops answers");
    assert_eq!(page.next, None, "everything fits in one page of 100");
    ids(&page.loops)
}

async fn read_everything(storage: &dyn Storage) -> Vec<LogEntry> {
    storage.read_log(0, 1_000).await.expect("read_log answers")
}

// ---------------------------------------------------------------------------------------------
// The event log.
// ---------------------------------------------------------------------------------------------

async fn append_assigns_increasing_sequence_numbers_and_read_log_returns_entries_after_an_offset_in_order_up_to_a_limit(
    storage: &dyn Storage,
) {
    let first = [
        event("zendesk", "t-1"),
        event("zendesk", "t-2"),
        action("a-1"),
    ];
    let second = [event("survey", "s-1"), event("crm", "c-1")];
    let first_outcome = storage.append(&first, &[], RECEIVED_AT).await.unwrap();
    let second_outcome = storage.append(&second, &[], RECEIVED_AT + 1).await.unwrap();

    let seqs: Vec<i64> = first_outcome
        .seqs
        .iter()
        .chain(&second_outcome.seqs)
        .map(|seq| seq.expect("a new entry gets a sequence number"))
        .collect();
    assert_eq!(seqs.len(), 5);
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "sequence numbers increase in append order: {seqs:?}"
    );
    assert!(
        seqs[0] > 0,
        "sequence numbers start above 0, the empty offset"
    );

    let appended: Vec<&AppendEntry> = first.iter().chain(&second).collect();
    let everything = read_everything(storage).await;
    let expected: Vec<LogEntry> = appended
        .iter()
        .zip(&seqs)
        .map(|(entry, seq)| LogEntry {
            seq: *seq,
            kind: entry.kind,
            source: entry.source.clone(),
            id: entry.id.clone(),
            payload: entry.payload.clone(),
        })
        .collect();
    assert_eq!(
        everything, expected,
        "the log keeps kind, source, id and payload"
    );

    let after_second = storage.read_log(seqs[1], 2).await.unwrap();
    assert_eq!(
        after_second,
        expected[2..4],
        "entries after the offset, at most the limit"
    );
    let tail = storage.read_log(seqs[3], 10).await.unwrap();
    assert_eq!(
        tail,
        expected[4..],
        "a limit beyond the end returns what is left"
    );
    assert!(storage.read_log(seqs[4], 10).await.unwrap().is_empty());
    assert!(
        storage.read_log(0, 0).await.unwrap().is_empty(),
        "a zero limit returns nothing"
    );
}

async fn an_id_already_in_the_log_or_repeated_within_one_append_is_a_duplicate_and_stored_once(
    storage: &dyn Storage,
) {
    let first = storage
        .append(
            &[event("zendesk", "t-1"), event("zendesk", "t-2")],
            &[],
            RECEIVED_AT,
        )
        .await
        .unwrap();
    assert!(first.seqs.iter().all(Option::is_some));

    let mut redelivered = event("zendesk", "t-1");
    redelivered.payload = json!({"changed": true}).to_string();
    let second = storage
        .append(
            &[
                redelivered,
                event("zendesk", "t-3"),
                event("zendesk", "t-3"),
                event("zendesk", "t-2"),
            ],
            &[],
            RECEIVED_AT + 1,
        )
        .await
        .unwrap();
    assert_eq!(second.seqs.len(), 4, "one outcome per offered entry");
    assert_eq!(second.seqs[0], None, "t-1 was already in the log");
    let t3 = second.seqs[1].expect("t-3 is new");
    assert_eq!(
        second.seqs[2], None,
        "the second t-3 repeats the first within the call"
    );
    assert_eq!(second.seqs[3], None, "t-2 was already in the log");

    let log = read_everything(storage).await;
    let stored: Vec<(&str, i64)> = log
        .iter()
        .map(|entry| (entry.id.as_str(), entry.seq))
        .collect();
    assert_eq!(
        stored,
        [
            ("t-1", first.seqs[0].unwrap()),
            ("t-2", first.seqs[1].unwrap()),
            ("t-3", t3)
        ],
        "each (source, id) is stored once"
    );
    assert_eq!(
        log[0].payload,
        event("zendesk", "t-1").payload,
        "a duplicate does not overwrite the stored entry"
    );

    let only_duplicates = storage
        .append(&[event("zendesk", "t-3")], &[], RECEIVED_AT + 2)
        .await
        .unwrap();
    assert_eq!(only_duplicates.seqs, [None]);
    assert_eq!(
        storage.log_head().await.unwrap(),
        t3,
        "duplicates do not move the head"
    );
}

async fn the_same_id_from_another_source_is_not_a_duplicate(storage: &dyn Storage) {
    let outcome = storage
        .append(
            &[event("zendesk", "42"), event("survey", "42")],
            &[],
            RECEIVED_AT,
        )
        .await
        .unwrap();
    assert!(
        outcome.seqs.iter().all(Option::is_some),
        "{:?}",
        outcome.seqs
    );
    assert_eq!(read_everything(storage).await.len(), 2);
}

async fn log_head_is_the_largest_sequence_number_and_zero_for_an_empty_log(storage: &dyn Storage) {
    assert_eq!(storage.log_head().await.unwrap(), 0);
    let outcome = storage
        .append(
            &[event("zendesk", "t-1"), event("zendesk", "t-2")],
            &[],
            RECEIVED_AT,
        )
        .await
        .unwrap();
    assert_eq!(storage.log_head().await.unwrap(), outcome.seqs[1].unwrap());
    let outcome = storage
        .append(&[action("a-1")], &[], RECEIVED_AT)
        .await
        .unwrap();
    assert_eq!(storage.log_head().await.unwrap(), outcome.seqs[0].unwrap());
}

// ---------------------------------------------------------------------------------------------
// Dead letters.
// ---------------------------------------------------------------------------------------------

async fn dead_letters_appended_with_entries_are_stored_in_the_same_call_and_listed_newest_first_with_paging(
    storage: &dyn Storage,
) {
    assert!(storage.dead_letters(10, None).await.unwrap().is_empty());
    let outcome = storage
        .append(
            &[event("zendesk", "t-1")],
            &[dead_letter(0), dead_letter(1)],
            RECEIVED_AT,
        )
        .await
        .unwrap();
    assert!(outcome.seqs[0].is_some());
    assert_eq!(read_everything(storage).await.len(), 1);
    let stored = storage.dead_letters(10, None).await.unwrap();
    assert_eq!(
        stored.len(),
        2,
        "both dead letters are stored by the same call"
    );

    // Dead letters alone, with no entries, are a valid append too.
    let outcome = storage
        .append(
            &[],
            &[dead_letter(2), dead_letter(3), dead_letter(4)],
            RECEIVED_AT + 5,
        )
        .await
        .unwrap();
    assert!(outcome.seqs.is_empty());

    let first_page = storage.dead_letters(2, None).await.unwrap();
    let second_page = storage
        .dead_letters(2, Some(first_page.last().unwrap().id))
        .await
        .unwrap();
    let third_page = storage
        .dead_letters(2, Some(second_page.last().unwrap().id))
        .await
        .unwrap();
    let last_id = third_page.last().unwrap().id;
    assert!(storage
        .dead_letters(2, Some(last_id))
        .await
        .unwrap()
        .is_empty());

    let pages: Vec<Vec<Option<String>>> = [&first_page, &second_page, &third_page]
        .iter()
        .map(|page| {
            page.iter()
                .map(|row| row.dead_letter.event_id.clone())
                .collect()
        })
        .collect();
    let names = |names: &[&str]| -> Vec<Option<String>> {
        names.iter().map(|name| Some((*name).to_owned())).collect()
    };
    assert_eq!(
        pages,
        [
            names(&["bad-4", "bad-3"]),
            names(&["bad-2", "bad-1"]),
            names(&["bad-0"])
        ],
        "newest first, each page continuing below the last id of the one before"
    );
    let all: Vec<_> = first_page
        .iter()
        .chain(&second_page)
        .chain(&third_page)
        .collect();
    assert!(all.windows(2).all(|pair| pair[0].id > pair[1].id));

    let newest = &first_page[0];
    let expected = dead_letter(4);
    assert_eq!(newest.received_at, RECEIVED_AT + 5);
    assert_eq!(newest.dead_letter.origin, expected.origin);
    assert_eq!(newest.dead_letter.request_index, expected.request_index);
    assert_eq!(newest.dead_letter.event_source, expected.event_source);
    assert_eq!(newest.dead_letter.event_id, expected.event_id);
    assert_eq!(newest.dead_letter.code, expected.code);
    assert_eq!(newest.dead_letter.message, expected.message);
    assert_eq!(newest.dead_letter.payload, expected.payload);

    let unknown = NewDeadLetter {
        origin: "file".to_owned(),
        request_index: None,
        event_source: None,
        event_id: None,
        code: "invalid_json".to_owned(),
        message: "line 3 is not JSON".to_owned(),
        payload: "{not json".to_owned(),
    };
    storage
        .append(&[], &[unknown], RECEIVED_AT + 6)
        .await
        .unwrap();
    let newest = &storage.dead_letters(1, None).await.unwrap()[0];
    assert_eq!(newest.dead_letter.origin, "file");
    assert_eq!(newest.dead_letter.request_index, None);
    assert_eq!(newest.dead_letter.event_source, None);
    assert_eq!(newest.dead_letter.event_id, None);
}

async fn a_dead_letter_payload_is_cut_to_the_maximum_size_on_a_character_boundary(
    storage: &dyn Storage,
) {
    // "é" is two bytes and straddles the limit, so the cut falls one byte short of it.
    let mut oversized = dead_letter(0);
    oversized.code = "too_large".to_owned();
    oversized.payload = format!(
        "{}é{}",
        "a".repeat(MAX_DEAD_LETTER_PAYLOAD - 1),
        "b".repeat(100)
    );
    storage
        .append(&[], &[oversized], RECEIVED_AT)
        .await
        .unwrap();
    let stored = &storage.dead_letters(1, None).await.unwrap()[0];
    assert_eq!(
        stored.dead_letter.payload.len(),
        MAX_DEAD_LETTER_PAYLOAD - 1
    );
    assert!(stored.dead_letter.payload.bytes().all(|byte| byte == b'a'));
}

async fn free_text_with_a_nul_character_is_stored_rather_than_failing_the_call(
    storage: &dyn Storage,
) {
    // Raw rejected input and operator notes may hold U+0000, which PostgreSQL text cannot: a
    // backend may store a replacement character in its place, but must not refuse the call (the
    // other entries of the request, or the whole batch, would be lost with it).
    let mut raw = dead_letter(0);
    raw.code = "invalid_json".to_owned();
    raw.payload = "{\"id\": \"a\0b\"".to_owned();
    raw.event_id = Some("a\0b".to_owned());
    let outcome = storage
        .append(&[event("zendesk", "t-1")], &[raw], RECEIVED_AT)
        .await
        .unwrap();
    assert!(outcome.seqs[0].is_some());
    let stored = &storage.dead_letters(1, None).await.unwrap()[0];
    assert!(stored.dead_letter.payload.starts_with("{\"id\": \"a"));
    assert!(stored.dead_letter.payload.ends_with("b\""));

    // Journey stages and touchpoints are free text from the events, and end up in keys.
    let record = journey_loop("on\0boarding", "billing", 1);
    let mut noted = history(&record, 0, None, LoopState::Open);
    noted.reason = Some("see \0 attached".to_owned());
    let mut staged = signal("acme", 10, "s-1");
    staged.stage = "on\0boarding".to_owned();
    let effects = BatchEffects {
        history: vec![noted],
        signals: vec![staged],
        journey_buckets: vec![
            delta(
                bucket(0, "on\0boarding", "billing", "e\0mail"),
                2,
                1,
                &["a1"],
            ),
            delta(bucket(0, "onboarding", "billing", "email"), 1, 0, &["a1"]),
        ],
        ..batch_with_loops(1, [record.clone()])
    };
    storage.commit_batch(&effects, 2_000).await.unwrap();
    let detail = storage.loop_detail(&record.id).await.unwrap().unwrap();
    assert_eq!(
        detail.record, record,
        "the record itself keeps every character"
    );
    let reason = detail.history[0].reason.clone().unwrap();
    assert!(
        reason.starts_with("see ") && reason.ends_with(" attached"),
        "{reason:?}"
    );
    assert_eq!(
        storage
            .account_view("acme", 10)
            .await
            .unwrap()
            .recent_signals
            .len(),
        1
    );
    let groups = storage.journeys(&by_stage(Window::Week)).await.unwrap();
    let events: Vec<u64> = groups.iter().map(|group| group.figures.events).collect();
    assert_eq!(events.iter().sum::<u64>(), 3);
    assert_eq!(groups.len(), 2, "the two stages stay apart: {groups:?}");
}

// ---------------------------------------------------------------------------------------------
// Committed state.
// ---------------------------------------------------------------------------------------------

async fn the_state_of_an_empty_store_is_the_default_state(storage: &dyn Storage) {
    let state = storage.load_state().await.unwrap();
    assert_eq!(state.offset, 0);
    assert_eq!(state.clock, 0);
    assert!(state.accounts.is_empty());
    assert!(state.loops.is_empty());
    assert!(state.current.is_empty());
    assert!(state.detectors.repeat_tickets.is_empty());
    assert!(state.router.round_robin.is_empty());
}

async fn commit_batch_then_load_state_round_trips_offset_clock_accounts_loops_windows_and_cursors(
    storage: &dyn Storage,
) {
    let acme = account("acme", "enterprise");
    let globex = account("globex", "smb");
    let billing = account_loop("acme", "billing", 1);
    let mut journey = journey_loop("onboarding", "adoption.setup", 1);
    journey.state = LoopState::Verifying;
    journey.breached = true;
    journey.resolved_at = Some(1_500);
    let repeat_key = (AccountId::parse("acme").unwrap(), "billing".to_owned());
    let first = BatchEffects {
        offset: 5,
        clock: 1_234,
        accounts: [&acme, &globex]
            .into_iter()
            .map(|account| (account.account_id.clone(), account.clone()))
            .collect(),
        loops: [&billing, &journey]
            .into_iter()
            .map(|record| (record.id.clone(), record.clone()))
            .collect(),
        repeat_windows: [(repeat_key.clone(), vec![100, 200, 300])].into(),
        round_robin: [("cs-team".to_owned(), 3)].into(),
        ..BatchEffects::default()
    };
    storage.commit_batch(&first, 2_000).await.unwrap();

    let state = storage.load_state().await.unwrap();
    assert_eq!(state.offset, 5);
    assert_eq!(state.clock, 1_234);
    assert_eq!(
        state.accounts,
        HashMap::from([
            (acme.account_id.clone(), acme.clone()),
            (globex.account_id.clone(), globex.clone())
        ])
    );
    assert_eq!(
        state.loops,
        HashMap::from([
            (billing.id.clone(), billing.clone()),
            (journey.id.clone(), journey.clone())
        ]),
        "loop records come back field for field"
    );
    assert_eq!(
        state.current,
        HashMap::from([
            (billing.key.clone(), billing.id.clone()),
            (journey.key.clone(), journey.id.clone())
        ])
    );
    assert_eq!(
        state.detectors.repeat_tickets,
        HashMap::from([(repeat_key.clone(), vec![100, 200, 300])])
    );
    assert_eq!(
        state.router.round_robin,
        BTreeMap::from([("cs-team".to_owned(), 3)])
    );

    // The next batch changes an account, a window and a cursor, adds a team's cursor and opens the
    // next generation of the billing key; what it leaves out stays as it was.
    let mut acme_upgraded = acme.clone();
    acme_upgraded.tier = Some("strategic".to_owned());
    acme_upgraded.csm = None;
    let mut billing_closed = billing.clone();
    billing_closed.state = LoopState::Closed;
    billing_closed.close_reason = Some(CloseReason::WontFix);
    billing_closed.closed_at = Some(3_000);
    billing_closed.updated_at = 3_000;
    let mut billing_next = account_loop("acme", "billing", 2);
    billing_next.predecessor = Some(billing.id.clone());
    billing_next.opened_at = 3_100;
    let second = BatchEffects {
        offset: 9,
        clock: 3_100,
        accounts: [(acme_upgraded.account_id.clone(), acme_upgraded.clone())].into(),
        loops: [&billing_closed, &billing_next]
            .into_iter()
            .map(|record| (record.id.clone(), record.clone()))
            .collect(),
        repeat_windows: [(repeat_key.clone(), vec![300, 3_000])].into(),
        round_robin: [("cs-team".to_owned(), 4), ("cx-team".to_owned(), 1)].into(),
        ..BatchEffects::default()
    };
    storage.commit_batch(&second, 3_200).await.unwrap();

    let state = storage.load_state().await.unwrap();
    assert_eq!(state.offset, 9);
    assert_eq!(state.clock, 3_100);
    assert_eq!(state.accounts.len(), 2);
    assert_eq!(state.accounts[&acme.account_id], acme_upgraded);
    assert_eq!(state.accounts[&globex.account_id], globex);
    // Only the newest generation of each key comes back: superseded ones stay in storage alone.
    assert_eq!(
        state.loops,
        HashMap::from([
            (billing_next.id.clone(), billing_next.clone()),
            (journey.id.clone(), journey.clone())
        ])
    );
    assert_eq!(
        storage.loop_record(&billing.id).await.unwrap(),
        Some(billing_closed.clone()),
        "the superseded generation is still stored"
    );
    assert_eq!(
        state.current_loop(&billing.key),
        Some(&billing_next),
        "the newest generation is the key's current loop"
    );
    assert_eq!(
        state.detectors.repeat_tickets,
        HashMap::from([(repeat_key, vec![300, 3_000])])
    );
    assert_eq!(
        state.router.round_robin,
        BTreeMap::from([("cs-team".to_owned(), 4), ("cx-team".to_owned(), 1)])
    );
}

async fn a_later_batch_that_updates_a_loop_replaces_its_row_everywhere_it_is_read(
    storage: &dyn Storage,
) {
    let original = account_loop("acme", "billing", 1);
    storage
        .commit_batch(&batch_with_loops(1, [original.clone()]), 2_000)
        .await
        .unwrap();

    let mut escalated = original.clone();
    escalated.state = LoopState::Acknowledged;
    escalated.queue = "cs-escalations".to_owned();
    escalated.owner = "dave".to_owned();
    escalated.priority = 1;
    escalated.breached = true;
    escalated.acknowledged_at = Some(2_500);
    escalated.updated_at = 2_500;
    escalated.history_len = 3;
    storage
        .commit_batch(&batch_with_loops(2, [escalated.clone()]), 2_600)
        .await
        .unwrap();

    let state = storage.load_state().await.unwrap();
    assert_eq!(
        state.loops.len(),
        1,
        "an update replaces the row, it does not add one"
    );
    assert_eq!(state.loops[&original.id], escalated);
    assert_eq!(
        storage.loop_record(&original.id).await.unwrap(),
        Some(escalated.clone())
    );
    let detail = storage.loop_detail(&original.id).await.unwrap().unwrap();
    assert_eq!(detail.record, escalated);
    let exported = storage.export().await.unwrap();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0].record, escalated);

    // The columns that the filters and queue counts read follow the record.
    let by_queue = |queue: &str| LoopFilter {
        queue: Some(queue.to_owned()),
        ..LoopFilter::default()
    };
    assert_eq!(
        listed(storage, by_queue("cs-escalations")).await,
        std::slice::from_ref(&original.id)
    );
    assert!(listed(storage, by_queue("cs-default")).await.is_empty());
    let by_state = |state: LoopState| LoopFilter {
        state: Some(state.as_str().to_owned()),
        ..LoopFilter::default()
    };
    assert_eq!(
        listed(storage, by_state(LoopState::Acknowledged)).await,
        std::slice::from_ref(&original.id)
    );
    assert!(listed(storage, by_state(LoopState::Open)).await.is_empty());
    let queues = storage.queues().await.unwrap();
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].name, "cs-escalations");
    assert_eq!(
        queues[0].counts,
        BTreeMap::from([("acknowledged".to_owned(), 1)])
    );
    assert_eq!(queues[0].breached, 1);
    assert_eq!(
        storage.account_view("acme", 10).await.unwrap().open_loops,
        [escalated]
    );
}

async fn a_batch_that_fails_to_commit_changes_nothing(storage: &dyn Storage) {
    let record = account_loop("acme", "billing", 1);
    let first = BatchEffects {
        history: vec![history(&record, 0, None, LoopState::Open)],
        ..batch_with_loops(3, [record.clone()])
    };
    storage.commit_batch(&first, 2_000).await.unwrap();

    // History rows are append-only and keyed by (loop, seq): writing seq 0 again is refused, which
    // makes this batch fail after its loop, trace and account rows were written inside the
    // transaction. None of them, nor the offset, may survive.
    let mut changed = record.clone();
    changed.state = LoopState::Acknowledged;
    let other = account_loop("globex", "billing", 1);
    let failing = BatchEffects {
        offset: 7,
        clock: 9_999,
        accounts: [(
            AccountId::parse("acme").unwrap(),
            account("acme", "enterprise"),
        )]
        .into(),
        loops: [&changed, &other]
            .into_iter()
            .map(|record| (record.id.clone(), record.clone()))
            .collect(),
        traces: vec![(other.id.clone(), json!({"route": ["x"]}).to_string())],
        history: vec![
            history(&other, 0, None, LoopState::Open),
            history(&record, 0, None, LoopState::Open),
        ],
        evidence: vec![evidence(&other, "t-9", 5_000)],
        signals: vec![signal("globex", 5_000, "t-9")],
        round_robin: [("cs-team".to_owned(), 8)].into(),
        failed: vec![failed_entry(6)],
        outbox: vec![outbox_event(&other.id, "opened", 5_000)],
        source_offsets: vec![advance("sigloop.tickets", 0, None, 40)],
        ..BatchEffects::default()
    };
    let refused = storage.commit_batch(&failing, 6_000).await;
    assert!(
        matches!(refused, Err(StorageError::Database(_))),
        "a repeated history row is refused by the database: {refused:?}"
    );

    let state = storage.load_state().await.unwrap();
    assert_eq!(state.offset, 3);
    assert_eq!(state.clock, first.clock);
    assert!(state.accounts.is_empty());
    assert_eq!(
        state.loops,
        HashMap::from([(record.id.clone(), record.clone())])
    );
    assert!(state.router.round_robin.is_empty());
    assert!(storage.loop_detail(&other.id).await.unwrap().is_none());
    let detail = storage.loop_detail(&record.id).await.unwrap().unwrap();
    assert_eq!(detail.history, first.history);
    assert!(storage.dead_letters(10, None).await.unwrap().is_empty());
    assert!(storage.outbox_after(0, 10).await.unwrap().is_empty());
    assert!(storage.source_offsets().await.unwrap().is_empty());
    assert!(storage
        .account_view("globex", 10)
        .await
        .unwrap()
        .recent_signals
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// Loop detail and export.
// ---------------------------------------------------------------------------------------------

async fn loop_detail_returns_the_record_trace_history_and_evidence_in_order(storage: &dyn Storage) {
    let mut record = account_loop("acme", "billing", 1);
    let other = account_loop("globex", "billing", 1);
    let trace = json!({
        "event": {"source": "zendesk", "id": "t-1"},
        "detector": "repeat_tickets",
        "route_path": ["cs", "enterprise"],
        "owner": {"rule": "csm", "owner": "alice"},
        "config_version": "cfg-1"
    });
    let opening = BatchEffects {
        traces: vec![(record.id.clone(), trace.to_string())],
        history: vec![
            history(&record, 0, None, LoopState::Open),
            history(&other, 0, None, LoopState::Open),
        ],
        evidence: vec![
            evidence(&record, "t-1", 1_000),
            evidence(&other, "t-x", 1_001),
            evidence(&record, "t-2", 1_002),
        ],
        ..batch_with_loops(1, [record.clone(), other.clone()])
    };
    storage.commit_batch(&opening, 1_100).await.unwrap();

    record.state = LoopState::InProgress;
    record.history_len = 3;
    let progress = BatchEffects {
        history: vec![
            history(&record, 1, Some(LoopState::Open), LoopState::Acknowledged),
            history(
                &record,
                2,
                Some(LoopState::Acknowledged),
                LoopState::InProgress,
            ),
        ],
        evidence: vec![evidence(&record, "t-3", 2_000)],
        ..batch_with_loops(2, [record.clone()])
    };
    storage.commit_batch(&progress, 2_100).await.unwrap();

    let detail = storage.loop_detail(&record.id).await.unwrap().unwrap();
    assert_eq!(detail.record, record);
    assert_eq!(detail.trace, Some(trace));
    assert_eq!(
        detail.history,
        [
            opening.history[0].clone(),
            progress.history[0].clone(),
            progress.history[1].clone()
        ],
        "history in order of its sequence numbers, across batches"
    );
    assert_eq!(
        detail.evidence,
        [
            opening.evidence[0].clone(),
            opening.evidence[2].clone(),
            progress.evidence[0].clone()
        ],
        "this loop's evidence only, in the order it was attached"
    );

    let other_detail = storage.loop_detail(&other.id).await.unwrap().unwrap();
    assert_eq!(
        other_detail.trace, None,
        "a loop without a stored trace has none"
    );
    assert_eq!(other_detail.history, [opening.history[1].clone()]);
    assert_eq!(other_detail.evidence, [opening.evidence[1].clone()]);
}

async fn loop_detail_and_loop_record_of_an_unknown_id_are_none(storage: &dyn Storage) {
    let record = account_loop("acme", "billing", 1);
    storage
        .commit_batch(&batch_with_loops(1, [record.clone()]), 1_100)
        .await
        .unwrap();
    assert!(storage.loop_detail("lp_unknown").await.unwrap().is_none());
    assert!(storage.loop_record("lp_unknown").await.unwrap().is_none());
    assert_eq!(storage.loop_record(&record.id).await.unwrap(), Some(record));
}

async fn export_returns_every_loop_sorted_by_key_then_generation_with_its_history_and_evidence(
    storage: &dyn Storage,
) {
    assert!(storage.export().await.unwrap().is_empty());
    // Generations 2 and 10 of one key: the order is numeric, not textual.
    let billing_10 = account_loop("acme", "billing", 10);
    let billing_2 = account_loop("acme", "billing", 2);
    let adoption = account_loop("acme", "adoption", 1);
    let journey = journey_loop("onboarding", "billing", 1);
    let zeta = account_loop("zeta", "billing", 1);
    let committed_in_order = [&journey, &billing_10, &zeta, &adoption, &billing_2];
    for (index, record) in committed_in_order.into_iter().enumerate() {
        let effects = BatchEffects {
            traces: vec![(
                record.id.clone(),
                json!({"key": record.key, "generation": record.generation}).to_string(),
            )],
            history: vec![
                history(record, 0, None, LoopState::Open),
                history(record, 1, Some(LoopState::Open), LoopState::Acknowledged),
            ],
            evidence: vec![
                evidence(record, &format!("{}-a", record.id), 1_000),
                evidence(record, &format!("{}-b", record.id), 1_001),
            ],
            ..batch_with_loops(index as i64 + 1, [(*record).clone()])
        };
        storage.commit_batch(&effects, 2_000).await.unwrap();
    }

    let exported = storage.export().await.unwrap();
    assert_eq!(
        ids_of(exported.iter().map(|detail| &detail.record)),
        ids_of([&adoption, &billing_2, &billing_10, &zeta, &journey]),
        "sorted by key, then by generation"
    );
    for detail in &exported {
        let record = &detail.record;
        assert_eq!(
            detail.trace,
            Some(json!({"key": record.key, "generation": record.generation}))
        );
        assert_eq!(
            detail.history,
            [
                history(record, 0, None, LoopState::Open),
                history(record, 1, Some(LoopState::Open), LoopState::Acknowledged)
            ]
        );
        assert_eq!(
            detail.evidence,
            [
                evidence(record, &format!("{}-a", record.id), 1_000),
                evidence(record, &format!("{}-b", record.id), 1_001)
            ]
        );
    }
}

async fn links_read_back_from_both_sides_in_link_order_with_the_linked_loops_current_state(
    storage: &dyn Storage,
) {
    let journey = journey_loop("onboarding", "billing", 1);
    let acme = account_loop("acme", "billing", 1);
    let zeta = account_loop("zeta", "billing", 1);
    let unlinked = account_loop("globex", "billing", 1);
    let link = |account: &LoopRecord, at: Millis| LinkRow {
        journey_loop: journey.id.clone(),
        account_loop: account.id.clone(),
        at,
    };
    storage
        .commit_batch(
            &BatchEffects {
                links: vec![link(&zeta, 5_000)],
                ..batch_with_loops(1, [journey.clone(), zeta.clone(), unlinked.clone()])
            },
            2_000,
        )
        .await
        .unwrap();
    // A later batch links acme and moves zeta on: the links show zeta's state now.
    let mut zeta_acknowledged = zeta.clone();
    zeta_acknowledged.state = LoopState::Acknowledged;
    storage
        .commit_batch(
            &BatchEffects {
                links: vec![link(&acme, 6_000)],
                ..batch_with_loops(2, [acme.clone(), zeta_acknowledged.clone()])
            },
            3_000,
        )
        .await
        .unwrap();

    let described = |record: &LoopRecord, at: Millis| {
        (
            record.id.clone(),
            record.kind,
            record.account_id.clone(),
            record.state,
            record.queue.clone(),
            at,
        )
    };
    let described_links = |links: &[sigloop::storage::LinkedLoop]| -> Vec<_> {
        links
            .iter()
            .map(|linked| {
                (
                    linked.loop_id.clone(),
                    linked.kind,
                    linked.account_id.clone(),
                    linked.state,
                    linked.queue.clone(),
                    linked.linked_at,
                )
            })
            .collect()
    };
    let expected: HashMap<String, Vec<_>> = HashMap::from([
        (
            journey.id.clone(),
            vec![
                described(&zeta_acknowledged, 5_000),
                described(&acme, 6_000),
            ],
        ),
        (acme.id.clone(), vec![described(&journey, 6_000)]),
        (zeta.id.clone(), vec![described(&journey, 5_000)]),
        (unlinked.id.clone(), vec![]),
    ]);
    for (id, links) in &expected {
        let detail = storage.loop_detail(id).await.unwrap().expect("stored");
        assert_eq!(
            &described_links(&detail.links),
            links,
            "loop_detail of {id}"
        );
    }
    let exported = storage.export().await.unwrap();
    assert_eq!(exported.len(), 4);
    for detail in &exported {
        assert_eq!(
            described_links(&detail.links),
            expected[&detail.record.id],
            "export of {}",
            detail.record.id
        );
    }
}

async fn a_trace_journey_stored_compact_reads_back_in_the_object_form(storage: &dyn Storage) {
    let record = account_loop("acme", "billing", 1);
    let older = account_loop("acme", "adoption", 1);
    let object = json!({
        "stage": "onboarding",
        "stage_from": "account",
        "tag": "billing",
        "touchpoint": "email",
        "windows": [
            {"window": "day", "start": "2026-03-04T00:00:00.000Z"},
            {"window": "week", "start": "2026-03-02T00:00:00.000Z"},
        ],
    });
    let effects = BatchEffects {
        traces: vec![
            (
                record.id.clone(),
                json!({
                    "detector": "negative-ticket",
                    "journey": [
                        "onboarding",
                        "account",
                        "billing",
                        "email",
                        [["day", 1_772_582_400_000_i64], ["week", 1_772_409_600_000_i64]],
                    ],
                })
                .to_string(),
            ),
            // As traces were stored before the compact form.
            (
                older.id.clone(),
                json!({"detector": "negative-ticket", "journey": object}).to_string(),
            ),
        ],
        ..batch_with_loops(1, [record.clone(), older.clone()])
    };
    storage.commit_batch(&effects, 2_000).await.unwrap();
    let expected = json!({"detector": "negative-ticket", "journey": object});
    for id in [&record.id, &older.id] {
        let detail = storage.loop_detail(id).await.unwrap().expect("stored");
        assert_eq!(
            detail.trace.as_ref(),
            Some(&expected),
            "loop_detail of {id}"
        );
    }
    for detail in storage.export().await.unwrap() {
        assert_eq!(detail.trace, Some(expected.clone()), "export");
    }
}

// ---------------------------------------------------------------------------------------------
// Listing loops.
// ---------------------------------------------------------------------------------------------

/// Five loops, created in this order (each in its own batch):
/// 0 acme billing (cs-a, open), 1 acme billing.invoice-error (cs-a, acknowledged),
/// 2 globex billingx (cs-b, open), 3 journey onboarding billing.invoice-error (cx-journeys, open),
/// 4 globex shipping.late (cs-b, closed).
async fn five_loops(storage: &dyn Storage) -> Vec<LoopRecord> {
    let mut acme_billing = account_loop("acme", "billing", 1);
    acme_billing.queue = "cs-a".to_owned();
    let mut acme_invoice = account_loop("acme", "billing.invoice-error", 1);
    acme_invoice.queue = "cs-a".to_owned();
    acme_invoice.state = LoopState::Acknowledged;
    let mut globex_billingx = account_loop("globex", "billingx", 1);
    globex_billingx.queue = "cs-b".to_owned();
    let journey = journey_loop("onboarding", "billing.invoice-error", 1);
    let mut globex_shipping = account_loop("globex", "shipping.late", 1);
    globex_shipping.queue = "cs-b".to_owned();
    globex_shipping.state = LoopState::Closed;
    globex_shipping.close_reason = Some(CloseReason::Verified);
    let loops = vec![
        acme_billing,
        acme_invoice,
        globex_billingx,
        journey,
        globex_shipping,
    ];
    commit_one_by_one(storage, &loops).await;
    loops
}

async fn list_loops_filters_by_queue_state_kind_and_account(storage: &dyn Storage) {
    let loops = five_loops(storage).await;
    let pick = |indexes: &[usize]| -> Vec<String> {
        indexes
            .iter()
            .map(|index| loops[*index].id.clone())
            .collect()
    };
    let text = |value: &str| Some(value.to_owned());

    assert_eq!(
        listed(storage, LoopFilter::default()).await,
        pick(&[4, 3, 2, 1, 0])
    );
    let queue = |name: &str| LoopFilter {
        queue: text(name),
        ..LoopFilter::default()
    };
    assert_eq!(listed(storage, queue("cs-a")).await, pick(&[1, 0]));
    assert_eq!(listed(storage, queue("cs-b")).await, pick(&[4, 2]));
    assert!(
        listed(storage, queue("cs")).await.is_empty(),
        "queues match exactly"
    );
    let state = |name: &str| LoopFilter {
        state: text(name),
        ..LoopFilter::default()
    };
    assert_eq!(listed(storage, state("open")).await, pick(&[3, 2, 0]));
    assert_eq!(listed(storage, state("closed")).await, pick(&[4]));
    assert!(listed(storage, state("verifying")).await.is_empty());
    let kind = |name: &str| LoopFilter {
        kind: text(name),
        ..LoopFilter::default()
    };
    assert_eq!(listed(storage, kind("journey")).await, pick(&[3]));
    assert_eq!(listed(storage, kind("account")).await, pick(&[4, 2, 1, 0]));
    let account_id = |name: &str| LoopFilter {
        account_id: text(name),
        ..LoopFilter::default()
    };
    assert_eq!(listed(storage, account_id("globex")).await, pick(&[4, 2]));
    assert_eq!(listed(storage, account_id("acme")).await, pick(&[1, 0]));
    assert!(listed(storage, account_id("initech")).await.is_empty());

    let combined = LoopFilter {
        queue: text("cs-b"),
        state: text("open"),
        kind: text("account"),
        account_id: text("globex"),
        tag: text("billingx"),
        ..LoopFilter::default()
    };
    assert_eq!(
        listed(storage, combined).await,
        pick(&[2]),
        "filters combine with AND"
    );
}

async fn list_loops_tag_filter_matches_the_tag_and_its_dotted_descendants_only(
    storage: &dyn Storage,
) {
    let loops = five_loops(storage).await;
    let pick = |indexes: &[usize]| -> Vec<String> {
        indexes
            .iter()
            .map(|index| loops[*index].id.clone())
            .collect()
    };
    let tag = |name: &str| LoopFilter {
        tag: Some(name.to_owned()),
        ..LoopFilter::default()
    };
    assert_eq!(
        listed(storage, tag("billing")).await,
        pick(&[3, 1, 0]),
        "billing matches billing and billing.invoice-error, not billingx"
    );
    assert_eq!(
        listed(storage, tag("billing.invoice-error")).await,
        pick(&[3, 1])
    );
    assert_eq!(listed(storage, tag("billingx")).await, pick(&[2]));
    assert_eq!(listed(storage, tag("shipping")).await, pick(&[4]));
    assert!(
        listed(storage, tag("billing.invoice")).await.is_empty(),
        "a prefix must end at a segment boundary"
    );
    assert!(listed(storage, tag("bill")).await.is_empty());
    assert!(
        listed(storage, tag("invoice-error")).await.is_empty(),
        "a suffix is not a prefix"
    );
    let in_queue = LoopFilter {
        queue: Some("cs-a".to_owned()),
        tag: Some("billing.invoice-error".to_owned()),
        ..LoopFilter::default()
    };
    assert_eq!(listed(storage, in_queue).await, pick(&[1]));
}

async fn list_loops_tag_filter_treats_like_wildcards_as_plain_characters(storage: &dyn Storage) {
    five_loops(storage).await;
    for pattern in [
        "%",
        "_illing",
        "billing%",
        "billing_invoice-error",
        "\\",
        "billing\\",
    ] {
        let filter = LoopFilter {
            tag: Some(pattern.to_owned()),
            ..LoopFilter::default()
        };
        assert!(
            listed(storage, filter).await.is_empty(),
            "tag filter {pattern:?} matches only itself and its descendants"
        );
    }
}

async fn list_loops_tag_filter_is_case_sensitive_like_tag_ids(storage: &dyn Storage) {
    // Tag ids are lowercase; a filter in another case names no tag, and must not match the
    // descendants of a tag that it does not match itself.
    let loops = five_loops(storage).await;
    for pattern in ["BILLING", "Billing", "billing.INVOICE-ERROR"] {
        let filter = LoopFilter {
            tag: Some(pattern.to_owned()),
            ..LoopFilter::default()
        };
        let matched_tags: Vec<&str> = listed(storage, filter)
            .await
            .iter()
            .map(|id| {
                let record = loops.iter().find(|record| &record.id == id).unwrap();
                record.tag.as_str()
            })
            .collect();
        assert!(
            matched_tags.is_empty(),
            "tag filter {pattern:?} matches no loop, yet matched loops tagged {matched_tags:?}"
        );
    }
}

async fn list_loops_pages_newest_first_with_before_and_next(storage: &dyn Storage) {
    let loops = five_loops(storage).await;
    let pick = |indexes: &[usize]| -> Vec<String> {
        indexes
            .iter()
            .map(|index| loops[*index].id.clone())
            .collect()
    };
    let page = |limit: u32, before: Option<String>| LoopFilter {
        limit,
        before,
        ..LoopFilter::default()
    };

    let first = storage.list_loops(&page(2, None)).await.unwrap();
    assert_eq!(ids(&first.loops), pick(&[4, 3]));
    assert!(first.next.is_some(), "more loops follow the first page");
    let second = storage
        .list_loops(&page(2, first.next.clone()))
        .await
        .unwrap();
    assert_eq!(ids(&second.loops), pick(&[2, 1]));
    assert!(second.next.is_some());
    let third = storage
        .list_loops(&page(2, second.next.clone()))
        .await
        .unwrap();
    assert_eq!(ids(&third.loops), pick(&[0]));
    assert_eq!(third.next, None, "the last page has no next");
    assert_eq!(
        second.next.as_deref(),
        Some(loops[1].id.as_str()),
        "the cursor is the id of the page's last loop"
    );
    let unknown = storage
        .list_loops(&page(2, Some("lp_00000000000000000000".to_owned())))
        .await
        .unwrap();
    assert!(
        unknown.loops.is_empty(),
        "an unknown cursor gives an empty page"
    );

    let exact = storage.list_loops(&page(5, None)).await.unwrap();
    assert_eq!(ids(&exact.loops), pick(&[4, 3, 2, 1, 0]));
    assert_eq!(
        exact.next, None,
        "a page that holds exactly the rest is the last"
    );

    let filtered = LoopFilter {
        tag: Some("billing".to_owned()),
        ..page(1, None)
    };
    let mut seen = Vec::new();
    let mut filter = filtered;
    loop {
        let result = storage.list_loops(&filter).await.unwrap();
        seen.extend(ids(&result.loops));
        match result.next {
            Some(next) => filter.before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, pick(&[3, 1, 0]), "paging keeps the filter");

    // A loop updated later keeps its place: pages are ordered by creation.
    let mut updated = loops[0].clone();
    updated.state = LoopState::Acknowledged;
    updated.updated_at = 9_000;
    storage
        .commit_batch(&batch_with_loops(10, [updated]), 9_000)
        .await
        .unwrap();
    assert_eq!(
        listed(storage, LoopFilter::default()).await,
        pick(&[4, 3, 2, 1, 0])
    );
}

// ---------------------------------------------------------------------------------------------
// Queues and accounts.
// ---------------------------------------------------------------------------------------------

async fn queues_count_loops_by_queue_and_state_with_breached_and_the_oldest_active_loop(
    storage: &dyn Storage,
) {
    let in_queue = |tag: &str, queue: &str, state: LoopState, opened_at: Millis| {
        let mut record = account_loop("acme", tag, 1);
        record.queue = queue.to_owned();
        record.state = state;
        record.opened_at = opened_at;
        record
    };
    let mut enterprise_open = in_queue("a", "cs-enterprise", LoopState::Open, 300);
    enterprise_open.breached = true;
    let enterprise_acknowledged = in_queue("b", "cs-enterprise", LoopState::Acknowledged, 200);
    let enterprise_open_too = in_queue("c", "cs-enterprise", LoopState::Open, 400);
    // Older than every active loop of the queue, but resolved, verifying or closed: not counted
    // as the oldest open loop.
    let enterprise_resolved = in_queue("d", "cs-enterprise", LoopState::Resolved, 50);
    let enterprise_verifying = in_queue("e", "cs-enterprise", LoopState::Verifying, 40);
    let enterprise_closed = in_queue("f", "cs-enterprise", LoopState::Closed, 10);
    let mut journeys_in_progress = in_queue("g", "cx-journeys", LoopState::InProgress, 600);
    journeys_in_progress.breached = true;
    let mut journeys_reopened = in_queue("h", "cx-journeys", LoopState::Reopened, 500);
    journeys_reopened.breached = true;
    let unowned_closed = in_queue("i", "unowned", LoopState::Closed, 5);
    let all = [
        enterprise_open,
        enterprise_acknowledged,
        enterprise_open_too,
        enterprise_resolved,
        enterprise_verifying,
        enterprise_closed,
        journeys_in_progress,
        journeys_reopened,
        unowned_closed,
    ];
    storage
        .commit_batch(&batch_with_loops(1, all), 2_000)
        .await
        .unwrap();

    let mut queues = storage.queues().await.unwrap();
    queues.sort_by(|left, right| left.name.cmp(&right.name));
    let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs
            .iter()
            .map(|(state, count)| ((*state).to_owned(), *count))
            .collect()
    };
    let names: Vec<&str> = queues.iter().map(|queue| queue.name.as_str()).collect();
    assert_eq!(names, ["cs-enterprise", "cx-journeys", "unowned"]);

    assert_eq!(
        queues[0].counts,
        counts(&[
            ("acknowledged", 1),
            ("closed", 1),
            ("open", 2),
            ("resolved", 1),
            ("verifying", 1)
        ]),
        "states with no loop are absent"
    );
    assert_eq!(queues[0].breached, 1);
    assert_eq!(queues[0].oldest_open_at, Some(200));

    assert_eq!(
        queues[1].counts,
        counts(&[("in_progress", 1), ("reopened", 1)])
    );
    assert_eq!(queues[1].breached, 2);
    assert_eq!(
        queues[1].oldest_open_at,
        Some(500),
        "reopened counts as open"
    );

    assert_eq!(queues[2].counts, counts(&[("closed", 1)]));
    assert_eq!(queues[2].breached, 0);
    assert_eq!(
        queues[2].oldest_open_at, None,
        "a queue with no active loop has no oldest open loop"
    );
}

async fn queues_of_an_empty_store_is_empty(storage: &dyn Storage) {
    assert!(storage.queues().await.unwrap().is_empty());
}

async fn loop_timings_read_the_kpi_fields_of_every_loop_opened_from_the_start_inclusive_to_the_end_exclusive(
    storage: &dyn Storage,
) {
    assert!(storage.loop_timings(None, None).await.unwrap().is_empty());
    // Open, with an SLA policy.
    let mut open = account_loop("acme", "a", 1);
    open.opened_at = 1_000;
    // Acknowledged, closed as verified after a reopen, breached, without an SLA policy.
    let mut verified = journey_loop("onboarding", "b", 1);
    verified.opened_at = 2_000;
    verified.acknowledged_at = Some(2_500);
    verified.state = LoopState::Closed;
    verified.closed_at = Some(4_000);
    verified.close_reason = Some(CloseReason::Verified);
    verified.breached = true;
    verified.sla_policy = None;
    verified.recurrence = 2;
    // The next generation of the first loop's key, closed as a duplicate: every generation counts.
    let mut duplicate = account_loop("acme", "a", 2);
    duplicate.opened_at = 3_000;
    duplicate.state = LoopState::Closed;
    duplicate.closed_at = Some(3_100);
    duplicate.close_reason = Some(CloseReason::Duplicate);
    storage
        .commit_batch(&batch_with_loops(1, [open, verified, duplicate]), 5_000)
        .await
        .unwrap();

    let timing = |queue: &str, opened_at: Millis| LoopTiming {
        queue: queue.to_owned(),
        opened_at,
        acknowledged_at: None,
        closed_at: None,
        close_reason: None,
        breached: false,
        has_sla: true,
        recurrence: 0,
    };
    let expected = vec![
        timing("cs-default", 1_000),
        LoopTiming {
            acknowledged_at: Some(2_500),
            closed_at: Some(4_000),
            close_reason: Some(CloseReason::Verified),
            breached: true,
            has_sla: false,
            recurrence: 2,
            ..timing("cx-journeys", 2_000)
        },
        LoopTiming {
            closed_at: Some(3_100),
            close_reason: Some(CloseReason::Duplicate),
            ..timing("cs-default", 3_000)
        },
    ];
    let read = |from: Option<Millis>, to: Option<Millis>| async move {
        let mut timings = storage.loop_timings(from, to).await.unwrap();
        timings.sort_by_key(|timing| timing.opened_at);
        timings
    };
    assert_eq!(read(None, None).await, expected);
    assert_eq!(read(Some(2_000), None).await, expected[1..]);
    assert_eq!(read(None, Some(2_000)).await, expected[..1]);
    assert_eq!(read(Some(2_000), Some(3_000)).await, expected[1..2]);
    assert_eq!(read(Some(3_001), Some(9_000)).await, []);
}

async fn account_view_returns_the_profile_non_closed_loops_and_recent_signals_newest_first(
    storage: &dyn Storage,
) {
    let acme = account("acme", "enterprise");
    let mut recent_p3 = account_loop("acme", "billing", 1);
    recent_p3.opened_at = 100;
    let mut urgent = account_loop("acme", "outage", 1);
    urgent.priority = 1;
    urgent.state = LoopState::Resolved;
    urgent.opened_at = 200;
    let mut older_p3 = account_loop("acme", "shipping", 1);
    older_p3.opened_at = 50;
    older_p3.state = LoopState::Verifying;
    let mut closed = account_loop("acme", "adoption", 1);
    closed.state = LoopState::Closed;
    closed.close_reason = Some(CloseReason::Duplicate);
    let globex_loop = account_loop("globex", "billing", 1);
    let journey = journey_loop("onboarding", "billing", 1);
    let first = BatchEffects {
        accounts: [(acme.account_id.clone(), acme.clone())].into(),
        signals: vec![
            signal("acme", 10, "s-10"),
            signal("acme", 30, "s-30"),
            signal("globex", 40, "g-40"),
        ],
        ..batch_with_loops(
            1,
            [
                recent_p3.clone(),
                urgent.clone(),
                older_p3.clone(),
                closed,
                globex_loop,
                journey,
            ],
        )
    };
    storage.commit_batch(&first, 2_000).await.unwrap();
    let second = BatchEffects {
        signals: vec![signal("acme", 20, "s-20"), signal("acme", 25, "s-25")],
        ..BatchEffects::default()
    };
    storage.commit_batch(&second, 2_100).await.unwrap();

    let view = storage.account_view("acme", 3).await.unwrap();
    assert_eq!(view.account, Some(acme));
    assert_eq!(
        ids(&view.open_loops),
        ids_of([&urgent, &older_p3, &recent_p3]),
        "every loop of the account that is not closed, most urgent first, then oldest first"
    );
    assert_eq!(
        view.recent_signals,
        [
            signal("acme", 30, "s-30"),
            signal("acme", 25, "s-25"),
            signal("acme", 20, "s-20")
        ],
        "this account's signals, newest event time first, at most the limit"
    );

    let everything = storage.account_view("acme", 100).await.unwrap();
    assert_eq!(everything.recent_signals.len(), 4);

    // An account not yet in the directory still has its loops and signals.
    let globex = storage.account_view("globex", 10).await.unwrap();
    assert_eq!(globex.account, None);
    assert_eq!(globex.open_loops.len(), 1);
    assert_eq!(globex.recent_signals, [signal("globex", 40, "g-40")]);
}

async fn account_view_of_an_unknown_account_is_empty(storage: &dyn Storage) {
    storage
        .commit_batch(
            &batch_with_loops(1, [account_loop("acme", "billing", 1)]),
            2_000,
        )
        .await
        .unwrap();
    let view = storage.account_view("initech", 10).await.unwrap();
    assert_eq!(view.account, None);
    assert!(view.open_loops.is_empty());
    assert!(view.recent_signals.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Retention.
// ---------------------------------------------------------------------------------------------

async fn purge_deletes_only_processed_log_entries_received_before_the_cutoff_and_old_dead_letters(
    storage: &dyn Storage,
) {
    let old = storage
        .append(
            &[event("zendesk", "old-1"), event("zendesk", "old-2")],
            &[dead_letter(0)],
            1_000,
        )
        .await
        .unwrap();
    let old_unprocessed = storage
        .append(&[event("zendesk", "old-3")], &[], 1_000)
        .await
        .unwrap();
    let at_cutoff = storage
        .append(&[event("zendesk", "edge-1")], &[dead_letter(1)], 2_000)
        .await
        .unwrap();
    let recent = storage
        .append(&[event("zendesk", "new-1")], &[dead_letter(2)], 5_000)
        .await
        .unwrap();
    let seq_of = |outcome: &sigloop::storage::AppendOutcome| outcome.seqs[0].unwrap();

    // The processor has committed up to old-2: old-3 is old but not processed yet.
    storage
        .commit_batch(&batch_with_loops(old.seqs[1].unwrap(), []), 6_000)
        .await
        .unwrap();
    let counts = storage.purge(2_000, 0).await.unwrap();
    assert_eq!(
        counts,
        PurgeCounts {
            events: 2,
            dead_letters: 1,
            journey_buckets: 0,
            outbox: 0,
        }
    );
    let remaining: Vec<String> = read_everything(storage)
        .await
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(remaining, ["old-3", "edge-1", "new-1"]);
    let dead: Vec<Option<String>> = storage
        .dead_letters(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.dead_letter.event_id)
        .collect();
    assert_eq!(
        dead,
        [Some("bad-2".to_owned()), Some("bad-1".to_owned())],
        "a dead letter received at the cutoff is kept"
    );

    // Now everything is processed: the old entry goes, the one received at the cutoff and the
    // recent one stay.
    storage
        .commit_batch(&batch_with_loops(seq_of(&recent), []), 6_100)
        .await
        .unwrap();
    let counts = storage.purge(2_000, 0).await.unwrap();
    assert_eq!(
        counts,
        PurgeCounts {
            events: 1,
            dead_letters: 0,
            journey_buckets: 0,
            outbox: 0,
        }
    );
    let remaining: Vec<i64> = read_everything(storage)
        .await
        .into_iter()
        .map(|entry| entry.seq)
        .collect();
    assert_eq!(remaining, [seq_of(&at_cutoff), seq_of(&recent)]);
    assert_ne!(seq_of(&old_unprocessed), seq_of(&at_cutoff));

    assert_eq!(
        storage.purge(2_000, 0).await.unwrap(),
        PurgeCounts::default()
    );
    let counts = storage.purge(5_001, 0).await.unwrap();
    assert_eq!(
        counts,
        PurgeCounts {
            events: 2,
            dead_letters: 2,
            journey_buckets: 0,
            outbox: 0,
        }
    );
    assert!(read_everything(storage).await.is_empty());
    assert!(storage.dead_letters(10, None).await.unwrap().is_empty());
}

async fn purge_before_any_batch_is_committed_keeps_every_log_entry(storage: &dyn Storage) {
    storage
        .append(&[event("zendesk", "t-1")], &[dead_letter(0)], 1_000)
        .await
        .unwrap();
    let counts = storage.purge(10_000, 0).await.unwrap();
    assert_eq!(
        counts,
        PurgeCounts {
            events: 0,
            dead_letters: 1,
            journey_buckets: 0,
            outbox: 0,
        },
        "nothing is processed yet, so no log entry may go"
    );
    assert_eq!(read_everything(storage).await.len(), 1);
}

async fn sequence_numbers_are_not_reused_after_a_purge(storage: &dyn Storage) {
    let outcome = storage
        .append(
            &[event("zendesk", "t-1"), event("zendesk", "t-2")],
            &[],
            1_000,
        )
        .await
        .unwrap();
    let last = outcome.seqs[1].unwrap();
    storage
        .commit_batch(&batch_with_loops(last, []), 2_000)
        .await
        .unwrap();
    assert_eq!(storage.purge(5_000, 0).await.unwrap().events, 2);
    assert!(read_everything(storage).await.is_empty());

    let next = storage
        .append(&[event("zendesk", "t-3")], &[], 6_000)
        .await
        .unwrap()
        .seqs[0]
        .unwrap();
    assert!(
        next > last,
        "a new entry ({next}) comes after the processed offset ({last}), or the processor would skip it"
    );
    assert_eq!(storage.read_log(last, 10).await.unwrap().len(), 1);
    assert_eq!(storage.log_head().await.unwrap(), next);
}

// ---------------------------------------------------------------------------------------------
// Processor failures and health.
// ---------------------------------------------------------------------------------------------

fn failed_entry(seq: i64) -> FailedEntry {
    FailedEntry {
        seq,
        source: "crm".to_owned(),
        id: format!("evt-{seq}"),
        rejection: Rejection {
            code: RejectionCode::InvalidField,
            id: Some(format!("evt-{seq}")),
            message: "`data.tier` is not a string".to_owned(),
        },
        payload: json!({"id": format!("evt-{seq}"), "data": {"tier": 3}}).to_string(),
    }
}

async fn a_failed_entry_in_a_batch_becomes_a_dead_letter_from_the_processor(storage: &dyn Storage) {
    storage.append(&[], &[dead_letter(0)], 1_000).await.unwrap();
    let failed = failed_entry(7);
    let effects = BatchEffects {
        offset: 7,
        clock: 4_000,
        failed: vec![failed.clone()],
        ..BatchEffects::default()
    };
    storage.commit_batch(&effects, 4_242).await.unwrap();

    assert_eq!(storage.load_state().await.unwrap().offset, 7);
    let rows = storage.dead_letters(10, None).await.unwrap();
    assert_eq!(rows.len(), 2);
    let row = &rows[0];
    assert_eq!(row.received_at, 4_242, "received when the batch committed");
    assert_eq!(row.dead_letter.origin, "processor");
    assert_eq!(
        row.dead_letter.request_index,
        Some(7),
        "the entry's position in the log"
    );
    assert_eq!(row.dead_letter.event_source.as_deref(), Some("crm"));
    assert_eq!(row.dead_letter.event_id.as_deref(), Some("evt-7"));
    assert_eq!(row.dead_letter.code, "invalid_field");
    assert_eq!(row.dead_letter.message, failed.rejection.message);
    assert_eq!(row.dead_letter.payload, failed.payload);
}

async fn ping_succeeds_on_a_healthy_store(storage: &dyn Storage) {
    storage.ping().await.expect("ping answers");
}

// ---------------------------------------------------------------------------------------------
// Journey rows.
// ---------------------------------------------------------------------------------------------

/// Monday 2026-11-23 00:00 UTC.
const JOURNEY_MONDAY: Millis = 1_795_392_000_000;

fn bucket(day: i64, stage: &str, tag: &str, touchpoint: &str) -> BucketKey {
    BucketKey {
        start: JOURNEY_MONDAY + day * MILLIS_PER_DAY,
        stage: stage.to_owned(),
        tag: tag.to_owned(),
        touchpoint: touchpoint.to_owned(),
    }
}

fn delta(key: BucketKey, events: u64, promoters: u64, accounts: &[&str]) -> BucketDelta {
    BucketDelta {
        key,
        figures: Figures {
            events,
            nps_responses: promoters,
            promoters,
            ..Figures::default()
        },
        accounts: accounts
            .iter()
            .map(|id| AccountId::parse(id).unwrap())
            .collect(),
    }
}

fn journey_batch(offset: i64, buckets: Vec<BucketDelta>) -> BatchEffects {
    BatchEffects {
        offset,
        clock: 10_000 + offset,
        journey_buckets: buckets,
        ..BatchEffects::default()
    }
}

fn by_stage(window: Window) -> JourneyQuery {
    JourneyQuery {
        window,
        from: None,
        to: None,
        group_by: vec![JourneyDimension::Stage],
        stage: None,
        tag: None,
        touchpoint: None,
    }
}

async fn stage_figures(storage: &dyn Storage, stage: &str) -> (Figures, u64) {
    let groups = storage.journeys(&by_stage(Window::Week)).await.unwrap();
    let group = groups
        .iter()
        .find(|group| group.stage.as_deref() == Some(stage))
        .unwrap_or_else(|| panic!("no group for stage {stage}: {groups:?}"));
    (group.figures, group.accounts)
}

async fn journey_figures_add_up_over_batches_whatever_the_backend_folds_between_them(
    storage: &dyn Storage,
) {
    storage
        .commit_batch(
            &journey_batch(
                1,
                vec![delta(
                    bucket(0, "onboarding", "billing", "email"),
                    3,
                    1,
                    &["a1"],
                )],
            ),
            10,
        )
        .await
        .unwrap();
    // Enough other buckets in one batch to make a backend that batches its writes (SQLite folds
    // its journal past 8,192 deltas) reorganize them: the first batch is folded with this one, the
    // third stays in the journal.
    let many: Vec<BucketDelta> = (0..40_000)
        .map(|index| {
            delta(
                bucket(index % 7, "adoption", &format!("tag-{index}"), "web"),
                1,
                0,
                &[],
            )
        })
        .collect();
    storage
        .commit_batch(&journey_batch(2, many), 20)
        .await
        .unwrap();
    storage
        .commit_batch(
            &journey_batch(
                3,
                vec![delta(
                    bucket(1, "onboarding", "billing", "email"),
                    2,
                    2,
                    &["a2"],
                )],
            ),
            30,
        )
        .await
        .unwrap();
    let (onboarding, accounts) = stage_figures(storage, "onboarding").await;
    assert_eq!(onboarding.events, 5);
    assert_eq!(onboarding.promoters, 3);
    assert_eq!(onboarding.nps_responses, 3);
    assert_eq!(accounts, 2);
    let (adoption, _) = stage_figures(storage, "adoption").await;
    assert_eq!(adoption.events, 40_000);
    // By day, the two onboarding rows stay apart.
    let days = storage
        .journeys(&JourneyQuery {
            group_by: vec![JourneyDimension::Stage, JourneyDimension::Window],
            stage: Some("onboarding".to_owned()),
            ..by_stage(Window::Day)
        })
        .await
        .unwrap();
    let events: Vec<(Option<Millis>, u64)> = days
        .iter()
        .map(|group| (group.window_start, group.figures.events))
        .collect();
    assert_eq!(
        events,
        vec![
            (Some(JOURNEY_MONDAY), 3),
            (Some(JOURNEY_MONDAY + MILLIS_PER_DAY), 2)
        ]
    );
}

async fn journey_figures_keep_each_of_the_ten_columns_apart_before_and_after_a_fold(
    storage: &dyn Storage,
) {
    // Ten different values, so that a column read from another's place shows.
    let every = Figures {
        events: 1,
        tickets: 2,
        nps_responses: 3,
        promoters: 4,
        passives: 5,
        detractors: 6,
        csat_responses: 7,
        csat_sum: 8,
        ces_responses: 9,
        ces_sum: 10,
    };
    let key = bucket(0, "renewal", "pricing", "call");
    storage
        .commit_batch(
            &journey_batch(
                1,
                vec![BucketDelta {
                    key: key.clone(),
                    figures: every,
                    accounts: vec![AccountId::parse("a1").unwrap()],
                }],
            ),
            10,
        )
        .await
        .unwrap();
    assert_eq!(stage_figures(storage, "renewal").await, (every, 1));
    // Enough other buckets to fold whatever a backend has not folded yet (SQLite: 8,192 deltas).
    let many: Vec<BucketDelta> = (0..9_000)
        .map(|index| {
            delta(
                bucket(0, "adoption", &format!("tag-{index}"), "web"),
                1,
                0,
                &[],
            )
        })
        .collect();
    storage
        .commit_batch(&journey_batch(2, many), 20)
        .await
        .unwrap();
    assert_eq!(stage_figures(storage, "renewal").await, (every, 1));
    // And once more on top of the folded row, from the journal again.
    storage
        .commit_batch(
            &journey_batch(
                3,
                vec![BucketDelta {
                    key,
                    figures: every,
                    accounts: vec![AccountId::parse("a2").unwrap()],
                }],
            ),
            30,
        )
        .await
        .unwrap();
    assert_eq!(
        stage_figures(storage, "renewal").await,
        (every.plus(&every), 2)
    );
}

async fn journey_accounts_are_counted_once_however_often_a_pair_is_written(storage: &dyn Storage) {
    let key = bucket(0, "renewal", "pricing", "call");
    storage
        .commit_batch(
            &journey_batch(1, vec![delta(key.clone(), 2, 0, &["a1", "a2"])]),
            10,
        )
        .await
        .unwrap();
    // After a restart the core may write a pair again.
    storage
        .commit_batch(
            &journey_batch(2, vec![delta(key.clone(), 1, 0, &["a1"])]),
            20,
        )
        .await
        .unwrap();
    let (figures, accounts) = stage_figures(storage, "renewal").await;
    assert_eq!(figures.events, 3);
    assert_eq!(accounts, 2);
}

async fn journey_snapshot_returns_summed_rows_from_the_lookback_and_purge_removes_old_journey_rows(
    storage: &dyn Storage,
) {
    for (offset, day) in [(1, 0), (2, 0), (3, 20)] {
        storage
            .commit_batch(
                &journey_batch(
                    offset,
                    vec![delta(
                        bucket(day, "onboarding", "billing", "email"),
                        1,
                        0,
                        &["a1"],
                    )],
                ),
                offset * 10,
            )
            .await
            .unwrap();
    }
    let snapshot = storage.journey_snapshot(30 * MILLIS_PER_DAY).await.unwrap();
    let mut buckets = snapshot.buckets.clone();
    buckets.sort_by_key(|(key, _)| key.start);
    let events: Vec<(Millis, u64)> = buckets
        .iter()
        .map(|(key, figures)| (key.start, figures.events))
        .collect();
    assert_eq!(
        events,
        vec![
            (JOURNEY_MONDAY, 2),
            (JOURNEY_MONDAY + 20 * MILLIS_PER_DAY, 1)
        ]
    );
    let recent = storage.journey_snapshot(5 * MILLIS_PER_DAY).await.unwrap();
    assert_eq!(recent.buckets.len(), 1);
    assert_eq!(recent.accounts.len(), 1);
    let counts = storage
        .purge(0, JOURNEY_MONDAY + 10 * MILLIS_PER_DAY)
        .await
        .unwrap();
    // Day 0's one bucket: SQLite folds its journal before it purges, PostgreSQL merged the two
    // batches' rows as it upserted them.
    assert_eq!(counts.journey_buckets, 1, "{counts:?}");
    let (figures, accounts) = stage_figures(storage, "onboarding").await;
    assert_eq!(figures.events, 1);
    assert_eq!(accounts, 1);
}

async fn journey_fleet_merges_the_judged_windows_by_stage_and_tag_with_exact_accounts_markers_and_current_journey_loops(
    storage: &dyn Storage,
) {
    let fired = |week: i64| FiredRow {
        window: Window::Week,
        start: JOURNEY_MONDAY + week * 7 * MILLIS_PER_DAY,
        stage: "onboarding".to_owned(),
        tag: "billing".to_owned(),
        detector: "affected".to_owned(),
    };
    let mut first = journey_batch(
        1,
        vec![
            // This week: two touchpoints of one stage x tag, three events, two distinct accounts.
            delta(
                bucket(0, "onboarding", "billing", "email"),
                2,
                1,
                &["a1", "a2"],
            ),
            delta(bucket(1, "onboarding", "billing", "chat"), 1, 0, &["a2"]),
            // Last week, and four weeks ago (before the judged weeks and the one before them).
            delta(bucket(-7, "onboarding", "billing", "email"), 1, 0, &["a3"]),
            delta(bucket(-28, "onboarding", "billing", "email"), 5, 0, &["a4"]),
        ],
    );
    first.journey_fired = vec![fired(0), fired(-4)];
    first.loops = [
        journey_loop("onboarding", "billing", 1),
        account_loop("a1", "billing", 1),
    ]
    .into_iter()
    .map(|record| (record.id.clone(), record))
    .collect();
    storage.commit_batch(&first, 10).await.unwrap();
    // Another instance's share of this week, and a new generation of the journey loop.
    let mut second = journey_batch(
        2,
        vec![delta(
            bucket(1, "onboarding", "billing", "email"),
            1,
            0,
            &["a1", "a5"],
        )],
    );
    second.loops = [journey_loop("onboarding", "billing", 2)]
        .into_iter()
        .map(|record| (record.id.clone(), record))
        .collect();
    storage.commit_batch(&second, 20).await.unwrap();

    let fleet = storage
        .journey_fleet(&[Window::Week, Window::Day], 3)
        .await
        .unwrap();
    let group = |window: Window, day: i64, events: u64, promoters: u64, accounts: u64| FleetGroup {
        window,
        start: JOURNEY_MONDAY + day * MILLIS_PER_DAY,
        stage: "onboarding".to_owned(),
        tag: "billing".to_owned(),
        figures: Figures {
            events,
            nps_responses: promoters,
            promoters,
            ..Figures::default()
        },
        accounts,
    };
    let mut groups = fleet.groups.clone();
    groups.sort_by_key(|group| (group.window, group.start));
    let mut expected = vec![
        group(Window::Week, -7, 1, 0, 1),
        group(Window::Week, 0, 4, 1, 3),
        // Days: the newest (day 1) and the three before it.
        group(Window::Day, 0, 2, 1, 2),
        group(Window::Day, 1, 2, 0, 3),
    ];
    expected.sort_by_key(|group| (group.window, group.start));
    assert_eq!(groups, expected);
    assert_eq!(fleet.fired, vec![fired(0)]);
    let journey_loops: Vec<(String, u32)> = fleet
        .journey_loops
        .iter()
        .map(|record| (record.key.clone(), record.generation))
        .collect();
    assert_eq!(
        journey_loops,
        vec![("journey:onboarding:billing".to_owned(), 2)]
    );
}

// ---------------------------------------------------------------------------------------------
// The distributed mode: Kafka offsets and the outbox.
// ---------------------------------------------------------------------------------------------

fn advance(topic: &str, partition: i32, from: Option<i64>, to: i64) -> OffsetAdvance {
    OffsetAdvance {
        topic: topic.to_owned(),
        partition,
        from,
        to,
    }
}

/// A batch that commits `offset` and the offset advances, and nothing else.
fn batch_with_advances(offset: i64, advances: Vec<OffsetAdvance>) -> BatchEffects {
    BatchEffects {
        offset,
        clock: 10_000 + offset,
        source_offsets: advances,
        ..BatchEffects::default()
    }
}

fn stored(topic: &str, partition: i32, next_offset: i64) -> StoredOffset {
    StoredOffset {
        topic: topic.to_owned(),
        partition,
        next_offset,
    }
}

/// The stored offsets, sorted by topic and partition (the trait promises no order).
async fn offsets(storage: &dyn Storage) -> Vec<StoredOffset> {
    let mut offsets = storage.source_offsets().await.unwrap();
    offsets
        .sort_by(|left, right| (&left.topic, left.partition).cmp(&(&right.topic, right.partition)));
    offsets
}

fn outbox_event(loop_id: &str, event: &str, at: Millis) -> OutboxEvent {
    OutboxEvent {
        loop_id: loop_id.to_owned(),
        loop_key: format!("account:acme:{loop_id}"),
        account_id: Some("acme".to_owned()),
        event: event.to_owned(),
        at,
        payload: json!({"loop_id": loop_id, "event": event, "at": at}).to_string(),
    }
}

fn outbox_batch(offset: i64, events: Vec<OutboxEvent>) -> BatchEffects {
    BatchEffects {
        offset,
        clock: 10_000 + offset,
        outbox: events,
        ..BatchEffects::default()
    }
}

/// The ids of every stored outbox event, in order.
async fn outbox_ids(storage: &dyn Storage) -> Vec<i64> {
    storage
        .outbox_after(0, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|row| row.id)
        .collect()
}

fn assert_fenced(result: Result<(), StorageError>, names: &[&str]) {
    match result {
        Err(StorageError::Fenced(message)) => {
            for name in names {
                assert!(
                    message.contains(name),
                    "the fenced error names {name}: {message}"
                );
            }
        }
        other => panic!("expected a fenced error, got {other:?}"),
    }
}

async fn source_offsets_round_trip_through_commit_batch_and_move_from_the_stored_offset(
    storage: &dyn Storage,
) {
    assert!(storage.source_offsets().await.unwrap().is_empty());
    storage
        .commit_batch(
            &batch_with_advances(
                1,
                vec![
                    advance("sigloop.tickets", 1, None, 5),
                    advance("sigloop.tickets", 0, None, 10),
                    advance("sigloop.surveys", 0, None, 3),
                ],
            ),
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(
        offsets(storage).await,
        [
            stored("sigloop.surveys", 0, 3),
            stored("sigloop.tickets", 0, 10),
            stored("sigloop.tickets", 1, 5)
        ]
    );

    // A batch moves the partitions it read from where it found them; the others stay.
    storage
        .commit_batch(
            &batch_with_advances(2, vec![advance("sigloop.tickets", 0, Some(10), 25)]),
            2_000,
        )
        .await
        .unwrap();
    storage
        .commit_batch(
            &batch_with_advances(
                3,
                vec![
                    advance("sigloop.tickets", 0, Some(25), 26),
                    advance("sigloop.surveys", 0, Some(3), 3),
                ],
            ),
            3_000,
        )
        .await
        .unwrap();
    assert_eq!(
        offsets(storage).await,
        [
            stored("sigloop.surveys", 0, 3),
            stored("sigloop.tickets", 0, 26),
            stored("sigloop.tickets", 1, 5)
        ]
    );
    assert_eq!(storage.load_state().await.unwrap().offset, 3);
}

async fn a_stale_offset_advance_is_fenced_and_writes_nothing_of_its_batch(storage: &dyn Storage) {
    storage
        .commit_batch(
            &batch_with_advances(1, vec![advance("sigloop.tickets", 0, None, 10)]),
            1_000,
        )
        .await
        .unwrap();
    // Another instance took the partition over and moved it on from 10 to 12; this one read from 10
    // too, before it lost the partition, and now commits what it read.
    storage
        .commit_batch(
            &batch_with_advances(2, vec![advance("sigloop.tickets", 0, Some(10), 12)]),
            2_000,
        )
        .await
        .unwrap();

    let record = account_loop("acme", "billing", 1);
    let stale = BatchEffects {
        history: vec![history(&record, 0, None, LoopState::Open)],
        outbox: vec![outbox_event(&record.id, "opened", 3_000)],
        source_offsets: vec![
            // A partition this instance still owns, written before the stale one is looked at.
            advance("sigloop.tickets", 1, None, 4),
            advance("sigloop.tickets", 0, Some(10), 11),
        ],
        ..batch_with_loops(3, [record.clone()])
    };
    assert_fenced(
        storage.commit_batch(&stale, 3_000).await,
        &["sigloop.tickets", "0"],
    );

    assert_eq!(
        offsets(storage).await,
        [stored("sigloop.tickets", 0, 12)],
        "no offset moved, not even the partition that was not stale"
    );
    assert!(storage.loop_record(&record.id).await.unwrap().is_none());
    assert!(storage.outbox_after(0, 10).await.unwrap().is_empty());
    let state = storage.load_state().await.unwrap();
    assert_eq!(
        state.offset, 2,
        "the processor's offset is the last committed batch's"
    );
    assert!(state.loops.is_empty());
}

async fn an_advance_from_no_offset_is_fenced_when_the_partition_already_has_one(
    storage: &dyn Storage,
) {
    storage
        .commit_batch(
            &batch_with_advances(1, vec![advance("sigloop.usage", 3, None, 100)]),
            1_000,
        )
        .await
        .unwrap();
    let record = account_loop("acme", "billing", 1);
    let late = BatchEffects {
        outbox: vec![outbox_event(&record.id, "opened", 2_000)],
        source_offsets: vec![advance("sigloop.usage", 3, None, 50)],
        ..batch_with_loops(2, [record.clone()])
    };
    assert_fenced(
        storage.commit_batch(&late, 2_000).await,
        &["sigloop.usage", "3"],
    );
    assert_eq!(offsets(storage).await, [stored("sigloop.usage", 3, 100)]);
    assert!(storage.loop_record(&record.id).await.unwrap().is_none());
    assert!(storage.outbox_after(0, 10).await.unwrap().is_empty());
    assert_eq!(storage.load_state().await.unwrap().offset, 1);
}

async fn outbox_events_come_back_in_commit_order_after_an_id_up_to_a_limit(storage: &dyn Storage) {
    assert!(storage.outbox_after(0, 10).await.unwrap().is_empty());
    let first = vec![
        outbox_event("lp_b", "opened", 900),
        outbox_event("lp_a", "opened", 950),
    ];
    let second = vec![
        outbox_event("lp_a", "state_changed", 1_500),
        outbox_event("lp_c", "opened", 1_400),
        outbox_event("lp_b", "closed", 1_600),
    ];
    storage
        .commit_batch(&outbox_batch(1, first.clone()), 1_000)
        .await
        .unwrap();
    storage
        .commit_batch(&outbox_batch(2, Vec::new()), 1_500)
        .await
        .unwrap();
    storage
        .commit_batch(&outbox_batch(3, second.clone()), 2_000)
        .await
        .unwrap();

    let rows = storage.outbox_after(0, 100).await.unwrap();
    let events: Vec<OutboxEvent> = rows.iter().map(|row| row.event.clone()).collect();
    let expected: Vec<OutboxEvent> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        events, expected,
        "every field, in commit order and in each batch's order"
    );
    let created: Vec<Millis> = rows.iter().map(|row| row.created_at).collect();
    assert_eq!(created, [1_000, 1_000, 2_000, 2_000, 2_000]);
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    assert!(
        ids[0] > 0,
        "ids start above 0, a cursor that delivered nothing"
    );
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");

    let page = storage.outbox_after(ids[1], 2).await.unwrap();
    assert_eq!(page, rows[2..4], "events after the id, at most the limit");
    assert_eq!(storage.outbox_after(ids[3], 10).await.unwrap(), rows[4..]);
    assert!(storage.outbox_after(ids[4], 10).await.unwrap().is_empty());
    assert!(storage.outbox_after(0, 0).await.unwrap().is_empty());
}

async fn claim_outbox_leases_a_sink_to_one_holder_until_the_lease_runs_out(storage: &dyn Storage) {
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-a", 100, 200)
            .await
            .unwrap(),
        Some(0),
        "a sink never claimed has delivered nothing"
    );
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-b", 150, 250)
            .await
            .unwrap(),
        None,
        "node-a's lease runs past 150"
    );
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-a", 190, 300)
            .await
            .unwrap(),
        Some(0),
        "the holder renews its own lease"
    );
    storage.advance_outbox("kafka", "node-a", 7).await.unwrap();
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-b", 299, 400)
            .await
            .unwrap(),
        None,
        "the renewed lease runs to 300"
    );
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-b", 300, 400)
            .await
            .unwrap(),
        Some(7),
        "a lease that has run out goes to the next claimant, with the sink's cursor"
    );
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-a", 350, 450)
            .await
            .unwrap(),
        None,
        "the former holder is now refused"
    );
    assert_eq!(
        storage
            .claim_outbox("webhook:cs-ops", "node-a", 350, 450)
            .await
            .unwrap(),
        Some(0),
        "each sink has its own lease and cursor"
    );
}

async fn advance_outbox_by_a_holder_without_the_lease_is_fenced_and_moves_nothing(
    storage: &dyn Storage,
) {
    assert_fenced(
        storage.advance_outbox("kafka", "node-a", 3).await,
        &["kafka", "node-a"],
    );
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-a", 100, 200)
            .await
            .unwrap(),
        Some(0),
        "the refused advance stored no cursor"
    );
    storage.advance_outbox("kafka", "node-a", 5).await.unwrap();
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-b", 200, 300)
            .await
            .unwrap(),
        Some(5)
    );
    assert_fenced(
        storage.advance_outbox("kafka", "node-a", 9).await,
        &["kafka", "node-a"],
    );
    storage.advance_outbox("kafka", "node-b", 6).await.unwrap();
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-b", 250, 350)
            .await
            .unwrap(),
        Some(6),
        "node-a's late advance changed nothing"
    );
}

async fn purge_removes_only_outbox_events_older_than_the_cutoff_that_every_sink_has_delivered(
    storage: &dyn Storage,
) {
    // With no sink at all nobody relays the outbox: age alone decides.
    storage
        .commit_batch(
            &outbox_batch(1, vec![outbox_event("lp_0", "opened", 400)]),
            500,
        )
        .await
        .unwrap();
    let counts = storage.purge(600, 0).await.unwrap();
    assert_eq!(
        counts,
        PurgeCounts {
            outbox: 1,
            ..PurgeCounts::default()
        }
    );
    assert!(storage.outbox_after(0, 10).await.unwrap().is_empty());

    storage
        .commit_batch(
            &outbox_batch(
                2,
                vec![
                    outbox_event("lp_1", "opened", 900),
                    outbox_event("lp_2", "opened", 900),
                    outbox_event("lp_3", "opened", 900),
                ],
            ),
            1_000,
        )
        .await
        .unwrap();
    storage
        .commit_batch(
            &outbox_batch(3, vec![outbox_event("lp_4", "opened", 4_900)]),
            5_000,
        )
        .await
        .unwrap();
    let ids = outbox_ids(storage).await;
    assert_eq!(ids.len(), 4);
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-a", 0, 10_000)
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        storage
            .claim_outbox("webhook:cs-ops", "node-a", 0, 10_000)
            .await
            .unwrap(),
        Some(0)
    );
    storage
        .advance_outbox("kafka", "node-a", ids[0])
        .await
        .unwrap();
    storage
        .advance_outbox("webhook:cs-ops", "node-a", ids[1])
        .await
        .unwrap();

    assert_eq!(
        storage.purge(2_000, 0).await.unwrap().outbox,
        1,
        "only the first event is delivered by both sinks"
    );
    assert_eq!(outbox_ids(storage).await, ids[1..]);

    storage
        .advance_outbox("kafka", "node-a", ids[3])
        .await
        .unwrap();
    storage
        .advance_outbox("webhook:cs-ops", "node-a", ids[3])
        .await
        .unwrap();
    assert_eq!(
        storage.purge(5_000, 0).await.unwrap().outbox,
        2,
        "every event is delivered; the one created at the cutoff stays"
    );
    assert_eq!(outbox_ids(storage).await, ids[3..]);
    assert_eq!(storage.purge(5_001, 0).await.unwrap().outbox, 1);
    assert!(outbox_ids(storage).await.is_empty());

    // The cursors survive the purge: new events are numbered after them, so the sinks relay them.
    storage
        .commit_batch(
            &outbox_batch(4, vec![outbox_event("lp_5", "opened", 5_900)]),
            6_000,
        )
        .await
        .unwrap();
    let next = outbox_ids(storage).await;
    assert_eq!(next.len(), 1);
    assert!(next[0] > ids[3], "ids are not reused after a purge");
    assert_eq!(
        storage
            .claim_outbox("kafka", "node-a", 6_000, 10_000)
            .await
            .unwrap(),
        Some(ids[3])
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL shared by several instances.
// ---------------------------------------------------------------------------------------------

/// Several instances (stores with their own pools on one schema) append to the log and commit
/// outbox events at once, while a relay polls both by "after the last id seen". Identity values are
/// handed out at insert time, not at commit; without the advisory locks that make ids follow commit
/// order, a row with a smaller id commits after the poller has moved past it and is never seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_instances_writing_at_once_number_log_entries_and_outbox_events_in_commit_order() {
    const INSTANCES: usize = 4;
    const WRITES: usize = 150;
    let backend = postgres().await.expect("PostgreSQL is configured");
    let schema = backend
        .schema
        .as_ref()
        .expect("a PostgreSQL backend has a schema");
    let options = schema.connect_options();
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        let store = PostgresStorage::connect_with(options.clone(), 2)
            .await
            .expect("another instance connects to the same schema");
        instances.push(std::sync::Arc::new(store));
    }

    let writers: Vec<_> = instances
        .iter()
        .enumerate()
        .map(|(instance, store)| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::with_capacity(WRITES);
                for write in 0..WRITES {
                    let entry = event(&format!("instance-{instance}"), &write.to_string());
                    let outcome = store.append(&[entry], &[], RECEIVED_AT).await.unwrap();
                    seqs.push(outcome.seqs[0].expect("a new entry"));
                    let events = vec![outbox_event("lp_x", &format!("{instance}-{write}"), 1)];
                    store
                        .commit_batch(&outbox_batch(0, events), 2_000)
                        .await
                        .unwrap();
                }
                seqs
            })
        })
        .collect();
    let relay = instances[0].clone();
    let poller = tokio::spawn(async move {
        let (mut log_offset, mut outbox_offset) = (0, 0);
        let (mut seen_seqs, mut seen_events) = (Vec::new(), 0);
        while seen_seqs.len() < INSTANCES * WRITES || seen_events < INSTANCES * WRITES {
            for entry in relay.read_log(log_offset, 1_000).await.unwrap() {
                log_offset = entry.seq;
                seen_seqs.push(entry.seq);
            }
            for row in relay.outbox_after(outbox_offset, 1_000).await.unwrap() {
                outbox_offset = row.id;
                seen_events += 1;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        seen_seqs
    });

    let mut appended = Vec::new();
    for writer in writers {
        appended.extend(writer.await.expect("the writer finishes"));
    }
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), poller)
        .await
        .expect("the poller sees every entry and event: none committed behind its position")
        .expect("the poller finishes");
    appended.sort_unstable();
    assert_eq!(seen, appended);
    for store in &instances {
        store.close().await;
    }
    backend.finish().await;
}

fn key(source: &str, id: &str) -> (String, String) {
    (source.to_owned(), id.to_owned())
}

async fn seen_events_answers_which_ids_a_committed_batch_stored_and_purge_forgets_old_ones(
    storage: &dyn Storage,
) {
    let wanted = [
        key("zendesk", "t-1"),
        key("zendesk", "t-2"),
        key("survey", "t-1"),
    ];
    assert!(storage.seen_events(&wanted).await.unwrap().is_empty());
    assert!(storage.seen_events(&[]).await.unwrap().is_empty());
    let mut first = batch_with_loops(1, []);
    first.seen = vec![key("zendesk", "t-1")];
    storage.commit_batch(&first, 1_000).await.unwrap();
    // The same id again (a batch that saw it in flight) is no error.
    let mut second = batch_with_loops(2, []);
    second.seen = vec![key("survey", "t-1"), key("zendesk", "t-1")];
    storage.commit_batch(&second, 5_000).await.unwrap();
    let mut found = storage.seen_events(&wanted).await.unwrap();
    found.sort();
    assert_eq!(found, vec![key("survey", "t-1"), key("zendesk", "t-1")]);
    // Seen at 1,000 (the first commit) is past a cutoff of 2,000; seen at 5,000 is not.
    storage.purge(2_000, 0).await.unwrap();
    assert_eq!(
        storage.seen_events(&wanted).await.unwrap(),
        vec![key("survey", "t-1")]
    );
}

// ---------------------------------------------------------------------------------------------
// Access control: the queue set of a team's loop listing, and API tokens.
// ---------------------------------------------------------------------------------------------

async fn list_loops_queue_set_keeps_only_loops_on_those_queues_and_an_empty_set_keeps_none(
    storage: &dyn Storage,
) {
    let loops = five_loops(storage).await;
    let pick = |indexes: &[usize]| -> Vec<String> {
        indexes
            .iter()
            .map(|index| loops[*index].id.clone())
            .collect()
    };
    let queues = |names: &[&str]| LoopFilter {
        queues: Some(names.iter().map(|name| (*name).to_owned()).collect()),
        ..LoopFilter::default()
    };
    assert_eq!(listed(storage, queues(&["cs-a"])).await, pick(&[1, 0]));
    assert_eq!(
        listed(storage, queues(&["cs-b", "cx-journeys"])).await,
        pick(&[4, 3, 2])
    );
    assert!(listed(storage, queues(&[])).await.is_empty());
    assert!(listed(storage, queues(&["cs"])).await.is_empty());
    // With the other filters, AND: a queue outside the set finds nothing.
    let outside = LoopFilter {
        queue: Some("cs-a".to_owned()),
        ..queues(&["cs-b"])
    };
    assert!(listed(storage, outside).await.is_empty());
    let inside = LoopFilter {
        account_id: Some("globex".to_owned()),
        ..queues(&["cs-b", "cs-a"])
    };
    assert_eq!(listed(storage, inside).await, pick(&[4, 2]));
}

/// A token as `sigloop token create` makes it, created at `created_at`.
fn new_token(name: &str, created_at: Millis) -> (NewToken, String) {
    let (id, secret) = sigloop::api::auth::generate_token();
    let token = NewToken {
        id,
        secret_hash: sigloop::api::auth::hash_secret(&secret),
        name: name.to_owned(),
        scopes: vec!["read".to_owned(), "act".to_owned()],
        team: Some("cs-enterprise".to_owned()),
        created_at,
        expires_at: Some(created_at + MILLIS_PER_DAY),
    };
    (token, secret)
}

async fn a_token_is_stored_by_the_hash_of_its_secret_and_found_by_that_hash_only(
    storage: &dyn Storage,
) {
    let (token, secret) = new_token("ana.lima", 1_000);
    storage.create_token(&token).await.unwrap();
    let found = storage
        .token_by_hash(&sigloop::api::auth::hash_secret(&secret))
        .await
        .unwrap()
        .expect("the token is found by the hash of its secret");
    assert_eq!(
        found,
        TokenRow {
            token: token.clone(),
            revoked_at: None
        }
    );
    assert_ne!(
        found.token.secret_hash, secret,
        "the secret is not what is stored"
    );
    assert!(!found.token.secret_hash.contains(&secret[4..]));
    // The secret itself, or another secret's hash, finds nothing.
    assert_eq!(storage.token_by_hash(&secret).await.unwrap(), None);
    let (_, other_secret) = sigloop::api::auth::generate_token();
    assert_eq!(
        storage
            .token_by_hash(&sigloop::api::auth::hash_secret(&other_secret))
            .await
            .unwrap(),
        None
    );
    // A token without team, expiry or scopes beyond one round-trips too.
    let (mut plain, plain_secret) = new_token("ingest-bot", 2_000);
    plain.team = None;
    plain.expires_at = None;
    plain.scopes = vec!["ingest".to_owned()];
    storage.create_token(&plain).await.unwrap();
    let found = storage
        .token_by_hash(&sigloop::api::auth::hash_secret(&plain_secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.token, plain);
}

async fn tokens_are_listed_oldest_first_with_revoked_and_expired_ones(storage: &dyn Storage) {
    assert!(storage.tokens().await.unwrap().is_empty());
    let (newer, _) = new_token("newer", 3_000);
    let (older, _) = new_token("older", 1_000);
    let (mut expired, _) = new_token("expired", 2_000);
    expired.expires_at = Some(2_500);
    for token in [&newer, &older, &expired] {
        storage.create_token(token).await.unwrap();
    }
    storage.revoke_token(&older.id, 4_000).await.unwrap();
    let listed: Vec<(String, Option<Millis>)> = storage
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.token.name, row.revoked_at))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("older".to_owned(), Some(4_000)),
            ("expired".to_owned(), None),
            ("newer".to_owned(), None),
        ]
    );
}

async fn revoking_a_token_keeps_its_first_revocation_time_and_an_unknown_id_is_none(
    storage: &dyn Storage,
) {
    let (token, secret) = new_token("ana.lima", 1_000);
    storage.create_token(&token).await.unwrap();
    let revoked = storage
        .revoke_token(&token.id, 5_000)
        .await
        .unwrap()
        .expect("the token exists");
    assert_eq!(revoked.revoked_at, Some(5_000));
    assert_eq!(revoked.token, token);
    let again = storage
        .revoke_token(&token.id, 9_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(5_000), "the first revocation stays");
    let found = storage
        .token_by_hash(&sigloop::api::auth::hash_secret(&secret))
        .await
        .unwrap()
        .expect("a revoked token is still found, to be refused as revoked");
    assert_eq!(found.revoked_at, Some(5_000));
    assert_eq!(
        storage.revoke_token("tok_unknown", 5_000).await.unwrap(),
        None
    );
}

async fn a_second_token_with_the_same_id_or_secret_hash_is_refused(storage: &dyn Storage) {
    let (token, _) = new_token("first", 1_000);
    storage.create_token(&token).await.unwrap();
    let (mut same_id, _) = new_token("same id", 2_000);
    same_id.id = token.id.clone();
    assert!(storage.create_token(&same_id).await.is_err());
    let (mut same_hash, _) = new_token("same hash", 2_000);
    same_hash.secret_hash = token.secret_hash.clone();
    assert!(storage.create_token(&same_hash).await.is_err());
    let names: Vec<String> = storage
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.token.name)
        .collect();
    assert_eq!(names, vec!["first".to_owned()]);
}

/// The bytes of every file of a SQLite database (the main file, its WAL and shared memory), as
/// text: whatever a reader of the disk would find.
fn sqlite_files_text(directory: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(directory).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    text
}

/// Outside the trait, on purpose: the disk and the table hold the hash of a token's secret, never
/// the secret.
#[tokio::test]
async fn sqlite_keeps_only_the_hash_of_a_token_secret_in_its_files() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sigloop.db");
    let storage = SqliteStorage::open(&path, Synchronous::Full).await.unwrap();
    let (token, secret) = new_token("ana.lima", 1_000);
    storage.create_token(&token).await.unwrap();
    // The WAL, before any checkpoint, and the database file after one.
    let before_checkpoint = sqlite_files_text(directory.path());
    assert!(
        before_checkpoint.contains(&token.secret_hash),
        "the hash is on disk"
    );
    assert!(
        !before_checkpoint.contains(&secret[4..]),
        "the secret is not"
    );
    storage.close().await;
    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, secret_hash, name FROM api_tokens")
            .fetch_all(&mut connection)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![(
            token.id.clone(),
            sigloop::api::auth::hash_secret(&secret),
            "ana.lima".to_owned()
        )]
    );
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    let after_checkpoint = sqlite_files_text(directory.path());
    assert!(after_checkpoint.contains(&token.secret_hash));
    assert!(!after_checkpoint.contains(&secret[4..]));
}

/// Outside the trait, on purpose: a database written before migration 0008 held one account-set row
/// per (bucket, account) pair. The migration packs them into one row per bucket, and every distinct
/// count reads as before, then grows with the batches written afterwards.
#[tokio::test]
async fn a_sqlite_database_with_account_pairs_keeps_its_distinct_accounts_once_the_migration_packs_them(
) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sigloop.db");
    let mut connection = sqlite_database_before("0008", directory.path(), &path).await;
    // Two buckets as the earlier layout wrote them: a1 is written twice, as after a restart.
    let buckets = [
        ("onboarding", "billing", "email", 3, &["a1", "a2", "a1"][..]),
        ("renewal", "pricing", "call", 1, &["a3"][..]),
    ];
    for (stage, tag, touchpoint, events, accounts) in buckets {
        sqlx::query(
            "INSERT INTO journey_buckets VALUES (?, ?, ?, ?, 'processor', ?, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
        )
        .bind(JOURNEY_MONDAY)
        .bind(stage)
        .bind(tag)
        .bind(touchpoint)
        .bind(events)
        .execute(&mut connection)
        .await
        .unwrap();
        for account in accounts {
            sqlx::query("INSERT INTO journey_accounts VALUES (?, ?, ?, ?, ?)")
                .bind(JOURNEY_MONDAY)
                .bind(stage)
                .bind(tag)
                .bind(touchpoint)
                .bind(account)
                .execute(&mut connection)
                .await
                .unwrap();
        }
    }
    connection.close().await.unwrap();

    let storage = SqliteStorage::open(&path, Synchronous::Full).await.unwrap();
    upgraded_account_sets_count_as_before_and_grow(&storage).await;
    storage.close().await;
}

/// A copy (in `directory`) of the backend's migrations numbered before `migration`, as an earlier
/// sigloop shipped them.
fn migrations_before(
    backend: &str,
    migration: &str,
    directory: &std::path::Path,
) -> std::path::PathBuf {
    let earlier = directory.join(format!("migrations-{backend}"));
    std::fs::create_dir(&earlier).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for entry in std::fs::read_dir(shipped).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.as_str() < migration {
            std::fs::copy(entry.path(), earlier.join(&name)).unwrap();
        }
    }
    earlier
}

/// A SQLite database at `path` as an earlier sigloop left it: the migrations numbered before
/// `migration`, run from a copy of their files (in `directory`) as that sigloop ran them.
async fn sqlite_database_before(
    migration: &str,
    directory: &std::path::Path,
    path: &std::path::Path,
) -> sqlx::SqliteConnection {
    let earlier = migrations_before("sqlite", migration, directory);
    let options = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite:")
        .unwrap()
        .filename(path)
        .create_if_missing(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(earlier.as_path())
        .await
        .unwrap()
        .run(&mut connection)
        .await
        .unwrap();
    connection
}

/// Outside the trait, on purpose: a database written before migration 0009 kept each batch's
/// journey deltas as rows of `journey_bucket_deltas`, some folded and some not. The migration folds
/// what was left, and every figure and distinct count reads as before, then grows with the batches
/// written to the journal afterwards.
#[tokio::test]
async fn a_sqlite_database_with_unfolded_delta_rows_keeps_its_figures_once_the_migration_folds_them(
) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sigloop.db");
    let mut connection = sqlite_database_before("0009", directory.path(), &path).await;
    // A folded row and its account set, then two unfolded deltas of the same bucket and one of
    // another, as the earlier layout wrote them.
    sqlx::query(
        "INSERT INTO journey_buckets VALUES (?, 'onboarding', 'billing', 'email', 'processor', 4, 1, 2, 1, 0, 1, 0, 0, 0, 0)",
    )
    .bind(JOURNEY_MONDAY)
    .execute(&mut connection)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO journey_account_sets VALUES (?, 'onboarding', 'billing', 'email', '[\"a1\",\"a2\"]')",
    )
    .bind(JOURNEY_MONDAY)
    .execute(&mut connection)
    .await
    .unwrap();
    for (stage, events, promoters, accounts) in [
        ("onboarding", 2, 1, Some(r#"["a2","a3"]"#)),
        ("onboarding", 1, 0, None),
        ("renewal", 3, 3, Some(r#"["a4"]"#)),
    ] {
        sqlx::query(
            "INSERT INTO journey_bucket_deltas VALUES (?, ?, 'billing', 'email', 'processor', ?, 0, ?, ?, 0, 0, 0, 0, 0, 0, ?)",
        )
        .bind(JOURNEY_MONDAY)
        .bind(stage)
        .bind(events)
        .bind(promoters)
        .bind(promoters)
        .bind(accounts)
        .execute(&mut connection)
        .await
        .unwrap();
    }
    connection.close().await.unwrap();

    let storage = SqliteStorage::open(&path, Synchronous::Full).await.unwrap();
    let (onboarding, accounts) = stage_figures(&storage, "onboarding").await;
    assert_eq!(
        (
            onboarding.events,
            onboarding.tickets,
            onboarding.nps_responses
        ),
        (7, 1, 3)
    );
    assert_eq!((onboarding.promoters, onboarding.detractors), (2, 1));
    assert_eq!(accounts, 3);
    let (renewal, accounts) = stage_figures(&storage, "renewal").await;
    assert_eq!((renewal.events, renewal.promoters, accounts), (3, 3, 1));
    // A batch after the upgrade goes to the journal: a3 again, and a5 for the first time.
    storage
        .commit_batch(
            &journey_batch(
                1,
                vec![delta(
                    bucket(0, "onboarding", "billing", "email"),
                    2,
                    1,
                    &["a3", "a5"],
                )],
            ),
            10,
        )
        .await
        .unwrap();
    let (onboarding, accounts) = stage_figures(&storage, "onboarding").await;
    assert_eq!(
        (onboarding.events, onboarding.promoters, accounts),
        (9, 3, 4)
    );
    storage.close().await;
}

/// Outside the trait, on purpose: the journal's deltas left unfolded when SQLite closes count at
/// once after it opens again, and are folded (once) by a later commit.
#[tokio::test]
async fn a_sqlite_journal_left_unfolded_at_a_restart_counts_once_and_is_folded_by_a_later_commit() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sigloop.db");
    let storage = SqliteStorage::open(&path, Synchronous::Full).await.unwrap();
    // 8,000 deltas: just under the fold threshold of 8,192.
    let many = |offset: i64, count: usize| {
        let deltas = (0..count)
            .map(|index| {
                delta(
                    bucket(0, "adoption", &format!("tag-{}", index % 3_000), "web"),
                    1,
                    0,
                    &[format!("a{index}").as_str()],
                )
            })
            .collect();
        journey_batch(offset, deltas)
    };
    storage.commit_batch(&many(1, 8_000), 10).await.unwrap();
    storage.close().await;
    let journal_rows = |path: std::path::PathBuf| async move {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite:")
            .unwrap()
            .filename(&path);
        let mut connection = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journey_journal")
            .fetch_one(&mut connection)
            .await
            .unwrap();
        connection.close().await.unwrap();
        rows
    };
    assert_eq!(journal_rows(path.clone()).await, 1);

    let storage = SqliteStorage::open(&path, Synchronous::Full).await.unwrap();
    assert_eq!(
        stage_figures(&storage, "adoption").await,
        (figures(8_000), 8_000)
    );
    // 500 more cross the threshold with the 8,000 counted at open: this commit folds both.
    storage.commit_batch(&many(2, 500), 20).await.unwrap();
    storage.close().await;
    assert_eq!(journal_rows(path.clone()).await, 0);
    let storage = SqliteStorage::open(&path, Synchronous::Full).await.unwrap();
    // a0..a499 were in both batches.
    assert_eq!(
        stage_figures(&storage, "adoption").await,
        (figures(8_500), 8_000)
    );
    storage.close().await;
}

/// Outside the trait, on purpose: a PostgreSQL schema written before migration 0004 held one
/// `journey_accounts` row per (bucket, account) pair. The migration packs them into one row per
/// bucket, and every distinct count reads as before, then grows with the batches written afterwards.
#[tokio::test]
async fn a_postgres_schema_with_account_pairs_keeps_its_distinct_accounts_once_the_migration_packs_them(
) {
    let schema = TestSchema::create().await;
    let directory = tempfile::tempdir().unwrap();
    let earlier = migrations_before("postgres", "0004", directory.path());
    let mut connection = PgConnection::connect_with(&schema.connect_options())
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(earlier.as_path())
        .await
        .unwrap()
        .run(&mut connection)
        .await
        .unwrap();
    for (stage, events, accounts) in [
        ("onboarding", 3, &["a1", "a2"][..]),
        ("renewal", 1, &["a3"][..]),
    ] {
        sqlx::query(
            "INSERT INTO journey_buckets VALUES ($1, $2, 'billing', 'email', $3, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
        )
        .bind(JOURNEY_MONDAY)
        .bind(stage)
        .bind(events)
        .execute(&mut connection)
        .await
        .unwrap();
        for account in accounts {
            sqlx::query("INSERT INTO journey_accounts VALUES ($1, $2, 'billing', 'email', $3)")
                .bind(JOURNEY_MONDAY)
                .bind(stage)
                .bind(account)
                .execute(&mut connection)
                .await
                .unwrap();
        }
    }
    connection.close().await.unwrap();

    let storage = PostgresStorage::connect_with(schema.connect_options(), TEST_POOL_SIZE)
        .await
        .unwrap();
    upgraded_account_sets_count_as_before_and_grow(&storage).await;
    storage.close().await;
    schema.drop_schema().await;
}

/// What both account-set upgrade tests check once the migration has run on onboarding (3 events;
/// a1, a2) and renewal (1 event; a3): the distinct counts read as before, and a batch written
/// afterwards (a1 again, a4 for the first time) adds to them.
async fn upgraded_account_sets_count_as_before_and_grow(storage: &dyn Storage) {
    assert_eq!(stage_figures(storage, "onboarding").await, (figures(3), 2));
    assert_eq!(stage_figures(storage, "renewal").await, (figures(1), 1));
    storage
        .commit_batch(
            &journey_batch(
                1,
                vec![delta(
                    bucket(0, "onboarding", "billing", "email"),
                    2,
                    0,
                    &["a1", "a4"],
                )],
            ),
            10,
        )
        .await
        .unwrap();
    assert_eq!(stage_figures(storage, "onboarding").await, (figures(5), 3));
    let snapshot = storage.journey_snapshot(7 * MILLIS_PER_DAY).await.unwrap();
    let mut pairs: Vec<(String, String)> = snapshot
        .accounts
        .iter()
        .map(|(key, account)| (key.stage.clone(), account.as_str().to_owned()))
        .collect();
    pairs.sort();
    pairs.dedup();
    let expected = [
        ("onboarding", "a1"),
        ("onboarding", "a2"),
        ("onboarding", "a4"),
        ("renewal", "a3"),
    ]
    .map(|(stage, account)| (stage.to_owned(), account.to_owned()));
    assert_eq!(pairs, expected);
}

/// Figures with only an event count, as the upgrade tests write them.
fn figures(events: u64) -> Figures {
    Figures {
        events,
        ..Figures::default()
    }
}

#[tokio::test]
async fn postgres_keeps_only_the_hash_of_a_token_secret_in_its_table() {
    let backend = postgres().await.expect("PostgreSQL is configured");
    let (token, secret) = new_token("ana.lima", 1_000);
    backend.storage.create_token(&token).await.unwrap();
    let schema = backend
        .schema
        .as_ref()
        .expect("a PostgreSQL backend has a schema");
    let mut connection = PgConnection::connect_with(&schema.connect_options())
        .await
        .unwrap();
    // Every column of every row, as text.
    let rows: Vec<(String,)> = sqlx::query_as("SELECT api_tokens::text FROM api_tokens")
        .fetch_all(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0]
            .0
            .contains(&sigloop::api::auth::hash_secret(&secret)),
        "{rows:?}"
    );
    assert!(!rows[0].0.contains(&secret[4..]), "{rows:?}");
    backend.finish().await;
}
