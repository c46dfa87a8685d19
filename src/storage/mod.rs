//! The one storage boundary: the only module that speaks SQL.
//!
//! [`Storage`] is what the rest of sigloop sees; `sqlite` implements it for the embedded mode (the
//! PostgreSQL backend of the distributed mode implements the same trait and passes the same
//! conformance suite, `tests/storage_conformance.rs`).

mod postgres;
mod shared;
mod sqlite;

use std::collections::BTreeMap;

use serde::Serialize;

pub use postgres::PostgresStorage;
pub use sqlite::SqliteStorage;

use crate::config::routes::SignalKind;
use crate::config::signals::Window;
use crate::domain::Millis;
use crate::journey::{Figures, FiredRow, FleetFigures, FleetGroup, JourneySnapshot};
use crate::kpi::LoopTiming;
use crate::loops::{EvidenceRow, HistoryRow, LoopRecord, LoopState};
use crate::pipeline::core::{BatchEffects, CoreState, EntryKind, LogEntry, OutboxEvent, SignalRow};
use crate::route::Account;

/// Raw inputs kept with a dead letter are cut to this many bytes.
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    /// Another instance moved on: a partition's stored offset is no longer where the batch started,
    /// or an outbox lease is held by someone else. Nothing of the call was written.
    #[error("fenced: {0}")]
    Fenced(String),
}

/// A partition's committed position: the next offset to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// A stored loop event, numbered in commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub created_at: Millis,
    pub event: OutboxEvent,
}

/// One entry to append to the log.
#[derive(Debug, Clone)]
pub struct AppendEntry {
    pub kind: EntryKind,
    pub source: String,
    pub id: String,
    pub event_type: String,
    pub event_time: Millis,
    pub payload: String,
}

/// A rejected input, kept so that nothing is dropped silently.
#[derive(Debug, Clone, Serialize)]
pub struct NewDeadLetter {
    /// Where it came from: `http`, `demo` or `processor`.
    pub origin: String,
    /// Index of the event in its request or file, when known.
    pub request_index: Option<i64>,
    pub event_source: Option<String>,
    pub event_id: Option<String>,
    pub code: String,
    pub message: String,
    pub payload: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterRow {
    pub id: i64,
    pub received_at: Millis,
    #[serde(flatten)]
    pub dead_letter: NewDeadLetter,
}

/// For each appended entry, its log sequence number, or `None` when its (source, id) was already
/// in the log (a duplicate, ignored).
#[derive(Debug, Clone, Default)]
pub struct AppendOutcome {
    pub seqs: Vec<Option<i64>>,
}

#[derive(Debug, Clone, Default)]
pub struct LoopFilter {
    pub queue: Option<String>,
    pub state: Option<String>,
    pub kind: Option<String>,
    pub account_id: Option<String>,
    /// A tag id or dotted prefix.
    pub tag: Option<String>,
    pub limit: u32,
    /// Only loops stored before the loop with this id (pages go from newest to oldest; the cursor
    /// is a loop id, not a row number, so that a page tells nothing of loops the caller does not
    /// see). An id that names no loop gives an empty page.
    pub before: Option<String>,
    /// Only loops on one of these queues (a team's); `None`: any queue, `Some` of none: no loop.
    pub queues: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct LoopPage {
    pub loops: Vec<LoopRecord>,
    /// Pass as `before` to get the next page (the id of the page's last loop); `None` on the last
    /// page.
    pub next: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LoopDetail {
    pub record: LoopRecord,
    pub trace: Option<serde_json::Value>,
    pub history: Vec<HistoryRow>,
    pub evidence: Vec<EvidenceRow>,
    /// Journey loops linked to this account loop, or account loops linked to this journey loop.
    pub links: Vec<LinkedLoop>,
}

/// The other end of a link, with its current state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkedLoop {
    pub loop_id: String,
    pub key: String,
    pub kind: SignalKind,
    pub account_id: Option<String>,
    pub state: LoopState,
    pub queue: String,
    pub owner: String,
    pub linked_at: Millis,
}

/// A dimension of `GET /v1/journeys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JourneyDimension {
    Stage,
    Tag,
    Touchpoint,
    Window,
}

impl JourneyDimension {
    pub const ALL: [JourneyDimension; 4] = [
        JourneyDimension::Stage,
        JourneyDimension::Tag,
        JourneyDimension::Touchpoint,
        JourneyDimension::Window,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JourneyDimension::Stage => "stage",
            JourneyDimension::Tag => "tag",
            JourneyDimension::Touchpoint => "touchpoint",
            JourneyDimension::Window => "window",
        }
    }

    pub fn parse(value: &str) -> Option<JourneyDimension> {
        JourneyDimension::ALL
            .into_iter()
            .find(|dimension| dimension.as_str() == value)
    }
}

/// Which journey figures to add up, and how to group them.
#[derive(Debug, Clone)]
pub struct JourneyQuery {
    /// The window that `Window` groups by and that `from`/`to` round out to.
    pub window: Window,
    /// Grain rows with a start at or after this (already rounded down to `window`).
    pub from: Option<Millis>,
    /// Grain rows with a start before this (already rounded up to `window`).
    pub to: Option<Millis>,
    pub group_by: Vec<JourneyDimension>,
    pub stage: Option<String>,
    /// A tag id or dotted prefix.
    pub tag: Option<String>,
    pub touchpoint: Option<String>,
}

