//! The PostgreSQL backend of the distributed mode: one database shared by every sigloop instance.
//!
//! Each table of a batch is written with one statement whose rows arrive as arrays, one per column,
//! unpacked by `UNNEST`: the statement text never changes with the row count, so sqlx prepares it
//! once per connection, and there is no bound-parameter limit to chunk under.
//!
//! Several instances write at once, so nothing here assumes a single writer:
//! - journey figures are additive upserts and account sets are `ON CONFLICT DO NOTHING` inserts,
//!   written in key order so that two instances lock shared rows in the same order (no deadlock);
//! - identity values are allocated when a row is inserted, not when it commits, so the two tables
//!   that readers poll by id (`event_log`, `outbox`) are inserted under a transaction-level advisory
//!   lock, taken right before the insert and held until the commit: ids then follow commit order,
//!   and a reader that has seen id N has seen every id below it;
//! - Kafka offsets move by compare-and-set in the batch's transaction (fencing an instance that lost
//!   its partition), and outbox leases are taken by one conditional upsert.
//!
//! Reads that take several statements run in one `REPEATABLE READ, READ ONLY` transaction, so they
//! see one committed state even while other instances commit.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Postgres, QueryBuilder, Row, Transaction};

use super::shared::{
    bucket_from_row, corrupt, export_details, export_link_from_row, fenced_lease, fenced_offset,
    figure_values, figures_from_values, group_key, linked, scopes_text, token_from_row,
    trace_from_stored, GroupKey, EXPORT_LINKS, TOKEN_COLUMNS,
};
use super::{
    AccountView, AppendEntry, AppendOutcome, DeadLetterRow, JourneyDimension, JourneyGroup,
    JourneyQuery, LoopDetail, LoopFilter, LoopPage, NewDeadLetter, NewToken, OutboxRow,
    PurgeCounts, QueueSummary, StageSignals, Storage, StorageError, StoredOffset, TokenRow,
    MAX_DEAD_LETTER_PAYLOAD,
};
use crate::config::routes::SignalKind;
use crate::config::signals::Window;
use crate::detect::time::{AccountTimer, MetricSeries};
use crate::domain::{AccountId, Millis};
use crate::journey::{Figures, FiredRow, JourneySnapshot};
use crate::kpi::LoopTiming;
use crate::loops::{CloseReason, EvidenceRow, HistoryRow, LoopRecord, LoopState};
use crate::pipeline::core::{
    BatchEffects, CoreState, EntryKind, LogEntry, OffsetAdvance, OutboxEvent, SignalRow,
};
use crate::route::Account;

const PROCESSOR: &str = "processor";

/// Advisory lock held from the insert into `event_log` to the commit: "sigloop" in ASCII, then 1.
const EVENT_LOG_LOCK: i64 = 0x7369_676c_6f6f_7001;
/// Advisory lock held from the insert into `outbox` to the commit: "sigloop" in ASCII, then 2.
const OUTBOX_LOCK: i64 = 0x7369_676c_6f6f_7002;

/// PostgreSQL storage, shared by any number of sigloop instances.
pub struct PostgresStorage {
    pool: PgPool,
}

impl PostgresStorage {
    /// Connects a pool of at most `pool_size` connections to the database at `url`
    /// (`postgres://user@host:port/database`) and runs the migrations.
    pub async fn connect(url: &str, pool_size: u32) -> Result<PostgresStorage, StorageError> {
        PostgresStorage::connect_with(PgConnectOptions::from_str(url)?, pool_size).await
    }

    /// Like [`PostgresStorage::connect`], with options built by the caller (say, a `search_path`
    /// naming the schema to use).
    pub async fn connect_with(
        options: PgConnectOptions,
        pool_size: u32,
    ) -> Result<PostgresStorage, StorageError> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.disable_statement_logging())
            .await?;
        // sqlx holds an advisory lock while it migrates, so instances starting together take turns.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStorage { pool })
    }

    /// Closes every connection of the pool, waiting for those in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A read-only transaction on one snapshot, for reads of several statements.
    async fn snapshot(&self) -> Result<Transaction<'static, Postgres>, StorageError> {
        Ok(self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?)
    }
}

fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<String, StorageError> {
    serde_json::to_string(value).map_err(|error| corrupt(&format!("{what} to store"), error))
}

/// PostgreSQL text cannot hold the character U+0000; free text that may carry it (raw rejected
/// input, operator notes, the journey stages and touchpoints that events name) keeps a replacement
/// character in its place rather than failing the whole transaction, which would stop the
/// processor on that batch for good. JSON needs no such care: serde writes U+0000 as `\u0000`.
fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn json_column<T: serde::de::DeserializeOwned>(
    row: &PgRow,
    column: &str,
    what: &str,
) -> Result<T, StorageError> {
    let text: &str = row.try_get(column)?;
    serde_json::from_str(text).map_err(|error| corrupt(what, error))
}

fn loop_from_row(row: &PgRow) -> Result<LoopRecord, StorageError> {
    json_column(row, "record", "loop record")
}

fn account_id(text: &str, what: &str) -> Result<AccountId, StorageError> {
    AccountId::parse(text).map_err(|error| corrupt(what, error))
}

fn history_from_row(row: &PgRow) -> Result<HistoryRow, StorageError> {
    let state = |text: &str| LoopState::parse(text).ok_or_else(|| corrupt("history state", text));
    let seq: i64 = row.try_get("seq")?;
    Ok(HistoryRow {
        loop_id: row.try_get("loop_id")?,
        seq: u32::try_from(seq).map_err(|error| corrupt("history seq", error))?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        from_state: row
            .try_get::<Option<&str>, _>("from_state")?
            .map(state)
            .transpose()?,
        to_state: state(row.try_get("to_state")?)?,
        reason: row.try_get("reason")?,
    })
}