/// One group of `GET /v1/journeys`: the dimensions grouped by are set, the others `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyGroup {
    pub stage: Option<String>,
    pub tag: Option<String>,
    pub touchpoint: Option<String>,
    pub window_start: Option<Millis>,
    pub figures: Figures,
    /// Distinct accounts, exact: counted over the union of the groups' account sets.
    pub accounts: u64,
}

/// An account's signals at one journey stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSignals {
    pub stage: String,
    pub signals: u64,
    /// Signals per loop tag.
    pub tags: BTreeMap<String, u64>,
    pub first_signal_at: Millis,
    pub last_signal_at: Millis,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueSummary {
    pub name: String,
    pub counts: BTreeMap<String, u64>,
    pub breached: u64,
    /// Opening time of the oldest loop not yet resolved or closed.
    pub oldest_open_at: Option<Millis>,
}

#[derive(Debug, Clone)]
pub struct AccountView {
    pub account: Option<Account>,
    pub open_loops: Vec<LoopRecord>,
    pub recent_signals: Vec<SignalRow>,
    /// The account's journey: its signals by stage, in stage order of first signal.
    pub journey: Vec<StageSignals>,
}

/// An API token to store. Only the hash of its secret comes here: the secret itself never reaches
/// storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub id: String,
    /// Hex SHA-256 of the secret; requests are matched by looking it up.
    pub secret_hash: String,
    /// The actor recorded for the token's actions.
    pub name: String,
    /// Scope names (`ingest`, `read`, `act`, `admin`); storage keeps them as given, in order.
    pub scopes: Vec<String>,
    /// The one team whose queues and loops the token sees; `None`: every team.
    pub team: Option<String>,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
}

/// A stored API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub token: NewToken,
    pub revoked_at: Option<Millis>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurgeCounts {
    pub events: u64,
    pub dead_letters: u64,
    pub journey_buckets: u64,
    pub outbox: u64,
}

/// Everything sigloop stores. Each method is one transaction.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Appends entries and dead letters in one durable transaction; returns only after the commit.
    async fn append(
        &self,
        entries: &[AppendEntry],
        dead_letters: &[NewDeadLetter],
        received_at: Millis,
    ) -> Result<AppendOutcome, StorageError>;

    /// Log entries after `after`, in order, at most `limit`.
    async fn read_log(&self, after: i64, limit: usize) -> Result<Vec<LogEntry>, StorageError>;

    /// The highest sequence number in the log (0 for an empty log).
    async fn log_head(&self) -> Result<i64, StorageError>;

    /// The processor's committed state (with the newest generation of each loop key).
    async fn load_state(&self) -> Result<CoreState, StorageError>;

    /// Commits one batch's effects and the processor's new offset together, with the batch's
    /// outbox events (numbered after every committed one) and its Kafka offset advances. An advance
    /// whose `from` is not the stored position fails the whole call with [`StorageError::Fenced`].
    async fn commit_batch(
        &self,
        effects: &BatchEffects,
        committed_at: Millis,
    ) -> Result<(), StorageError>;

    /// Deletes processed log entries, dead letters and seen-event ids received before `cutoff`,
    /// journey buckets
    /// (with their account sets and fired markers) whose window started before `journey_cutoff`, and
    /// outbox events created before `cutoff` that every sink with a cursor has delivered (all of
    /// them when no sink has one).
    async fn purge(
        &self,
        cutoff: Millis,
        journey_cutoff: Millis,
    ) -> Result<PurgeCounts, StorageError>;

    /// The stored journey rows with a grain start at most `lookback` before the newest one, from which
    /// the core rebuilds its journey detector state.
    async fn journey_snapshot(&self, lookback: Millis) -> Result<JourneySnapshot, StorageError>;

    /// Journey figures added up over the query's range and grouped by its dimensions, ordered by them.
    async fn journeys(&self, query: &JourneyQuery) -> Result<Vec<JourneyGroup>, StorageError>;

    /// The newest grain start of the stored journey buckets (`None` when there are none).
    async fn journey_newest_start(&self) -> Result<Option<Millis>, StorageError>;

    /// The fired markers of windows starting at or after `since`.
    async fn journey_fired_since(&self, since: Millis) -> Result<Vec<FiredRow>, StorageError>;

    /// The newest generation of every journey loop, in key order.
    async fn current_journey_loops(&self) -> Result<Vec<LoopRecord>, StorageError>;

    /// What the distributed mode's journey detectors judge: for each of `windows`, the newest
    /// `judged` windows (the newest being the one of the newest stored grain start) and the one
    /// before them, grouped by stage and tag with exact distinct accounts; their fired markers; and
    /// the journey loops. The markers are read first: a marker written after them is for figures
    /// read after them too.
    async fn journey_fleet(
        &self,
        windows: &[Window],
        judged: i64,
    ) -> Result<FleetFigures, StorageError> {
        let mut fleet = FleetFigures {
            journey_loops: self.current_journey_loops().await?,
            ..FleetFigures::default()
        };
        let Some(newest) = self.journey_newest_start().await? else {
            return Ok(fleet);
        };
        let froms: Vec<Millis> = windows
            .iter()
            .map(|window| window.start(newest) - judged * window.length())
            .collect();
        let Some(&since) = froms.iter().min() else {
            return Ok(fleet);
        };
        fleet.fired = self.journey_fired_since(since).await?;
        for (window, from) in windows.iter().zip(froms) {
            let query = JourneyQuery {
                window: *window,
                from: Some(from),
                to: None,
                group_by: vec![
                    JourneyDimension::Stage,
                    JourneyDimension::Tag,
                    JourneyDimension::Window,
                ],
                stage: None,
                tag: None,
                touchpoint: None,
            };
            for group in self.journeys(&query).await? {
                let (Some(stage), Some(tag), Some(start)) =
                    (group.stage, group.tag, group.window_start)
                else {
                    return Err(StorageError::Corrupt(
                        "a journey group lacks a dimension it was grouped by".to_owned(),
                    ));
                };
                fleet.groups.push(FleetGroup {
                    window: *window,
                    start,
                    stage,
                    tag,
                    figures: group.figures,
                    accounts: group.accounts,
                });
            }
        }
        Ok(fleet)
    }

    async fn queues(&self) -> Result<Vec<QueueSummary>, StorageError>;
    /// What the KPIs need of every loop (every generation) opened at or after `from` and before `to`
    /// (each bound optional), in no particular order.
    async fn loop_timings(
        &self,
        from: Option<Millis>,
        to: Option<Millis>,
    ) -> Result<Vec<LoopTiming>, StorageError>;
    async fn list_loops(&self, filter: &LoopFilter) -> Result<LoopPage, StorageError>;
    async fn loop_detail(&self, id: &str) -> Result<Option<LoopDetail>, StorageError>;
    async fn loop_record(&self, id: &str) -> Result<Option<LoopRecord>, StorageError>;
    async fn account_view(
        &self,
        account_id: &str,
        signal_limit: u32,
    ) -> Result<AccountView, StorageError>;
    async fn dead_letters(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<DeadLetterRow>, StorageError>;
    /// Every loop with its trace, history and evidence, sorted by key and generation.
    async fn export(&self) -> Result<Vec<LoopDetail>, StorageError>;
    /// Of `keys` ((source, id) of events), those a committed batch already stored as seen (its
    /// `seen` rows, kept for the retention period): the distributed mode's duplicate detection.
    async fn seen_events(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<(String, String)>, StorageError>;

    /// Every partition's committed position (the distributed mode's consumer offsets).
    async fn source_offsets(&self) -> Result<Vec<StoredOffset>, StorageError>;

    /// Outbox events with an id above `after`, in id order (which is commit order), at most `limit`.
    async fn outbox_after(&self, after: i64, limit: u32) -> Result<Vec<OutboxRow>, StorageError>;

    /// Takes or renews the lease of the outbox sink `sink` (say `kafka` or `webhook:cs-ops`) for
    /// `holder` until `lease_until`, and returns the id up to which the sink has delivered (0 when
    /// never). `None` when another holder's lease runs past `now`: only one instance relays a sink.
    async fn claim_outbox(
        &self,
        sink: &str,
        holder: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<i64>, StorageError>;

    /// Records that `sink` delivered every event up to `delivered`; [`StorageError::Fenced`] when
    /// `holder` no longer holds its lease.
    async fn advance_outbox(
        &self,
        sink: &str,
        holder: &str,
        delivered: i64,
    ) -> Result<(), StorageError>;

    /// Cheap round trip for readiness.
    async fn ping(&self) -> Result<(), StorageError>;

    /// Stores a new API token (its id and secret hash are new: a repeat of either is an error).
    async fn create_token(&self, token: &NewToken) -> Result<(), StorageError>;

    /// The token whose secret hashes to `secret_hash`, whether or not it is expired or revoked
    /// (the caller judges that at its own time).
    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRow>, StorageError>;

    /// Every token, revoked and expired ones included, oldest first (then by id).
    async fn tokens(&self) -> Result<Vec<TokenRow>, StorageError>;

    /// Marks token `id` revoked at `at` and returns it; a token already revoked keeps its first
    /// revocation time. `None` when there is no such token.
    async fn revoke_token(&self, id: &str, at: Millis) -> Result<Option<TokenRow>, StorageError>;
}

/// Cuts `text` to at most `max` bytes on a char boundary.
pub fn truncate_to(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Creates an empty schema named `prefix` plus a random suffix in the PostgreSQL database at
/// `base_url`, and returns a URL whose connections use it (`options[search_path]`): the benchmark
/// runs each measurement on a database state of its own this way.
pub async fn fresh_postgres_schema(base_url: &str, prefix: &str) -> Result<String, StorageError> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(base_url).await?;
    let schema = format!("{prefix}_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    let separator = if base_url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{base_url}{separator}options[search_path]={schema}"
    ))
}