fn dead_letter_from_row(row: &PgRow) -> Result<DeadLetterRow, StorageError> {
    Ok(DeadLetterRow {
        id: row.try_get("id")?,
        received_at: row.try_get("received_at")?,
        dead_letter: NewDeadLetter {
            origin: row.try_get("origin")?,
            request_index: row.try_get("request_index")?,
            event_source: row.try_get("event_source")?,
            event_id: row.try_get("event_id")?,
            code: row.try_get("code")?,
            message: row.try_get("message")?,
            payload: row.try_get("payload")?,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Statements. Rows come in as one array per column; `WITH ORDINALITY ... ORDER BY ordinal` is there
// where identity values must follow the order given.
// ---------------------------------------------------------------------------------------------

const APPEND_LOG: &str =
    "INSERT INTO event_log (kind, source, id, event_type, event_time, received_at, payload) \
     SELECT kind, source, id, event_type, event_time, $1, payload \
     FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[]) \
     WITH ORDINALITY AS new_entry (kind, source, id, event_type, event_time, payload, ordinal) \
     ORDER BY ordinal \
     ON CONFLICT (source, id) DO NOTHING RETURNING seq, source, id";

const INSERT_DEAD_LETTERS: &str = "INSERT INTO dead_letters \
     (received_at, origin, request_index, event_source, event_id, code, message, payload) \
     SELECT $1, origin, request_index, event_source, event_id, code, message, payload \
     FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) \
     WITH ORDINALITY AS new_dead_letter (origin, request_index, event_source, event_id, code, message, payload, ordinal) \
     ORDER BY ordinal";

const ADVANCE_OFFSETS: &str =
    "UPDATE source_offsets AS stored SET next_offset = advance.to_offset \
     FROM UNNEST($1::text[], $2::integer[], $3::bigint[], $4::bigint[]) \
     AS advance (topic, partition, from_offset, to_offset) \
     WHERE stored.topic = advance.topic AND stored.partition = advance.partition \
     AND stored.next_offset = advance.from_offset \
     RETURNING stored.topic, stored.partition";

const START_OFFSETS: &str = "INSERT INTO source_offsets (topic, partition, next_offset) \
     SELECT * FROM UNNEST($1::text[], $2::integer[], $3::bigint[]) \
     ON CONFLICT DO NOTHING RETURNING topic, partition";

const UPSERT_ACCOUNTS: &str = "INSERT INTO accounts (account_id, record) \
     SELECT * FROM UNNEST($1::text[], $2::text[]) \
     ON CONFLICT (account_id) DO UPDATE SET record = EXCLUDED.record";

/// Key, generation, kind, account, tag and opening time never change; the rest follows the record.
const UPSERT_LOOPS: &str = "INSERT INTO loops (id, key, generation, kind, account_id, tag, queue, owner, \
     state, priority, breached, opened_at, updated_at, acknowledged_at, closed_at, close_reason, has_sla, \
     recurrence, record) \
     SELECT id, key, generation, kind, account_id, tag, queue, owner, state, priority, breached, \
     opened_at, updated_at, acknowledged_at, closed_at, close_reason, has_sla, recurrence, record \
     FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::text[], $9::text[], $10::bigint[], $11::boolean[], $12::bigint[], $13::bigint[], \
     $14::bigint[], $15::bigint[], $16::text[], $17::boolean[], $18::bigint[], $19::text[]) \
     WITH ORDINALITY AS new_loop (id, key, generation, kind, account_id, tag, queue, owner, state, priority, \
     breached, opened_at, updated_at, acknowledged_at, closed_at, close_reason, has_sla, recurrence, \
     record, ordinal) \
     ORDER BY ordinal \
     ON CONFLICT (id) DO UPDATE SET queue = EXCLUDED.queue, owner = EXCLUDED.owner, \
     state = EXCLUDED.state, priority = EXCLUDED.priority, breached = EXCLUDED.breached, \
     updated_at = EXCLUDED.updated_at, acknowledged_at = EXCLUDED.acknowledged_at, \
     closed_at = EXCLUDED.closed_at, close_reason = EXCLUDED.close_reason, has_sla = EXCLUDED.has_sla, \
     recurrence = EXCLUDED.recurrence, record = EXCLUDED.record";

const INSERT_TRACES: &str = "INSERT INTO loop_traces (loop_id, trace) \
     SELECT * FROM UNNEST($1::text[], $2::text[])";

const INSERT_HISTORY: &str = "INSERT INTO loop_history (loop_id, seq, at, actor, action, from_state, to_state, reason) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::text[])";

const INSERT_EVIDENCE: &str = "INSERT INTO loop_evidence (loop_id, record) \
     SELECT loop_id, record FROM UNNEST($1::text[], $2::text[]) \
     WITH ORDINALITY AS new_evidence (loop_id, record, ordinal) ORDER BY ordinal";

const INSERT_SIGNALS: &str = "INSERT INTO signals (account_id, time, stage, tag, record) \
     SELECT account_id, time, stage, tag, record \
     FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) \
     WITH ORDINALITY AS new_signal (account_id, time, stage, tag, record, ordinal) ORDER BY ordinal";

const UPSERT_REPEAT_WINDOWS: &str = "INSERT INTO repeat_windows (account_id, tag, times) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) \
     ON CONFLICT (account_id, tag) DO UPDATE SET times = EXCLUDED.times";

/// The additive columns of `journey_buckets`, in `Figures` order.
const FIGURE_COLUMNS: [&str; 10] = [
    "events",
    "tickets",
    "nps_responses",
    "promoters",
    "passives",
    "detractors",
    "csat_responses",
    "csat_sum",
    "ces_responses",
    "ces_sum",
];

/// Adds a batch's figures to the stored buckets: each figure is a sum, so any number of instances
/// can add to one bucket in any order.
static UPSERT_JOURNEY_BUCKETS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let arrays: Vec<String> = (0..FIGURE_COLUMNS.len())
        .map(|index| format!("${}::bigint[]", index + 5))
        .collect();
    let additions: Vec<String> = FIGURE_COLUMNS
        .iter()
        .map(|column| format!("{column} = journey_buckets.{column} + EXCLUDED.{column}"))
        .collect();
    format!(
        "INSERT INTO journey_buckets (start, stage, tag, touchpoint, {}) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], {}) \
         ON CONFLICT (start, stage, tag, touchpoint) DO UPDATE SET {}",
        FIGURE_COLUMNS.join(", "),
        arrays.join(", "),
        additions.join(", ")
    )
});

/// A batch's (bucket, account) pairs, packed into one account-set row per bucket (migration 0004).
const INSERT_JOURNEY_ACCOUNTS: &str =
    "INSERT INTO journey_account_sets (start, stage, tag, touchpoint, accounts) \
     SELECT start, stage, tag, touchpoint, array_agg(account_id ORDER BY account_id) \
     FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]) \
         AS pairs (start, stage, tag, touchpoint, account_id) \
     GROUP BY start, stage, tag, touchpoint";

const INSERT_JOURNEY_FIRED: &str =
    "INSERT INTO journey_fired (window_name, start, stage, tag, detector) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) \
     ON CONFLICT DO NOTHING";

const INSERT_LINKS: &str = "INSERT INTO loop_links (journey_loop, account_loop, at) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING";

const DELETE_ACCOUNT_TIMERS: &str = "DELETE FROM account_timers WHERE key = ANY($1::text[])";

const UPSERT_ACCOUNT_TIMERS: &str = "INSERT INTO account_timers (key, due, record) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[]) \
     ON CONFLICT (key) DO UPDATE SET due = EXCLUDED.due, record = EXCLUDED.record";

const UPSERT_METRIC_SERIES: &str = "INSERT INTO metric_series (key, record) \
     SELECT * FROM UNNEST($1::text[], $2::text[]) \
     ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record";

const INSERT_MILESTONES: &str = "INSERT INTO account_milestones (account_id, milestone, at) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING";

const UPSERT_ROUND_ROBIN: &str = "INSERT INTO round_robin (team, cursor) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
     ON CONFLICT (team) DO UPDATE SET cursor = EXCLUDED.cursor";

const UPSERT_PROCESSOR_STATE: &str =
    "INSERT INTO processor_state (name, offset_seq, clock) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET offset_seq = EXCLUDED.offset_seq, clock = EXCLUDED.clock";

const INSERT_SEEN: &str = "INSERT INTO seen_events (source, id, seen_at) \
     SELECT source, id, $1 FROM UNNEST($2::text[], $3::text[]) AS new_seen (source, id) \
     ORDER BY source, id ON CONFLICT DO NOTHING";

const INSERT_OUTBOX: &str =
    "INSERT INTO outbox (created_at, loop_id, loop_key, account_id, event, at, payload) \
     SELECT $1, loop_id, loop_key, account_id, event, at, payload \
     FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[]) \
     WITH ORDINALITY AS new_event (loop_id, loop_key, account_id, event, at, payload, ordinal) \
     ORDER BY ordinal";

/// `SUM(events)::bigint AS events, ...`: the figures of a group of rows (PostgreSQL sums BIGINT
/// into NUMERIC, hence the casts).
fn figure_sums() -> String {
    FIGURE_COLUMNS
        .iter()
        .map(|column| format!("SUM({column})::bigint AS {column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the columns named as `FIGURE_COLUMNS` (sums, so possibly NULL on no rows).
fn figures_from_row(row: &PgRow) -> Result<Figures, StorageError> {
    let mut values = [0u64; 10];
    for (value, column) in values.iter_mut().zip(FIGURE_COLUMNS) {
        let stored = row.try_get::<Option<i64>, _>(column)?.unwrap_or(0);
        *value = u64::try_from(stored).map_err(|error| corrupt("journey figure", error))?;
    }
    Ok(figures_from_values(values))
}

/// `AND tag = $n OR (tag > '$n.' AND tag < '$n/')`: the tag itself or its dotted descendants. A
/// range of bytes (the columns use the "C" collation, and `.` is followed by `/`) rather than LIKE:
/// case-sensitive like tag ids, blind to LIKE's wildcards, and served by the tag index.
fn push_tag_filter(builder: &mut QueryBuilder<'_, Postgres>, tag: &str) {
    builder
        .push(" AND (tag = ")
        .push_bind(tag.to_owned())
        .push(" OR (tag > ")
        .push_bind(format!("{tag}."))
        .push(" AND tag < ")
        .push_bind(format!("{tag}/"))
        .push("))");
}

/// `AND ...` filters of a journey query, shared by the figures and the account sets.
fn push_journey_filters(builder: &mut QueryBuilder<'_, Postgres>, query: &JourneyQuery) {
    if let Some(from) = query.from {
        builder.push(" AND start >= ").push_bind(from);
    }
    if let Some(to) = query.to {
        builder.push(" AND start < ").push_bind(to);
    }
    if let Some(stage) = &query.stage {
        builder.push(" AND stage = ").push_bind(stage.clone());
    }
    if let Some(touchpoint) = &query.touchpoint {
        builder
            .push(" AND touchpoint = ")
            .push_bind(touchpoint.clone());
    }
    if let Some(tag) = &query.tag {
        push_tag_filter(builder, tag);
    }
}

/// The grouping columns of a journey query, as SQL expressions aliased to their dimension names.
fn journey_columns(query: &JourneyQuery) -> Vec<String> {
    query
        .group_by
        .iter()
        .map(|dimension| match dimension {
            JourneyDimension::Stage => "stage".to_owned(),
            JourneyDimension::Tag => "tag".to_owned(),
            JourneyDimension::Touchpoint => "touchpoint".to_owned(),
            // Window constants come from the `Window` enum, never from the request. Starts are
            // after the epoch, so division truncating toward zero rounds down, as in SQLite.
            JourneyDimension::Window => {
                let (length, offset) = (query.window.length(), query.window.offset());
                format!("(((start - {offset}) / {length}) * {length} + {offset}) AS window_start")
            }
        })
        .collect()
}

/// Inserts dead letters (payloads cut to the maximum size) received at `received_at`, in order.
async fn insert_dead_letters(
    transaction: &mut Transaction<'static, Postgres>,
    dead_letters: &[NewDeadLetter],
    received_at: Millis,
) -> Result<(), StorageError> {
    if dead_letters.is_empty() {
        return Ok(());
    }
    let mut origins = Vec::with_capacity(dead_letters.len());
    let mut indexes = Vec::with_capacity(dead_letters.len());
    let mut sources = Vec::with_capacity(dead_letters.len());
    let mut ids = Vec::with_capacity(dead_letters.len());
    let mut codes = Vec::with_capacity(dead_letters.len());
    let mut messages = Vec::with_capacity(dead_letters.len());
    let mut payloads = Vec::with_capacity(dead_letters.len());
    for dead_letter in dead_letters {
        origins.push(storable(&dead_letter.origin));
        indexes.push(dead_letter.request_index);
        sources.push(dead_letter.event_source.as_deref().map(storable));
        ids.push(dead_letter.event_id.as_deref().map(storable));
        codes.push(storable(&dead_letter.code));
        messages.push(storable(&dead_letter.message));
        // Cut after the replacement, which is longer than the character it replaces.
        payloads.push(match storable(&dead_letter.payload) {
            Cow::Borrowed(text) => Cow::Borrowed(super::truncate_to(text, MAX_DEAD_LETTER_PAYLOAD)),
            Cow::Owned(text) => {
                Cow::Owned(super::truncate_to(&text, MAX_DEAD_LETTER_PAYLOAD).to_owned())
            }
        });
    }
    sqlx::query(INSERT_DEAD_LETTERS)
        .bind(received_at)
        .bind(origins)
        .bind(indexes)
        .bind(sources)
        .bind(ids)
        .bind(codes)
        .bind(messages)
        .bind(payloads)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// Applies the batch's offset advances as compare-and-set; the first one that does not apply fences
/// the whole batch.
async fn advance_offsets(
    transaction: &mut Transaction<'static, Postgres>,
    advances: &[OffsetAdvance],
) -> Result<(), StorageError> {
    if advances.is_empty() {
        return Ok(());
    }
    let (moving, starting): (Vec<&OffsetAdvance>, Vec<&OffsetAdvance>) =
        advances.iter().partition(|advance| advance.from.is_some());
    let mut applied: HashMap<(String, i32), usize> = HashMap::new();
    if !moving.is_empty() {
        let rows = sqlx::query(ADVANCE_OFFSETS)
            .bind(
                moving
                    .iter()
                    .map(|advance| advance.topic.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                moving
                    .iter()
                    .map(|advance| advance.partition)
                    .collect::<Vec<_>>(),
            )
            .bind(
                moving
                    .iter()
                    .map(|advance| advance.from)
                    .collect::<Vec<_>>(),
            )
            .bind(moving.iter().map(|advance| advance.to).collect::<Vec<_>>())
            .fetch_all(&mut **transaction)
            .await?;
        for row in rows {
            *applied
                .entry((row.try_get("topic")?, row.try_get("partition")?))
                .or_default() += 1;
        }
    }
    if !starting.is_empty() {
        let rows = sqlx::query(START_OFFSETS)
            .bind(
                starting
                    .iter()
                    .map(|advance| advance.topic.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                starting
                    .iter()
                    .map(|advance| advance.partition)
                    .collect::<Vec<_>>(),
            )
            .bind(
                starting
                    .iter()
                    .map(|advance| advance.to)
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut **transaction)
            .await?;
        for row in rows {
            *applied
                .entry((row.try_get("topic")?, row.try_get("partition")?))
                .or_default() += 1;
        }
    }
    // Each advance must have moved its own row: a partition named twice moves once, and fences.
    for advance in advances {
        match applied.get_mut(&(advance.topic.clone(), advance.partition)) {
            Some(count) if *count > 0 => *count -= 1,
            _ => return Err(fenced_offset(advance)),
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Storage for PostgresStorage {
    async fn append(
        &self,
        entries: &[AppendEntry],
        dead_letters: &[NewDeadLetter],
        received_at: Millis,
    ) -> Result<AppendOutcome, StorageError> {
        let mut outcome = AppendOutcome {
            seqs: vec![None; entries.len()],
        };
        // A (source, id) repeated inside the request is a duplicate of its first occurrence: only the
        // first is offered to the database, which refuses ids it already holds.
        let mut first_index: HashMap<(&str, &str), usize> = HashMap::with_capacity(entries.len());
        let mut offered = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                first_index.entry((entry.source.as_str(), entry.id.as_str()))
            {
                slot.insert(index);
                offered.push(entry);
            }
        }
        let mut transaction = self.pool.begin().await?;
        insert_dead_letters(&mut transaction, dead_letters, received_at).await?;
        if !offered.is_empty() {
            // Held until the commit: the next append numbers its entries only once these are
            // visible, so a reader of `seq > offset` cannot pass over one committed late.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(EVENT_LOG_LOCK)
                .execute(&mut *transaction)
                .await?;
            let rows = sqlx::query(APPEND_LOG)
                .bind(received_at)
                .bind(
                    offered
                        .iter()
                        .map(|entry| entry.kind.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    offered
                        .iter()
                        .map(|entry| entry.source.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    offered
                        .iter()
                        .map(|entry| entry.id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    offered
                        .iter()
                        .map(|entry| entry.event_type.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    offered
                        .iter()
                        .map(|entry| entry.event_time)
                        .collect::<Vec<_>>(),
                )
                .bind(
                    offered
                        .iter()
                        .map(|entry| entry.payload.as_str())
                        .collect::<Vec<_>>(),
                )
                .fetch_all(&mut *transaction)
                .await?;
            for row in rows {
                let seq: i64 = row.try_get("seq")?;
                let source: &str = row.try_get("source")?;
                let id: &str = row.try_get("id")?;
                if let Some(index) = first_index.get(&(source, id)) {
                    outcome.seqs[*index] = Some(seq);
                }
            }
        }
        transaction.commit().await?;
        Ok(outcome)
    }

    async fn read_log(&self, after: i64, limit: usize) -> Result<Vec<LogEntry>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT seq, kind, source, id, payload FROM event_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let kind: &str = row.try_get("kind")?;
                Ok(LogEntry {
                    seq: row.try_get("seq")?,
                    kind: match kind {
                        "action" => EntryKind::Action,
                        _ => EntryKind::Event,
                    },
                    source: row.try_get("source")?,
                    id: row.try_get("id")?,
                    payload: row.try_get("payload")?,
                })
            })
            .collect()
    }

    async fn log_head(&self) -> Result<i64, StorageError> {
        // Not the identity sequence: a refused duplicate still advances it. An empty log (all purged)
        // means everything appended was processed, so 0 is a safe answer.
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM event_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(head)
    }

    async fn load_state(&self) -> Result<CoreState, StorageError> {
        let mut transaction = self.snapshot().await?;
        let mut state = CoreState::default();
        if let Some(row) =
            sqlx::query("SELECT offset_seq, clock FROM processor_state WHERE name = $1")
                .bind(PROCESSOR)
                .fetch_optional(&mut *transaction)
                .await?
        {
            state.offset = row.try_get("offset_seq")?;
            state.clock = row.try_get("clock")?;
        }
        for row in sqlx::query("SELECT record FROM accounts")
            .fetch_all(&mut *transaction)
            .await?
        {
            let account: Account = json_column(&row, "record", "account")?;
            state.accounts.insert(account.account_id.clone(), account);
        }
        // Only the newest generation of each key: the core never needs superseded ones.
        for row in
            sqlx::query("SELECT DISTINCT ON (key) record FROM loops ORDER BY key, generation DESC")
                .fetch_all(&mut *transaction)
                .await?
        {
            state.insert_loop(loop_from_row(&row)?);
        }
        for row in sqlx::query("SELECT record FROM account_timers")
            .fetch_all(&mut *transaction)
            .await?
        {
            let timer: AccountTimer = json_column(&row, "record", "timer")?;
            state.time.timers.insert(timer.key.clone(), timer);
        }
        for row in sqlx::query("SELECT record FROM metric_series")
            .fetch_all(&mut *transaction)
            .await?
        {
            let series: MetricSeries = json_column(&row, "record", "metric series")?;
            state.time.series.insert(series.key.clone(), series);
        }
        for row in sqlx::query("SELECT account_id, milestone FROM account_milestones")
            .fetch_all(&mut *transaction)
            .await?
        {
            let account = account_id(row.try_get("account_id")?, "milestone")?;
            state
                .time
                .milestones
                .insert((account, row.try_get("milestone")?));
        }
        state.arm_time_timers();
        for row in sqlx::query("SELECT account_id, tag, times FROM repeat_windows")
            .fetch_all(&mut *transaction)
            .await?
        {
            let account = account_id(row.try_get("account_id")?, "repeat window")?;
            let times: Vec<Millis> = json_column(&row, "times", "repeat window")?;
            state
                .detectors
                .repeat_tickets
                .insert((account, row.try_get("tag")?), times);
        }
        // Links of current journey loops only: superseded generations are not in memory.
        for row in sqlx::query("SELECT journey_loop, account_loop FROM loop_links")
            .fetch_all(&mut *transaction)
            .await?
        {
            let journey_loop: String = row.try_get("journey_loop")?;
            if state.loops.contains_key(&journey_loop) {
                state
                    .links
                    .entry(journey_loop)
                    .or_default()
                    .insert(row.try_get("account_loop")?);
            }
        }
        for row in sqlx::query("SELECT team, cursor FROM round_robin")
            .fetch_all(&mut *transaction)
            .await?
        {
            let cursor: i64 = row.try_get("cursor")?;
            state.router.round_robin.insert(
                row.try_get("team")?,
                u64::try_from(cursor).map_err(|error| corrupt("round-robin cursor", error))?,
            );
        }
        transaction.commit().await?;
        Ok(state)
    }

    async fn commit_batch(
        &self,
        effects: &BatchEffects,
        committed_at: Millis,
    ) -> Result<(), StorageError> {
        let mut transaction = self.pool.begin().await?;
        // First, so that a fenced batch stops before writing anything (dropping the transaction
        // rolls it back), and so that two instances racing for a partition queue on its row.
        advance_offsets(&mut transaction, &effects.source_offsets).await?;

        if !effects.accounts.is_empty() {
            let mut ids = Vec::with_capacity(effects.accounts.len());
            let mut records = Vec::with_capacity(effects.accounts.len());
            for account in effects.accounts.values() {
                ids.push(account.account_id.as_str());
                records.push(to_json(account, "account")?);
            }
            sqlx::query(UPSERT_ACCOUNTS)
                .bind(ids)
                .bind(records)
                .execute(&mut *transaction)
                .await?;
        }

        if !effects.loops.is_empty() {
            let count = effects.loops.len();
            let mut ids = Vec::with_capacity(count);
            let mut keys = Vec::with_capacity(count);
            let mut generations = Vec::with_capacity(count);
            let mut kinds = Vec::with_capacity(count);
            let mut account_ids = Vec::with_capacity(count);
            let mut tags = Vec::with_capacity(count);
            let mut queues = Vec::with_capacity(count);
            let mut owners = Vec::with_capacity(count);
            let mut states = Vec::with_capacity(count);
            let mut priorities = Vec::with_capacity(count);
            let mut breached = Vec::with_capacity(count);
            let mut opened = Vec::with_capacity(count);
            let mut updated = Vec::with_capacity(count);
            let mut acknowledged = Vec::with_capacity(count);
            let mut closed = Vec::with_capacity(count);
            let mut close_reasons = Vec::with_capacity(count);
            let mut has_sla = Vec::with_capacity(count);
            let mut recurrences = Vec::with_capacity(count);
            let mut records = Vec::with_capacity(count);
            for record in effects.loops.values() {
                ids.push(record.id.as_str());
                // A journey loop's key holds its stage, free text from the events.
                keys.push(storable(&record.key));
                generations.push(i64::from(record.generation));
                kinds.push(record.kind.as_str());
                account_ids.push(record.account_id.as_deref());
                tags.push(record.tag.as_str());
                queues.push(record.queue.as_str());
                owners.push(record.owner.as_str());
                states.push(record.state.as_str());
                priorities.push(i64::from(record.priority));
                breached.push(record.breached);
                opened.push(record.opened_at);
                updated.push(record.updated_at);
                acknowledged.push(record.acknowledged_at);
                closed.push(record.closed_at);
                close_reasons.push(record.close_reason.map(CloseReason::as_str));
                has_sla.push(record.sla_policy.is_some());
                recurrences.push(i64::from(record.recurrence));
                records.push(to_json(record, "loop record")?);
            }
            sqlx::query(UPSERT_LOOPS)
                .bind(ids)
                .bind(keys)
                .bind(generations)
                .bind(kinds)
                .bind(account_ids)
                .bind(tags)
                .bind(queues)
                .bind(owners)
                .bind(states)
                .bind(priorities)
                .bind(breached)
                .bind(opened)
                .bind(updated)
                .bind(acknowledged)
                .bind(closed)
                .bind(close_reasons)
                .bind(has_sla)
                .bind(recurrences)
                .bind(records)
                .execute(&mut *transaction)
                .await?;
        }

        if !effects.traces.is_empty() {
            sqlx::query(INSERT_TRACES)
                .bind(
                    effects
                        .traces
                        .iter()
                        .map(|(loop_id, _)| loop_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    effects
                        .traces
                        .iter()
                        .map(|(_, trace)| trace.as_str())
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *transaction)
                .await?;
        }

        // The durability tests kill the process here: half a batch written, nothing committed.
        crate::failpoint::hit("mid_commit");

        if !effects.history.is_empty() {
            let history = &effects.history;
            sqlx::query(INSERT_HISTORY)
                .bind(
                    history
                        .iter()
                        .map(|row| row.loop_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    history
                        .iter()
                        .map(|row| i64::from(row.seq))
                        .collect::<Vec<_>>(),
                )
                .bind(history.iter().map(|row| row.at).collect::<Vec<_>>())
                .bind(
                    history
                        .iter()
                        .map(|row| storable(&row.actor))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    history
                        .iter()
                        .map(|row| row.action.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    history
                        .iter()
                        .map(|row| row.from_state.map(LoopState::as_str))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    history
                        .iter()
                        .map(|row| row.to_state.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    history
                        .iter()
                        .map(|row| row.reason.as_deref().map(storable))
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *transaction)
                .await?;
        }

        if !effects.evidence.is_empty() {
            let records = effects
                .evidence
                .iter()
                .map(|evidence| to_json(evidence, "evidence"))
                .collect::<Result<Vec<_>, _>>()?;
            sqlx::query(INSERT_EVIDENCE)
                .bind(
                    effects
                        .evidence
                        .iter()
                        .map(|evidence| evidence.loop_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(records)
                .execute(&mut *transaction)
                .await?;
        }

        if !effects.signals.is_empty() {
            let signals = &effects.signals;
            let records = signals
                .iter()
                .map(|signal| to_json(signal, "signal"))
                .collect::<Result<Vec<_>, _>>()?;
            sqlx::query(INSERT_SIGNALS)
                .bind(
                    signals
                        .iter()
                        .map(|signal| signal.account_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(signals.iter().map(|signal| signal.time).collect::<Vec<_>>())
                .bind(
                    signals
                        .iter()
                        .map(|signal| storable(&signal.stage))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    signals
                        .iter()
                        .map(|signal| signal.tag.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(records)
                .execute(&mut *transaction)
                .await?;
        }

        if !effects.repeat_windows.is_empty() {
            let mut account_ids = Vec::with_capacity(effects.repeat_windows.len());
            let mut tags = Vec::with_capacity(effects.repeat_windows.len());
            let mut times = Vec::with_capacity(effects.repeat_windows.len());
            for ((account, tag), window) in &effects.repeat_windows {
                account_ids.push(account.as_str());
                tags.push(tag.as_str());
                times.push(to_json(window, "repeat window")?);
            }
            sqlx::query(UPSERT_REPEAT_WINDOWS)
                .bind(account_ids)
                .bind(tags)
                .bind(times)
                .execute(&mut *transaction)
                .await?;
        }

        if !effects.journey_buckets.is_empty() {
            // Summed per key (one upsert may not touch a row twice) and sorted by it: every
            // instance locks the shared bucket rows in the same order, so they queue, never deadlock.
            // Stages and touchpoints are free text from the events, hence `storable`, applied
            // before summing so that the stored key is what the rows are summed by.
            type Key<'a> = (Millis, Cow<'a, str>, &'a str, Cow<'a, str>);
            let mut buckets: BTreeMap<Key<'_>, [i64; 10]> = BTreeMap::new();
            for bucket in &effects.journey_buckets {
                let key = &bucket.key;
                let sums = buckets
                    .entry((
                        key.start,
                        storable(&key.stage),
                        key.tag.as_str(),
                        storable(&key.touchpoint),
                    ))
                    .or_default();
                for (sum, value) in sums.iter_mut().zip(figure_values(&bucket.figures)) {
                    *sum += value;
                }
            }
            let mut starts = Vec::with_capacity(buckets.len());
            let mut stages = Vec::with_capacity(buckets.len());
            let mut tags = Vec::with_capacity(buckets.len());
            let mut touchpoints = Vec::with_capacity(buckets.len());
            let mut figures: [Vec<i64>; 10] =
                std::array::from_fn(|_| Vec::with_capacity(buckets.len()));
            for ((start, stage, tag, touchpoint), sums) in &buckets {
                starts.push(*start);
                stages.push(stage.as_ref());
                tags.push(*tag);
                touchpoints.push(touchpoint.as_ref());
                for (column, value) in figures.iter_mut().zip(sums) {
                    column.push(*value);
                }
            }
            let mut query = sqlx::query(&UPSERT_JOURNEY_BUCKETS)
                .bind(starts)
                .bind(stages)
                .bind(tags)
                .bind(touchpoints);
            for column in figures {
                query = query.bind(column);
            }
            query.execute(&mut *transaction).await?;

            // Each pair once; the statement packs them into one account-set row per bucket.
            let pairs: BTreeSet<(Millis, Cow<str>, &str, Cow<str>, &str)> = effects
                .journey_buckets
                .iter()
                .flat_map(|bucket| {
                    let key = &bucket.key;
                    bucket.accounts.iter().map(move |account| {
                        (
                            key.start,
                            storable(&key.stage),
                            key.tag.as_str(),
                            storable(&key.touchpoint),
                            account.as_str(),
                        )
                    })
                })
                .collect();
            if !pairs.is_empty() {
                sqlx::query(INSERT_JOURNEY_ACCOUNTS)
                    .bind(pairs.iter().map(|pair| pair.0).collect::<Vec<_>>())
                    .bind(pairs.iter().map(|pair| pair.1.as_ref()).collect::<Vec<_>>())
                    .bind(pairs.iter().map(|pair| pair.2).collect::<Vec<_>>())
                    .bind(pairs.iter().map(|pair| pair.3.as_ref()).collect::<Vec<_>>())
                    .bind(pairs.iter().map(|pair| pair.4).collect::<Vec<_>>())
                    .execute(&mut *transaction)
                    .await?;
            }
        }

        if !effects.journey_fired.is_empty() {
            let fired = &effects.journey_fired;
            sqlx::query(INSERT_JOURNEY_FIRED)
                .bind(
                    fired
                        .iter()
                        .map(|row| row.window.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(fired.iter().map(|row| row.start).collect::<Vec<_>>())
                .bind(
                    fired
                        .iter()
                        .map(|row| storable(&row.stage))
                        .collect::<Vec<_>>(),
                )
                .bind(fired.iter().map(|row| row.tag.as_str()).collect::<Vec<_>>())
                .bind(
                    fired
                        .iter()
                        .map(|row| row.detector.as_str())
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *transaction)
                .await?;
        }

        if !effects.links.is_empty() {
            let links = &effects.links;
            sqlx::query(INSERT_LINKS)
                .bind(
                    links
                        .iter()
                        .map(|link| link.journey_loop.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    links
                        .iter()
                        .map(|link| link.account_loop.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(links.iter().map(|link| link.at).collect::<Vec<_>>())
                .execute(&mut *transaction)
                .await?;
        }

        let mut gone = Vec::new();
        let (mut set_keys, mut set_dues, mut set_records) = (Vec::new(), Vec::new(), Vec::new());
        for (key, timer) in &effects.account_timers {
            match timer {
                None => gone.push(key.as_str()),
                Some(timer) => {
                    set_keys.push(key.as_str());
                    set_dues.push(timer.due);
                    set_records.push(to_json(timer, "timer")?);
                }
            }
        }
        if !gone.is_empty() {
            sqlx::query(DELETE_ACCOUNT_TIMERS)
                .bind(gone)
                .execute(&mut *transaction)
                .await?;
        }
        if !set_keys.is_empty() {
            sqlx::query(UPSERT_ACCOUNT_TIMERS)
                .bind(set_keys)
                .bind(set_dues)
                .bind(set_records)
                .execute(&mut *transaction)
                .await?;
        }

        if !effects.metric_series.is_empty() {
            let mut keys = Vec::with_capacity(effects.metric_series.len());
            let mut records = Vec::with_capacity(effects.metric_series.len());
            for series in effects.metric_series.values() {
                keys.push(series.key.as_str());
                records.push(to_json(series, "metric series")?);
            }
            sqlx::query(UPSERT_METRIC_SERIES)
                .bind(keys)
                .bind(records)
                .execute(&mut *transaction)
                .await?;
        }

        if !effects.milestones.is_empty() {
            let milestones = &effects.milestones;
            sqlx::query(INSERT_MILESTONES)
                .bind(
                    milestones
                        .iter()
                        .map(|(account, _, _)| account.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    milestones
                        .iter()
                        .map(|(_, milestone, _)| milestone.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(milestones.iter().map(|(_, _, at)| *at).collect::<Vec<_>>())
                .execute(&mut *transaction)
                .await?;
        }

        if !effects.round_robin.is_empty() {
            let mut cursors = Vec::with_capacity(effects.round_robin.len());
            for cursor in effects.round_robin.values() {
                cursors.push(
                    i64::try_from(*cursor)
                        .map_err(|error| corrupt("round-robin cursor to store", error))?,
                );
            }
            sqlx::query(UPSERT_ROUND_ROBIN)
                .bind(
                    effects
                        .round_robin
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                )
                .bind(cursors)
                .execute(&mut *transaction)
                .await?;
        }

        let failed: Vec<NewDeadLetter> = effects
            .failed
            .iter()
            .map(|entry| NewDeadLetter {
                origin: "processor".to_owned(),
                request_index: Some(entry.seq),
                event_source: Some(entry.source.clone()),
                event_id: Some(entry.id.clone()),
                code: entry.rejection.code.as_str().to_owned(),
                message: entry.rejection.message.clone(),
                payload: entry.payload.clone(),
            })
            .collect();
        insert_dead_letters(&mut transaction, &failed, committed_at).await?;

        if !effects.seen.is_empty() {
            sqlx::query(INSERT_SEEN)
                .bind(committed_at)
                .bind(
                    effects
                        .seen
                        .iter()
                        .map(|(source, _)| storable(source))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    effects
                        .seen
                        .iter()
                        .map(|(_, id)| storable(id))
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *transaction)
                .await?;
        }

        // The log offset means nothing in the distributed mode (it stays 0): there, skipping the
        // row keeps every instance's commit from queueing on it.
        if effects.offset != 0 || effects.source_offsets.is_empty() {
            sqlx::query(UPSERT_PROCESSOR_STATE)
                .bind(PROCESSOR)
                .bind(effects.offset)
                .bind(effects.clock)
                .execute(&mut *transaction)
                .await?;
        }

        // Last, so that the lock that orders outbox ids is held for the shortest time, and taken
        // only after every row lock of the batch (a batch holding it waits for nobody).
        if !effects.outbox.is_empty() {
            let outbox = &effects.outbox;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(OUTBOX_LOCK)
                .execute(&mut *transaction)
                .await?;
            sqlx::query(INSERT_OUTBOX)
                .bind(committed_at)
                .bind(
                    outbox
                        .iter()
                        .map(|event| event.loop_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    outbox
                        .iter()
                        .map(|event| storable(&event.loop_key))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    outbox
                        .iter()
                        .map(|event| event.account_id.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    outbox
                        .iter()
                        .map(|event| event.event.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(outbox.iter().map(|event| event.at).collect::<Vec<_>>())
                .bind(
                    outbox
                        .iter()
                        .map(|event| event.payload.as_str())
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn purge(
        &self,
        cutoff: Millis,
        journey_cutoff: Millis,
    ) -> Result<PurgeCounts, StorageError> {
        let mut transaction = self.pool.begin().await?;
        let offset: i64 =
            sqlx::query_scalar("SELECT offset_seq FROM processor_state WHERE name = $1")
                .bind(PROCESSOR)
                .fetch_optional(&mut *transaction)
                .await?
                .unwrap_or(0);
        let events = sqlx::query("DELETE FROM event_log WHERE seq <= $1 AND received_at < $2")
            .bind(offset)
            .bind(cutoff)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        let dead_letters = sqlx::query("DELETE FROM dead_letters WHERE received_at < $1")
            .bind(cutoff)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        let journey_buckets = sqlx::query("DELETE FROM journey_buckets WHERE start < $1")
            .bind(journey_cutoff)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        for statement in [
            "DELETE FROM journey_account_sets WHERE start < $1",
            "DELETE FROM journey_fired WHERE start < $1",
        ] {
            sqlx::query(statement)
                .bind(journey_cutoff)
                .execute(&mut *transaction)
                .await?;
        }
        sqlx::query("DELETE FROM seen_events WHERE seen_at < $1")
            .bind(cutoff)
            .execute(&mut *transaction)
            .await?;
        // Only what every sink with a cursor has delivered (ids up to the smallest cursor); with no
        // sink at all, nobody relays the outbox and age alone decides.
        let outbox = sqlx::query(
            "DELETE FROM outbox WHERE created_at < $1 AND id <= \
             COALESCE((SELECT MIN(delivered) FROM outbox_sinks), 9223372036854775807)",
        )
        .bind(cutoff)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        Ok(PurgeCounts {
            events,
            dead_letters,
            journey_buckets,
            outbox,
        })
    }

    async fn journey_snapshot(&self, lookback: Millis) -> Result<JourneySnapshot, StorageError> {
        let mut snapshot = JourneySnapshot::default();
        if lookback <= 0 {
            return Ok(snapshot);
        }
        let mut transaction = self.snapshot().await?;
        let newest: Option<Millis> = sqlx::query_scalar("SELECT MAX(start) FROM journey_buckets")
            .fetch_one(&mut *transaction)
            .await?;
        let Some(newest) = newest else {
            return Ok(snapshot);
        };
        let since = newest - lookback;
        // One row per bucket already: the upserts merged every contribution.
        for row in sqlx::query(&format!(
            "SELECT start, stage, tag, touchpoint, {} FROM journey_buckets WHERE start >= $1",
            FIGURE_COLUMNS.join(", ")
        ))
        .bind(since)
        .fetch_all(&mut *transaction)
        .await?
        {
            snapshot
                .buckets
                .push((bucket_from_row(&row)?, figures_from_row(&row)?));
        }
        for row in sqlx::query(
            "SELECT start, stage, tag, touchpoint, account_id FROM journey_accounts WHERE start >= $1",
        )
        .bind(since)
        .fetch_all(&mut *transaction)
        .await?
        {
            let account = account_id(row.try_get("account_id")?, "journey account")?;
            snapshot.accounts.push((bucket_from_row(&row)?, account));
        }
        // Fired markers are keyed by their window's start, which may lie before the grain rows'.
        for row in sqlx::query(
            "SELECT window_name, start, stage, tag, detector FROM journey_fired WHERE start >= $1",
        )
        .bind(since - lookback)
        .fetch_all(&mut *transaction)
        .await?
        {
            let window: &str = row.try_get("window_name")?;
            snapshot.fired.push(FiredRow {
                window: Window::parse(window).ok_or_else(|| corrupt("journey window", window))?,
                start: row.try_get("start")?,
                stage: row.try_get("stage")?,
                tag: row.try_get("tag")?,
                detector: row.try_get("detector")?,
            });
        }
        transaction.commit().await?;
        Ok(snapshot)
    }

    async fn journey_newest_start(&self) -> Result<Option<Millis>, StorageError> {
        Ok(sqlx::query_scalar("SELECT MAX(start) FROM journey_buckets")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn current_journey_loops(&self) -> Result<Vec<LoopRecord>, StorageError> {
        sqlx::query(
            "SELECT DISTINCT ON (key) record FROM loops WHERE key LIKE 'journey:%' \
             ORDER BY key, generation DESC",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(loop_from_row)
        .collect()
    }

    async fn journey_fired_since(&self, since: Millis) -> Result<Vec<FiredRow>, StorageError> {
        let mut fired = Vec::new();
        for row in sqlx::query(
            "SELECT window_name, start, stage, tag, detector FROM journey_fired WHERE start >= $1 \
             ORDER BY window_name, start, stage, tag, detector",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?
        {
            let window: &str = row.try_get("window_name")?;
            fired.push(FiredRow {
                window: Window::parse(window).ok_or_else(|| corrupt("journey window", window))?,
                start: row.try_get("start")?,
                stage: row.try_get("stage")?,
                tag: row.try_get("tag")?,
                detector: row.try_get("detector")?,
            });
        }
        Ok(fired)
    }

    async fn journeys(&self, query: &JourneyQuery) -> Result<Vec<JourneyGroup>, StorageError> {
        let columns = journey_columns(query);
        let names: Vec<&str> = query
            .group_by
            .iter()
            .map(|dimension| match dimension {
                JourneyDimension::Window => "window_start",
                other => other.as_str(),
            })
            .collect();
        let grouping = if names.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {0} ORDER BY {0}", names.join(", "))
        };
        let select = |aggregates: &str| {
            let mut selected = columns.clone();
            selected.push(aggregates.to_owned());
            selected.join(", ")
        };
        let mut transaction = self.snapshot().await?;
        let mut builder: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {} FROM journey_buckets WHERE TRUE",
            select(&figure_sums())
        ));
        push_journey_filters(&mut builder, query);
        builder.push(&grouping);
        let mut groups = Vec::new();
        let mut index: HashMap<GroupKey, usize> = HashMap::new();
        for row in builder.build().fetch_all(&mut *transaction).await? {
            let figures = figures_from_row(&row)?;
            if figures.events == 0 {
                continue;
            }
            let key = group_key(&row, query)?;
            index.insert(key.clone(), groups.len());
            groups.push(JourneyGroup {
                stage: key.0,
                tag: key.1,
                touchpoint: key.2,
                window_start: key.3,
                figures,
                accounts: 0,
            });
        }
        let mut builder: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {} FROM journey_accounts WHERE TRUE",
            select("COUNT(DISTINCT account_id) AS accounts")
        ));
        push_journey_filters(&mut builder, query);
        builder.push(&grouping);
        for row in builder.build().fetch_all(&mut *transaction).await? {
            let key = group_key(&row, query)?;
            if let Some(position) = index.get(&key) {
                let accounts: i64 = row.try_get("accounts")?;
                groups[*position].accounts =
                    u64::try_from(accounts).map_err(|error| corrupt("account count", error))?;
            }
        }
        transaction.commit().await?;
        Ok(groups)
    }

    async fn queues(&self) -> Result<Vec<QueueSummary>, StorageError> {
        let rows = sqlx::query(
            "SELECT queue, state, COUNT(*) AS loops, COUNT(*) FILTER (WHERE breached) AS breached, \
             MIN(opened_at) FILTER (WHERE state IN ('open', 'acknowledged', 'in_progress', 'reopened')) AS oldest \
             FROM loops GROUP BY queue, state ORDER BY queue, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut summaries: Vec<QueueSummary> = Vec::new();
        for row in rows {
            let queue: String = row.try_get("queue")?;
            if summaries.last().is_none_or(|last| last.name != queue) {
                summaries.push(QueueSummary {
                    name: queue,
                    ..QueueSummary::default()
                });
            }
            let Some(summary) = summaries.last_mut() else {
                continue;
            };
            let state: String = row.try_get("state")?;
            let loops: i64 = row.try_get("loops")?;
            let breached: i64 = row.try_get("breached")?;
            summary.counts.insert(state, loops.unsigned_abs());
            summary.breached += breached.unsigned_abs();
            if let Some(oldest) = row.try_get::<Option<i64>, _>("oldest")? {
                summary.oldest_open_at = Some(
                    summary
                        .oldest_open_at
                        .map_or(oldest, |known| known.min(oldest)),
                );
            }
        }
        Ok(summaries)
    }

    async fn loop_timings(
        &self,
        from: Option<Millis>,
        to: Option<Millis>,
    ) -> Result<Vec<LoopTiming>, StorageError> {
        // Columns of their own, written with every upsert of the loop: no record is parsed here.
        let mut builder: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT queue, opened_at, acknowledged_at, closed_at, close_reason, breached, has_sla, \
             recurrence FROM loops WHERE TRUE",
        );
        if let Some(from) = from {
            builder.push(" AND opened_at >= ").push_bind(from);
        }
        if let Some(to) = to {
            builder.push(" AND opened_at < ").push_bind(to);
        }
        let rows = builder.build().fetch_all(&self.pool).await?;
        let mut timings = Vec::with_capacity(rows.len());
        for row in rows {
            let close_reason = row
                .try_get::<Option<&str>, _>("close_reason")?
                .map(|text| CloseReason::parse(text).ok_or_else(|| corrupt("close reason", text)))
                .transpose()?;
            let recurrence: i64 = row.try_get("recurrence")?;
            timings.push(LoopTiming {
                queue: row.try_get("queue")?,
                opened_at: row.try_get("opened_at")?,
                acknowledged_at: row.try_get("acknowledged_at")?,
                closed_at: row.try_get("closed_at")?,
                close_reason,
                breached: row.try_get("breached")?,
                has_sla: row.try_get("has_sla")?,
                recurrence: u32::try_from(recurrence)
                    .map_err(|error| corrupt("loop recurrence", error))?,
            });
        }
        Ok(timings)
    }

    async fn list_loops(&self, filter: &LoopFilter) -> Result<LoopPage, StorageError> {
        let mut builder: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT ordinal, record FROM loops WHERE TRUE");
        if let Some(queue) = &filter.queue {
            builder.push(" AND queue = ").push_bind(queue);
        }
        if let Some(queues) = &filter.queues {
            builder
                .push(" AND queue = ANY(")
                .push_bind(queues)
                .push(")");
        }
        if let Some(state) = &filter.state {
            builder.push(" AND state = ").push_bind(state);
        }
        if let Some(kind) = &filter.kind {
            builder.push(" AND kind = ").push_bind(kind);
        }
        if let Some(account_id) = &filter.account_id {
            builder.push(" AND account_id = ").push_bind(account_id);
        }
        if let Some(tag) = &filter.tag {
            push_tag_filter(&mut builder, tag);
        }
        if let Some(before) = &filter.before {
            builder
                .push(" AND ordinal < (SELECT ordinal FROM loops WHERE id = ")
                .push_bind(before)
                .push(")");
        }
        // One row more than the page tells whether another page follows.
        builder
            .push(" ORDER BY ordinal DESC LIMIT ")
            .push_bind(i64::from(filter.limit) + 1);
        let rows = builder.build().fetch_all(&self.pool).await?;
        let mut loops = Vec::with_capacity(rows.len());
        for row in rows.iter().take(filter.limit as usize) {
            loops.push(loop_from_row(row)?);
        }
        let next = if rows.len() > filter.limit as usize {
            loops.last().map(|record| record.id.clone())
        } else {
            None
        };
        Ok(LoopPage { loops, next })
    }

    async fn loop_detail(&self, id: &str) -> Result<Option<LoopDetail>, StorageError> {
        let mut transaction = self.snapshot().await?;
        let Some(row) = sqlx::query(
            "SELECT record, trace FROM loops LEFT JOIN loop_traces ON loop_traces.loop_id = loops.id \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *transaction)
        .await?
        else {
            return Ok(None);
        };
        let record = loop_from_row(&row)?;
        let trace = row
            .try_get::<Option<&str>, _>("trace")?
            .map(trace_from_stored)
            .transpose()?;
        let history = sqlx::query("SELECT * FROM loop_history WHERE loop_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&mut *transaction)
            .await?
            .iter()
            .map(history_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let evidence =
            sqlx::query("SELECT record FROM loop_evidence WHERE loop_id = $1 ORDER BY ordinal")
                .bind(id)
                .fetch_all(&mut *transaction)
                .await?
                .iter()
                .map(|row| json_column::<EvidenceRow>(row, "record", "evidence"))
                .collect::<Result<Vec<_>, _>>()?;
        let query = match record.kind {
            // Through the journey loops of the account loop's tag (`loops_journey_tag`): every
            // link joins loops of one tag.
            SignalKind::Account => sqlx::query(
                "SELECT loop_links.at AS at, loops.record AS record FROM loops \
                 JOIN loop_links ON loop_links.journey_loop = loops.id AND loop_links.account_loop = $1 \
                 WHERE loops.kind = 'journey' AND loops.tag = $2 ORDER BY loop_links.at, loops.id",
            )
            .bind(&record.id)
            .bind(&record.tag),
            SignalKind::Journey => sqlx::query(
                "SELECT loop_links.at AS at, loops.record AS record FROM loop_links \
                 JOIN loops ON loops.id = loop_links.account_loop \
                 WHERE loop_links.journey_loop = $1 ORDER BY loop_links.at, loops.id",
            )
            .bind(&record.id),
        };
        let links = query
            .fetch_all(&mut *transaction)
            .await?
            .iter()
            .map(|row| Ok(linked(&loop_from_row(row)?, row.try_get("at")?)))
            .collect::<Result<Vec<_>, StorageError>>()?;
        transaction.commit().await?;
        Ok(Some(LoopDetail {
            record,
            trace,
            history,
            evidence,
            links,
        }))
    }

    async fn loop_record(&self, id: &str) -> Result<Option<LoopRecord>, StorageError> {
        sqlx::query("SELECT record FROM loops WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(loop_from_row)
            .transpose()
    }

    async fn account_view(
        &self,
        account_id: &str,
        signal_limit: u32,
    ) -> Result<AccountView, StorageError> {
        let mut transaction = self.snapshot().await?;
        let account = sqlx::query("SELECT record FROM accounts WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *transaction)
            .await?
            .as_ref()
            .map(|row| json_column::<Account>(row, "record", "account"))
            .transpose()?;
        let open_loops = sqlx::query(
            "SELECT record FROM loops WHERE account_id = $1 AND state <> 'closed' \
             ORDER BY priority, opened_at, ordinal",
        )
        .bind(account_id)
        .fetch_all(&mut *transaction)
        .await?
        .iter()
        .map(loop_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        let recent_signals = sqlx::query(
            "SELECT record FROM signals WHERE account_id = $1 ORDER BY time DESC, ordinal DESC LIMIT $2",
        )
        .bind(account_id)
        .bind(i64::from(signal_limit))
        .fetch_all(&mut *transaction)
        .await?
        .iter()
        .map(|row| json_column::<SignalRow>(row, "record", "signal"))
        .collect::<Result<Vec<_>, _>>()?;
        let mut journey: Vec<StageSignals> = Vec::new();
        for row in sqlx::query(
            "SELECT stage, tag, COUNT(*) AS signals, MIN(time) AS first_at, MAX(time) AS last_at \
             FROM signals WHERE account_id = $1 GROUP BY stage, tag ORDER BY stage, tag",
        )
        .bind(account_id)
        .fetch_all(&mut *transaction)
        .await?
        {
            let stage: String = row.try_get("stage")?;
            let tag: String = row.try_get("tag")?;
            let signals = row.try_get::<i64, _>("signals")?.unsigned_abs();
            let (first, last): (Millis, Millis) =
                (row.try_get("first_at")?, row.try_get("last_at")?);
            match journey.last_mut() {
                Some(known) if known.stage == stage => {
                    known.signals += signals;
                    known.tags.insert(tag, signals);
                    known.first_signal_at = known.first_signal_at.min(first);
                    known.last_signal_at = known.last_signal_at.max(last);
                }
                _ => journey.push(StageSignals {
                    stage,
                    signals,
                    tags: BTreeMap::from([(tag, signals)]),
                    first_signal_at: first,
                    last_signal_at: last,
                }),
            }
        }
        transaction.commit().await?;
        journey.sort_by(|a, b| (a.first_signal_at, &a.stage).cmp(&(b.first_signal_at, &b.stage)));
        Ok(AccountView {
            account,
            open_loops,
            recent_signals,
            journey,
        })
    }

    async fn dead_letters(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<DeadLetterRow>, StorageError> {
        let rows =
            sqlx::query("SELECT * FROM dead_letters WHERE id < $1 ORDER BY id DESC LIMIT $2")
                .bind(before.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    async fn export(&self) -> Result<Vec<LoopDetail>, StorageError> {
        let mut transaction = self.snapshot().await?;
        let mut history: HashMap<String, Vec<HistoryRow>> = HashMap::new();
        for row in sqlx::query("SELECT * FROM loop_history ORDER BY loop_id, seq")
            .fetch_all(&mut *transaction)
            .await?
        {
            let entry = history_from_row(&row)?;
            history
                .entry(entry.loop_id.clone())
                .or_default()
                .push(entry);
        }
        let mut evidence: HashMap<String, Vec<EvidenceRow>> = HashMap::new();
        for row in sqlx::query("SELECT record FROM loop_evidence ORDER BY ordinal")
            .fetch_all(&mut *transaction)
            .await?
        {
            let entry: EvidenceRow = json_column(&row, "record", "evidence")?;
            evidence
                .entry(entry.loop_id.clone())
                .or_default()
                .push(entry);
        }
        let links = sqlx::query(EXPORT_LINKS)
            .fetch_all(&mut *transaction)
            .await?
            .iter()
            .map(export_link_from_row)
            .collect::<Result<Vec<_>, StorageError>>()?;
        let loops = sqlx::query(
            "SELECT record, trace FROM loops LEFT JOIN loop_traces ON loop_traces.loop_id = loops.id \
             ORDER BY key, generation",
        )
        .fetch_all(&mut *transaction)
        .await?
        .iter()
        .map(|row| {
            let trace = row
                .try_get::<Option<&str>, _>("trace")?
                .map(trace_from_stored)
                .transpose()?;
            Ok((loop_from_row(row)?, trace))
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
        transaction.commit().await?;
        Ok(export_details(loops, history, evidence, links))
    }

    async fn source_offsets(&self) -> Result<Vec<StoredOffset>, StorageError> {
        let rows = sqlx::query(
            "SELECT topic, partition, next_offset FROM source_offsets ORDER BY topic, partition",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredOffset {
                    topic: row.try_get("topic")?,
                    partition: row.try_get("partition")?,
                    next_offset: row.try_get("next_offset")?,
                })
            })
            .collect()
    }

    async fn seen_events(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<(String, String)>, StorageError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sources: Vec<_> = keys.iter().map(|(source, _)| storable(source)).collect();
        let ids: Vec<_> = keys.iter().map(|(_, id)| storable(id)).collect();
        let rows = sqlx::query(
            "SELECT seen.source, seen.id FROM seen_events AS seen \
             JOIN UNNEST($1::text[], $2::text[]) AS wanted (source, id) \
             ON seen.source = wanted.source AND seen.id = wanted.id",
        )
        .bind(&sources)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("source")?, row.try_get("id")?)))
            .collect()
    }

    async fn outbox_after(&self, after: i64, limit: u32) -> Result<Vec<OutboxRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, created_at, loop_id, loop_key, account_id, event, at, payload FROM outbox \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxRow {
                    id: row.try_get("id")?,
                    created_at: row.try_get("created_at")?,
                    event: OutboxEvent {
                        loop_id: row.try_get("loop_id")?,
                        loop_key: row.try_get("loop_key")?,
                        account_id: row.try_get("account_id")?,
                        event: row.try_get("event")?,
                        at: row.try_get("at")?,
                        payload: row.try_get("payload")?,
                    },
                })
            })
            .collect()
    }

    async fn claim_outbox(
        &self,
        sink: &str,
        holder: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<i64>, StorageError> {
        // One statement: two instances claiming at once queue on the sink's row, and the second
        // sees the first's lease in the WHERE clause (re-checked on the newest row version).
        let delivered: Option<i64> = sqlx::query_scalar(
            "INSERT INTO outbox_sinks (sink, delivered, holder, lease_until) VALUES ($1, 0, $2, $4) \
             ON CONFLICT (sink) DO UPDATE SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until \
             WHERE outbox_sinks.holder = EXCLUDED.holder OR outbox_sinks.lease_until <= $3 \
             RETURNING delivered",
        )
        .bind(sink)
        .bind(holder)
        .bind(now)
        .bind(lease_until)
        .fetch_optional(&self.pool)
        .await?;
        Ok(delivered)
    }

    async fn advance_outbox(
        &self,
        sink: &str,
        holder: &str,
        delivered: i64,
    ) -> Result<(), StorageError> {
        // GREATEST: a cursor never moves back, so purge can trust it.
        let updated = sqlx::query(
            "UPDATE outbox_sinks SET delivered = GREATEST(delivered, $1) WHERE sink = $2 AND holder = $3",
        )
        .bind(delivered)
        .bind(sink)
        .bind(holder)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(fenced_lease(sink, holder));
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_token(&self, token: &NewToken) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, secret_hash, name, scopes, team, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&token.id)
        .bind(&token.secret_hash)
        .bind(&token.name)
        .bind(scopes_text(&token.scopes))
        .bind(&token.team)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRow>, StorageError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE secret_hash = $1"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StorageError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(token_from_row)
        .collect()
    }

    async fn revoke_token(&self, id: &str, at: Millis) -> Result<Option<TokenRow>, StorageError> {
        // One statement: the first revocation time stays, and the row comes back as stored.
        sqlx::query(&format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(at)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_text_replaces_only_the_nul_character() {
        assert_eq!(storable("plain é"), "plain é");
        assert!(matches!(storable("plain"), Cow::Borrowed(_)));
        assert_eq!(storable("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
    }
}
