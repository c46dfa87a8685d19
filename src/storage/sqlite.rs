//! The SQLite backend of the embedded mode: WAL journal, `synchronous=FULL` by default.
//!
//! Writes go through a pool of one connection, so that appends and batch commits queue for SQLite's
//! single writer instead of failing with SQLITE_BUSY; reads use a separate pool and see the last
//! committed state (WAL lets readers run beside the writer). Multi-row statements keep the per-row
//! cost low: SQLite allows 32,766 bound parameters per statement.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, QueryBuilder, Row, Sqlite};

use super::shared::{
    bucket_from_row, corrupt, export_details, export_link_from_row, fenced_lease, fenced_offset,
    figure_values, figures_from_values, group_key, linked, scopes_text, token_from_row,
    trace_from_stored, GroupKey, EXPORT_LINKS, TOKEN_COLUMNS,
};
use super::{
    AccountView, AppendEntry, AppendOutcome, DeadLetterRow, JourneyDimension, JourneyGroup,
    JourneyQuery, LinkedLoop, LoopDetail, LoopFilter, LoopPage, NewDeadLetter, NewToken, OutboxRow,
    PurgeCounts, QueueSummary, StageSignals, Storage, StorageError, StoredOffset, TokenRow,
    MAX_DEAD_LETTER_PAYLOAD,
};
use crate::config::routes::SignalKind;
use crate::config::settings::Synchronous;
use crate::config::signals::Window;
use crate::detect::time::{AccountTimer, MetricSeries};
use crate::detect::RepeatKey;
use crate::domain::{AccountId, Millis};
use crate::journey::{BucketDelta, BucketKey, Figures, FiredRow, JourneySnapshot};
use crate::kpi::LoopTiming;
use crate::loops::{CloseReason, EvidenceRow, HistoryRow, LinkRow, LoopRecord, LoopState};
use crate::pipeline::core::{BatchEffects, CoreState, EntryKind, LogEntry, OutboxEvent, SignalRow};
use crate::route::Account;

const PROCESSOR: &str = "processor";
/// The row counts of multi-row statements, largest first. A batch's rows go in chunks of these sizes
/// (255 rows: 128, 64, 32, 16, 8, 4, 2, 1), so each statement's text takes one of nine shapes and
/// stays prepared in the connection's statement cache, instead of being parsed and planned again
/// for every batch's new row count (3% fewer instructions in a replay without journeys, callgrind,
/// README). 256 rows of the widest statement (the journey fold's upsert, 15 columns) bind 3,840
/// parameters, well under SQLite's limit of 32,766.
const STATEMENT_ROWS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// Splits `rows` into chunks of `STATEMENT_ROWS` sizes, largest first.
fn statement_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let size = STATEMENT_ROWS
            .into_iter()
            .find(|size| *size <= rest.len())?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

pub struct SqliteStorage {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Journey deltas in `journey_journal` not folded into `journey_buckets` yet: counted at open,
    /// then kept by the commits and purges, which hold this lock for their whole transaction so that
    /// the count follows the journal exactly. It only decides when a commit folds.
    unfolded_deltas: tokio::sync::Mutex<usize>,
}

/// Unfolded journal deltas at which a commit folds the journal into `journey_buckets` and
/// `journey_account_sets`: often enough that queries unpack a small journal, rarely enough that each
/// bucket is rewritten once per many batches.
const FOLD_DELTAS_AT: usize = 8_192;

impl SqliteStorage {
    /// Opens (creating if missing) the database at `path` and runs the migrations.
    pub async fn open(
        path: &Path,
        synchronous: Synchronous,
    ) -> Result<SqliteStorage, StorageError> {
        let synchronous = match synchronous {
            Synchronous::Off => SqliteSynchronous::Off,
            Synchronous::Normal => SqliteSynchronous::Normal,
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Extra => SqliteSynchronous::Extra,
        };
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(30))
            // 8 MiB of page cache for the writer, 4 MiB for each reader (below): the hot index pages
            // fit, and the embedded mode's resident memory stays small (larger caches measured no
            // faster: the writes, not the reads, bound a batch).
            .pragma("cache_size", "-8192")
            .pragma("temp_store", "memory")
            // Checkpoint every ~40 MB of WAL instead of every 4 MB: the hot pages (loop indexes,
            // B-tree interiors) that every batch rewrites are copied to the database once per
            // checkpoint, so fewer checkpoints copy far fewer pages.
            .pragma("wal_autocheckpoint", "10000")
            .disable_statement_logging();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.read_only(true).pragma("cache_size", "-4096"))
            .await?;
        let unfolded: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(json_array_length(deltas)), 0) FROM journey_journal",
        )
        .fetch_one(&writer)
        .await?;
        Ok(SqliteStorage {
            writer,
            reader,
            unfolded_deltas: tokio::sync::Mutex::new(unfolded as usize),
        })
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("storage records serialize")
}

fn loop_from_row(row: &SqliteRow) -> Result<LoopRecord, StorageError> {
    let text: String = row.try_get("record")?;
    serde_json::from_str(&text).map_err(|error| corrupt("loop record", error))
}

fn history_from_row(row: &SqliteRow) -> Result<HistoryRow, StorageError> {
    let state = |value: Option<String>| -> Result<Option<LoopState>, StorageError> {
        value
            .map(|text| LoopState::parse(&text).ok_or_else(|| corrupt("history state", text)))
            .transpose()
    };
    Ok(HistoryRow {
        loop_id: row.try_get("loop_id")?,
        seq: row.try_get::<i64, _>("seq")? as u32,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        from_state: state(row.try_get("from_state")?)?,
        to_state: state(Some(row.try_get("to_state")?))?.expect("some in, some out"),
        reason: row.try_get("reason")?,
    })
}

fn json_from_row<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    what: &str,
) -> Result<T, StorageError> {
    let text: String = row.try_get("record")?;
    serde_json::from_str(&text).map_err(|error| corrupt(what, error))
}

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

/// One delta of a journal row as written: the flat array of migration 0009, `[start, stage, tag,
/// touchpoint, the ten figures in `FIGURE_COLUMNS` order, [account_id, ...]]`.
struct JournalEntry<'a>(&'a BucketDelta);

impl serde::Serialize for JournalEntry<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let BucketDelta {
            key,
            figures,
            accounts,
        } = self.0;
        let mut entry = serializer.serialize_tuple(15)?;
        entry.serialize_element(&key.start)?;
        entry.serialize_element(&key.stage)?;
        entry.serialize_element(&key.tag)?;
        entry.serialize_element(&key.touchpoint)?;
        for value in figure_values(figures) {
            entry.serialize_element(&value)?;
        }
        entry.serialize_element(accounts)?;
        entry.end()
    }
}

/// Reads a journal row's deltas back.
fn journal_deltas(text: &str) -> Result<Vec<(BucketKey, Figures, Vec<String>)>, StorageError> {
    type Flat = (
        Millis,
        String,
        String,
        String,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        Vec<String>,
    );
    let flat: Vec<Flat> =
        serde_json::from_str(text).map_err(|error| corrupt("journey journal", error))?;
    Ok(flat
        .into_iter()
        .map(
            |(start, stage, tag, touchpoint, a, b, c, d, e, f, g, h, i, j, accounts)| {
                let key = BucketKey {
                    start,
                    stage,
                    tag,
                    touchpoint,
                };
                let figures = figures_from_values([a, b, c, d, e, f, g, h, i, j]);
                (key, figures, accounts)
            },
        )
        .collect())
}

/// Adds every journal delta to its bucket's folded row in `journey_buckets`, packs the accounts of
/// each bucket into one `journey_account_sets` row, and empties the journal: all in the caller's
/// transaction, so a fold is whole or absent.
async fn fold_journal(connection: &mut sqlx::SqliteConnection) -> Result<(), StorageError> {
    let texts: Vec<String> = sqlx::query_scalar("SELECT deltas FROM journey_journal ORDER BY seq")
        .fetch_all(&mut *connection)
        .await?;
    // In key order, so that the upserts visit each page of `journey_buckets` once.
    let mut buckets: BTreeMap<BucketKey, (Figures, BTreeSet<String>)> = BTreeMap::new();
    // A row that does not parse fails the fold, and with it every commit until it is mended: sigloop
    // writes these rows itself from typed values, so only a damaged database gets here, and dropping
    // the row would lose its figures silently.
    for text in &texts {
        for (key, figures, accounts) in journal_deltas(text)? {
            let (sum, set) = buckets.entry(key).or_default();
            sum.add(&figures);
            set.extend(accounts);
        }
    }
    let buckets: Vec<_> = buckets.into_iter().collect();
    for chunk in statement_chunks(&buckets) {
        let mut builder: QueryBuilder<Sqlite> =
            QueryBuilder::new(JOURNEY_BUCKETS_UPSERT_HEAD.as_str());
        builder.push_values(chunk, |mut row, (key, (figures, _))| {
            row.push_bind(key.start)
                .push_bind(&key.stage)
                .push_bind(&key.tag)
                .push_bind(&key.touchpoint)
                .push_bind(PROCESSOR);
            for value in figure_values(figures) {
                row.push_bind(value);
            }
        });
        builder.push(JOURNEY_BUCKETS_UPSERT_TAIL.as_str());
        builder.build().execute(&mut *connection).await?;
    }
    let sets: Vec<_> = buckets
        .iter()
        .filter(|(_, (_, accounts))| !accounts.is_empty())
        .collect();
    for chunk in statement_chunks(&sets) {
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO journey_account_sets (start, stage, tag, touchpoint, accounts) ",
        );
        builder.push_values(chunk, |mut row, (key, (_, accounts))| {
            row.push_bind(key.start)
                .push_bind(&key.stage)
                .push_bind(&key.tag)
                .push_bind(&key.touchpoint)
                .push_bind(to_json(accounts));
        });
        builder.build().execute(&mut *connection).await?;
    }
    sqlx::query("DELETE FROM journey_journal")
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// The head of the fold's multi-row upsert into `journey_buckets`; its rows, then the tail, follow.
static JOURNEY_BUCKETS_UPSERT_HEAD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO journey_buckets (start, stage, tag, touchpoint, contributor, {}) ",
        FIGURE_COLUMNS.join(", ")
    )
});

/// Adds the folded figures to the bucket's row when it has one.
static JOURNEY_BUCKETS_UPSERT_TAIL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let additions: Vec<String> = FIGURE_COLUMNS
        .iter()
        .map(|column| format!("{column} = {column} + excluded.{column}"))
        .collect();
    format!(
        " ON CONFLICT (start, stage, tag, touchpoint, contributor) DO UPDATE SET {}",
        additions.join(", ")
    )
});

/// `SUM(events) AS events, ...`: the figures of a group of partial rows.
fn figure_sums() -> String {
    FIGURE_COLUMNS
        .iter()
        .map(|column| format!("SUM({column}) AS {column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the columns named as `FIGURE_COLUMNS` (sums, so possibly NULL on no rows).
fn figures_from_row(row: &SqliteRow) -> Result<Figures, StorageError> {
    let mut values = [0u64; 10];
    for (value, column) in values.iter_mut().zip(FIGURE_COLUMNS) {
        *value = row.try_get::<Option<i64>, _>(column)?.unwrap_or(0) as u64;
    }
    Ok(figures_from_values(values))
}

/// `AND ...` filters of a journey query, shared by the figures and the account sets.
fn push_journey_filters(builder: &mut QueryBuilder<'_, Sqlite>, query: &JourneyQuery) {
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
        // The tag or its dotted descendants, as in `list_loops`.
        builder
            .push(" AND (tag = ")
            .push_bind(tag.clone())
            .push(" OR (tag > ")
            .push_bind(format!("{tag}."))
            .push(" AND tag < ")
            .push_bind(format!("{tag}/"))
            .push("))");
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
            // Window constants come from the `Window` enum, never from the request.
            JourneyDimension::Window => {
                let (length, offset) = (query.window.length(), query.window.offset());
                format!("(((start - {offset}) / {length}) * {length} + {offset}) AS window_start")
            }
        })
        .collect()
}

fn insert_dead_letters<'a>(
    builder: &mut QueryBuilder<'a, Sqlite>,
    dead_letters: impl IntoIterator<Item = &'a NewDeadLetter>,
    received_at: Millis,
) {
    builder.push(
        "INSERT INTO dead_letters (received_at, origin, request_index, event_source, event_id, code, message, payload) ",
    );
    builder.push_values(dead_letters, |mut row, dead_letter| {
        row.push_bind(received_at)
            .push_bind(&dead_letter.origin)
            .push_bind(dead_letter.request_index)
            .push_bind(&dead_letter.event_source)
            .push_bind(&dead_letter.event_id)
            .push_bind(&dead_letter.code)
            .push_bind(&dead_letter.message)
            .push_bind(super::truncate_to(
                &dead_letter.payload,
                MAX_DEAD_LETTER_PAYLOAD,
            ));
    });
}

#[async_trait::async_trait]
impl Storage for SqliteStorage {
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
        let mut transaction = self.writer.begin().await?;
        for chunk in statement_chunks(&offered) {
            let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO event_log (kind, source, id, event_type, event_time, received_at, payload) ",
            );
            builder.push_values(chunk, |mut row, entry| {
                row.push_bind(entry.kind.as_str())
                    .push_bind(&entry.source)
                    .push_bind(&entry.id)
                    .push_bind(&entry.event_type)
                    .push_bind(entry.event_time)
                    .push_bind(received_at)
                    .push_bind(&entry.payload);
            });
            builder.push(" ON CONFLICT (source, id) DO NOTHING RETURNING seq, source, id");
            let rows = builder.build().fetch_all(&mut *transaction).await?;
            for row in rows {
                let seq: i64 = row.try_get(0)?;
                let source: &str = row.try_get(1)?;
                let id: &str = row.try_get(2)?;
                if let Some(index) = first_index.get(&(source, id)) {
                    outcome.seqs[*index] = Some(seq);
                }
            }
        }
        for chunk in statement_chunks(dead_letters) {
            let mut builder = QueryBuilder::new("");
            insert_dead_letters(&mut builder, chunk, received_at);
            builder.build().execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(outcome)
    }

    async fn read_log(&self, after: i64, limit: usize) -> Result<Vec<LogEntry>, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, kind, source, id, payload FROM event_log WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.reader)
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
        // Not sqlite_sequence: a refused duplicate still advances it. An empty log (all purged) means
        // everything appended was processed, so 0 is a safe answer.
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM event_log")
            .fetch_one(&self.reader)
            .await?;
        Ok(head)
    }

    async fn load_state(&self) -> Result<CoreState, StorageError> {
        let mut state = CoreState::default();
        if let Some(row) =
            sqlx::query("SELECT offset_seq, clock FROM processor_state WHERE name = ?")
                .bind(PROCESSOR)
                .fetch_optional(&self.writer)
                .await?
        {
            state.offset = row.try_get("offset_seq")?;
            state.clock = row.try_get("clock")?;
        }
        for row in sqlx::query("SELECT record FROM accounts")
            .fetch_all(&self.writer)
            .await?
        {
            let account: Account = json_from_row(&row, "account")?;
            state.accounts.insert(account.account_id.clone(), account);
        }
        // Only the newest generation of each key: the core never needs superseded ones.
        for row in sqlx::query(
            "SELECT record FROM loops WHERE (key, generation) IN \
             (SELECT key, MAX(generation) FROM loops GROUP BY key)",
        )
        .fetch_all(&self.writer)
        .await?
        {
            state.insert_loop(loop_from_row(&row)?);
        }
        for row in sqlx::query("SELECT record FROM account_timers")
            .fetch_all(&self.writer)
            .await?
        {
            let timer: AccountTimer = json_from_row(&row, "timer")?;
            state.time.timers.insert(timer.key.clone(), timer);
        }
        for row in sqlx::query("SELECT record FROM metric_series")
            .fetch_all(&self.writer)
            .await?
        {
            let series: MetricSeries = json_from_row(&row, "metric series")?;
            state.time.series.insert(series.key.clone(), series);
        }
        for row in sqlx::query("SELECT account_id, milestone FROM account_milestones")
            .fetch_all(&self.writer)
            .await?
        {
            let account_id: String = row.try_get("account_id")?;
            let account_id =
                AccountId::parse(&account_id).map_err(|error| corrupt("milestone", error))?;
            state
                .time
                .milestones
                .insert((account_id, row.try_get("milestone")?));
        }
        state.arm_time_timers();
        for row in sqlx::query("SELECT account_id, tag, times FROM repeat_windows")
            .fetch_all(&self.writer)
            .await?
        {
            let account_id: String = row.try_get("account_id")?;
            let account_id =
                AccountId::parse(&account_id).map_err(|error| corrupt("repeat window", error))?;
            let times: String = row.try_get("times")?;
            let times: Vec<Millis> =
                serde_json::from_str(&times).map_err(|error| corrupt("repeat window", error))?;
            state
                .detectors
                .repeat_tickets
                .insert((account_id, row.try_get("tag")?), times);
        }
        // Links of current journey loops only: superseded generations are not in memory.
        for row in sqlx::query("SELECT journey_loop, account_loop FROM loop_links")
            .fetch_all(&self.writer)
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
            .fetch_all(&self.writer)
            .await?
        {
            let cursor: i64 = row.try_get("cursor")?;
            state
                .router
                .round_robin
                .insert(row.try_get("team")?, cursor as u64);
        }
        Ok(state)
    }

    async fn commit_batch(
        &self,
        effects: &BatchEffects,
        committed_at: Millis,
    ) -> Result<(), StorageError> {
        let mut unfolded_deltas = self.unfolded_deltas.lock().await;
        let mut transaction = self.writer.begin().await?;
        // First, so that a fenced batch stops before writing anything (the transaction rolls back
        // when it is dropped).
        for advance in &effects.source_offsets {
            let applied = match advance.from {
                Some(from) => sqlx::query(
                    "UPDATE source_offsets SET next_offset = ? \
                     WHERE topic = ? AND partition = ? AND next_offset = ?",
                )
                .bind(advance.to)
                .bind(&advance.topic)
                .bind(advance.partition)
                .bind(from),
                None => sqlx::query(
                    "INSERT INTO source_offsets (next_offset, topic, partition) VALUES (?, ?, ?) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(advance.to)
                .bind(&advance.topic)
                .bind(advance.partition),
            }
            .execute(&mut *transaction)
            .await?
            .rows_affected();
            if applied != 1 {
                return Err(fenced_offset(advance));
            }
        }
        let accounts: Vec<&Account> = effects.accounts.values().collect();
        for chunk in statement_chunks(&accounts) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO accounts (account_id, record) ");
            builder.push_values(chunk, |mut row, account| {
                row.push_bind(account.account_id.as_str())
                    .push_bind(to_json(account));
            });
            builder.push(" ON CONFLICT (account_id) DO UPDATE SET record = excluded.record");
            builder.build().execute(&mut *transaction).await?;
        }
        let loops: Vec<&LoopRecord> = effects.loops.values().collect();
        for chunk in statement_chunks(&loops) {
            let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO loops (id, key, generation, kind, account_id, tag, queue, owner, state, priority, \
                 breached, opened_at, updated_at, record) ",
            );
            builder.push_values(chunk, |mut row, record| {
                row.push_bind(&record.id)
                    .push_bind(&record.key)
                    .push_bind(i64::from(record.generation))
                    .push_bind(record.kind.as_str())
                    .push_bind(&record.account_id)
                    .push_bind(&record.tag)
                    .push_bind(&record.queue)
                    .push_bind(&record.owner)
                    .push_bind(record.state.as_str())
                    .push_bind(i64::from(record.priority))
                    .push_bind(record.breached)
                    .push_bind(record.opened_at)
                    .push_bind(record.updated_at)
                    .push_bind(to_json(record));
            });
            builder.push(
                " ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, owner = excluded.owner, \
                 state = excluded.state, priority = excluded.priority, breached = excluded.breached, \
                 updated_at = excluded.updated_at, record = excluded.record",
            );
            builder.build().execute(&mut *transaction).await?;
        }
        for chunk in statement_chunks(&effects.traces) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO loop_traces (loop_id, trace) ");
            builder.push_values(chunk, |mut row, (loop_id, trace)| {
                row.push_bind(loop_id).push_bind(trace);
            });
            builder.build().execute(&mut *transaction).await?;
        }
        // The durability tests kill the process here: half a batch written, nothing committed.
        crate::failpoint::hit("mid_commit");
        for chunk in statement_chunks(&effects.history) {
            let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO loop_history (loop_id, seq, at, actor, action, from_state, to_state, reason) ",
            );
            builder.push_values(chunk, |mut row, history| {
                row.push_bind(&history.loop_id)
                    .push_bind(i64::from(history.seq))
                    .push_bind(history.at)
                    .push_bind(&history.actor)
                    .push_bind(&history.action)
                    .push_bind(history.from_state.map(LoopState::as_str))
                    .push_bind(history.to_state.as_str())
                    .push_bind(&history.reason);
            });
            builder.build().execute(&mut *transaction).await?;
        }
        for chunk in statement_chunks(&effects.evidence) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO loop_evidence (loop_id, record) ");
            builder.push_values(chunk, |mut row, evidence| {
                row.push_bind(&evidence.loop_id)
                    .push_bind(to_json(evidence));
            });
            builder.build().execute(&mut *transaction).await?;
        }
        for chunk in statement_chunks(&effects.signals) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO signals (account_id, time, stage, record) ");
            builder.push_values(chunk, |mut row, signal| {
                row.push_bind(&signal.account_id)
                    .push_bind(signal.time)
                    .push_bind(&signal.stage)
                    .push_bind(to_json(signal));
            });
            builder.build().execute(&mut *transaction).await?;
        }
        let windows: Vec<(&RepeatKey, &Vec<Millis>)> = effects.repeat_windows.iter().collect();
        for chunk in statement_chunks(&windows) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO repeat_windows (account_id, tag, times) ");
            builder.push_values(chunk, |mut row, ((account_id, tag), times)| {
                row.push_bind(account_id.as_str())
                    .push_bind(tag)
                    .push_bind(to_json(times));
            });
            builder.push(" ON CONFLICT (account_id, tag) DO UPDATE SET times = excluded.times");
            builder.build().execute(&mut *transaction).await?;
        }
        // The batch's journey deltas go in one journal row (migration 0009); the fold below adds
        // them to their buckets from time to time.
        if !effects.journey_buckets.is_empty() {
            let entries: Vec<JournalEntry> =
                effects.journey_buckets.iter().map(JournalEntry).collect();
            sqlx::query("INSERT INTO journey_journal (deltas) VALUES (?)")
                .bind(to_json(&entries))
                .execute(&mut *transaction)
                .await?;
        }
        let unfolded = *unfolded_deltas + effects.journey_buckets.len();
        let fold = unfolded >= FOLD_DELTAS_AT;
        if fold {
            fold_journal(&mut transaction).await?;
        }
        for chunk in statement_chunks(&effects.journey_fired) {
            let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO journey_fired (window, start, stage, tag, detector) ",
            );
            builder.push_values(chunk, |mut row, fired| {
                row.push_bind(fired.window.as_str())
                    .push_bind(fired.start)
                    .push_bind(&fired.stage)
                    .push_bind(&fired.tag)
                    .push_bind(&fired.detector);
            });
            builder.push(" ON CONFLICT DO NOTHING");
            builder.build().execute(&mut *transaction).await?;
        }
        for chunk in statement_chunks(&effects.links) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO loop_links (journey_loop, account_loop, at) ");
            builder.push_values(chunk, |mut row, link: &LinkRow| {
                row.push_bind(&link.journey_loop)
                    .push_bind(&link.account_loop)
                    .push_bind(link.at);
            });
            builder.push(" ON CONFLICT DO NOTHING");
            builder.build().execute(&mut *transaction).await?;
        }
        let (set, gone): (Vec<_>, Vec<_>) = effects
            .account_timers
            .iter()
            .partition(|(_, timer)| timer.is_some());
        for chunk in statement_chunks(&gone) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("DELETE FROM account_timers WHERE key IN (");
            let mut keys = builder.separated(", ");
            for (key, _) in chunk {
                keys.push_bind(key.as_str());
            }
            builder.push(")");
            builder.build().execute(&mut *transaction).await?;
        }
        for chunk in statement_chunks(&set) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO account_timers (key, due, record) ");
            builder.push_values(chunk, |mut row, (key, timer)| {
                let timer = timer.as_ref().expect("partitioned");
                row.push_bind(key.as_str())
                    .push_bind(timer.due)
                    .push_bind(to_json(timer));
            });
            builder.push(
                " ON CONFLICT (key) DO UPDATE SET due = excluded.due, record = excluded.record",
            );
            builder.build().execute(&mut *transaction).await?;
        }
        let series: Vec<&MetricSeries> = effects.metric_series.values().collect();
        for chunk in statement_chunks(&series) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO metric_series (key, record) ");
            builder.push_values(chunk, |mut row, series| {
                row.push_bind(series.key.as_str())
                    .push_bind(to_json(series));
            });
            builder.push(" ON CONFLICT (key) DO UPDATE SET record = excluded.record");
            builder.build().execute(&mut *transaction).await?;
        }
        for chunk in statement_chunks(&effects.milestones) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO account_milestones (account_id, milestone, at) ");
            builder.push_values(chunk, |mut row, (account_id, milestone, at)| {
                row.push_bind(account_id.as_str())
                    .push_bind(milestone.as_str())
                    .push_bind(*at);
            });
            builder.push(" ON CONFLICT DO NOTHING");
            builder.build().execute(&mut *transaction).await?;
        }
        for (team, cursor) in &effects.round_robin {
            sqlx::query(
                "INSERT INTO round_robin (team, cursor) VALUES (?, ?) \
                 ON CONFLICT (team) DO UPDATE SET cursor = excluded.cursor",
            )
            .bind(team)
            .bind(*cursor as i64)
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
        for chunk in statement_chunks(&failed) {
            let mut builder = QueryBuilder::new("");
            insert_dead_letters(&mut builder, chunk, committed_at);
            builder.build().execute(&mut *transaction).await?;
        }
        for chunk in statement_chunks(&effects.seen) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO seen_events (source, id, seen_at) ");
            builder.push_values(chunk, |mut row, (source, id)| {
                row.push_bind(source).push_bind(id).push_bind(committed_at);
            });
            builder.push(" ON CONFLICT DO NOTHING");
            builder.build().execute(&mut *transaction).await?;
        }
        // One writer: AUTOINCREMENT hands out ids in commit order with no lock of our own.
        for chunk in statement_chunks(&effects.outbox) {
            let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO outbox (created_at, loop_id, loop_key, account_id, event, at, payload) ",
            );
            builder.push_values(chunk, |mut row, event: &OutboxEvent| {
                row.push_bind(committed_at)
                    .push_bind(&event.loop_id)
                    .push_bind(&event.loop_key)
                    .push_bind(&event.account_id)
                    .push_bind(&event.event)
                    .push_bind(event.at)
                    .push_bind(&event.payload);
            });
            builder.build().execute(&mut *transaction).await?;
        }
        sqlx::query(
            "INSERT INTO processor_state (name, offset_seq, clock) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET offset_seq = excluded.offset_seq, clock = excluded.clock",
        )
        .bind(PROCESSOR)
        .bind(effects.offset)
        .bind(effects.clock)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        *unfolded_deltas = if fold { 0 } else { unfolded };
        Ok(())
    }

    async fn purge(
        &self,
        cutoff: Millis,
        journey_cutoff: Millis,
    ) -> Result<PurgeCounts, StorageError> {
        let mut unfolded_deltas = self.unfolded_deltas.lock().await;
        let mut transaction = self.writer.begin().await?;
        let offset: i64 =
            sqlx::query_scalar("SELECT offset_seq FROM processor_state WHERE name = ?")
                .bind(PROCESSOR)
                .fetch_optional(&mut *transaction)
                .await?
                .unwrap_or(0);
        let events = sqlx::query("DELETE FROM event_log WHERE seq <= ? AND received_at < ?")
            .bind(offset)
            .bind(cutoff)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        let dead_letters = sqlx::query("DELETE FROM dead_letters WHERE received_at < ?")
            .bind(cutoff)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        // The journal's rows mix buckets of every age: folded first, its old buckets go below.
        fold_journal(&mut transaction).await?;
        let journey_buckets = sqlx::query("DELETE FROM journey_buckets WHERE start < ?")
            .bind(journey_cutoff)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        for statement in [
            "DELETE FROM journey_account_sets WHERE start < ?",
            "DELETE FROM journey_fired WHERE start < ?",
        ] {
            sqlx::query(statement)
                .bind(journey_cutoff)
                .execute(&mut *transaction)
                .await?;
        }
        // Only what every sink with a cursor has delivered (ids below the smallest cursor); with no
        // sink at all, nobody relays the outbox and age alone decides.
        sqlx::query("DELETE FROM seen_events WHERE seen_at < ?")
            .bind(cutoff)
            .execute(&mut *transaction)
            .await?;
        let outbox = sqlx::query(
            "DELETE FROM outbox WHERE created_at < ? AND id <= \
             COALESCE((SELECT MIN(delivered) FROM outbox_sinks), 9223372036854775807)",
        )
        .bind(cutoff)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        *unfolded_deltas = 0;
        Ok(PurgeCounts {
            events,
            dead_letters,
            journey_buckets,
            outbox,
        })
    }

    async fn queues(&self) -> Result<Vec<QueueSummary>, StorageError> {
        let rows = sqlx::query(
            "SELECT queue, state, COUNT(*) AS loops, SUM(breached) AS breached, \
             MIN(CASE WHEN state IN ('open', 'acknowledged', 'in_progress', 'reopened') THEN opened_at END) AS oldest \
             FROM loops GROUP BY queue, state ORDER BY queue, state",
        )
        .fetch_all(&self.reader)
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
            let summary = summaries.last_mut().expect("just pushed");
            let state: String = row.try_get("state")?;
            let loops: i64 = row.try_get("loops")?;
            summary.counts.insert(state, loops as u64);
            summary.breached += row.try_get::<Option<i64>, _>("breached")?.unwrap_or(0) as u64;
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
        // The fields without a column of their own come out of the JSON record in SQL, so that no
        // whole record is sent to Rust and parsed there.
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT queue, opened_at, breached, \
             record ->> '$.acknowledged_at' AS acknowledged_at, \
             record ->> '$.closed_at' AS closed_at, \
             record ->> '$.close_reason' AS close_reason, \
             record ->> '$.sla_policy' IS NOT NULL AS has_sla, \
             record ->> '$.recurrence' AS recurrence \
             FROM loops WHERE 1 = 1",
        );
        if let Some(from) = from {
            builder.push(" AND opened_at >= ").push_bind(from);
        }
        if let Some(to) = to {
            builder.push(" AND opened_at < ").push_bind(to);
        }
        let rows = builder.build().fetch_all(&self.reader).await?;
        let mut timings = Vec::with_capacity(rows.len());
        for row in rows {
            let close_reason = row
                .try_get::<Option<String>, _>("close_reason")?
                .map(|text| CloseReason::parse(&text).ok_or_else(|| corrupt("close reason", text)))
                .transpose()?;
            let recurrence: Option<i64> = row.try_get("recurrence")?;
            timings.push(LoopTiming {
                queue: row.try_get("queue")?,
                opened_at: row.try_get("opened_at")?,
                acknowledged_at: row.try_get("acknowledged_at")?,
                closed_at: row.try_get("closed_at")?,
                close_reason,
                breached: row.try_get("breached")?,
                has_sla: row.try_get("has_sla")?,
                recurrence: u32::try_from(recurrence.unwrap_or(0))
                    .map_err(|error| corrupt("loop recurrence", error))?,
            });
        }
        Ok(timings)
    }

    async fn list_loops(&self, filter: &LoopFilter) -> Result<LoopPage, StorageError> {
        let mut builder: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT rowid, record FROM loops WHERE 1 = 1");
        if let Some(queue) = &filter.queue {
            builder.push(" AND queue = ").push_bind(queue);
        }
        if let Some(queues) = &filter.queues {
            if queues.is_empty() {
                builder.push(" AND 0 = 1");
            } else {
                builder.push(" AND queue IN (");
                let mut separated = builder.separated(", ");
                for queue in queues {
                    separated.push_bind(queue);
                }
                builder.push(")");
            }
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
            // The tag itself or its dotted descendants: a byte-wise range (`.` is followed by `/`),
            // case-sensitive like tag ids and served by the tag index, unlike LIKE.
            builder
                .push(" AND (tag = ")
                .push_bind(tag)
                .push(" OR (tag > ")
                .push_bind(format!("{tag}."))
                .push(" AND tag < ")
                .push_bind(format!("{tag}/"))
                .push("))");
        }
        if let Some(before) = &filter.before {
            builder
                .push(" AND rowid < (SELECT rowid FROM loops WHERE id = ")
                .push_bind(before)
                .push(")");
        }
        builder
            .push(" ORDER BY rowid DESC LIMIT ")
            .push_bind(i64::from(filter.limit) + 1);
        let rows = builder.build().fetch_all(&self.reader).await?;
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
        let Some(row) = sqlx::query("SELECT record, trace FROM loops LEFT JOIN loop_traces ON loop_traces.loop_id = loops.id WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
        else {
            return Ok(None);
        };
        let record = loop_from_row(&row)?;
        let trace: Option<String> = row.try_get("trace")?;
        let trace = trace.map(|text| trace_from_stored(&text)).transpose()?;
        let history = sqlx::query("SELECT * FROM loop_history WHERE loop_id = ? ORDER BY seq")
            .bind(id)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(history_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let evidence =
            sqlx::query("SELECT record FROM loop_evidence WHERE loop_id = ? ORDER BY ordinal")
                .bind(id)
                .fetch_all(&self.reader)
                .await?
                .iter()
                .map(|row| json_from_row::<EvidenceRow>(row, "evidence"))
                .collect::<Result<Vec<_>, _>>()?;
        let links = self.links_of(&record).await?;
        Ok(Some(LoopDetail {
            record,
            trace,
            history,
            evidence,
            links,
        }))
    }

    async fn loop_record(&self, id: &str) -> Result<Option<LoopRecord>, StorageError> {
        sqlx::query("SELECT record FROM loops WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
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
        let account = sqlx::query("SELECT record FROM accounts WHERE account_id = ?")
            .bind(account_id)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(|row| json_from_row::<Account>(row, "account"))
            .transpose()?;
        let open_loops = sqlx::query(
            "SELECT record FROM loops WHERE account_id = ? AND state <> 'closed' ORDER BY priority, opened_at",
        )
        .bind(account_id)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(loop_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        let recent_signals = sqlx::query(
            "SELECT record FROM signals WHERE account_id = ? ORDER BY time DESC, ordinal DESC LIMIT ?",
        )
        .bind(account_id)
        .bind(i64::from(signal_limit))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|row| json_from_row::<SignalRow>(row, "signal"))
        .collect::<Result<Vec<_>, _>>()?;
        let mut journey: Vec<StageSignals> = Vec::new();
        for row in sqlx::query(
            "SELECT stage, json_extract(record, '$.tag') AS tag, COUNT(*) AS signals, MIN(time) AS first, \
             MAX(time) AS last FROM signals WHERE account_id = ? GROUP BY stage, tag ORDER BY stage, tag",
        )
        .bind(account_id)
        .fetch_all(&self.reader)
        .await?
        {
            let stage: String = row.try_get("stage")?;
            let tag: String = row.try_get("tag")?;
            let signals = row.try_get::<i64, _>("signals")? as u64;
            let (first, last): (Millis, Millis) = (row.try_get("first")?, row.try_get("last")?);
            if journey.last().is_none_or(|known| known.stage != stage) {
                journey.push(StageSignals {
                    stage: stage.clone(),
                    signals: 0,
                    tags: BTreeMap::new(),
                    first_signal_at: first,
                    last_signal_at: last,
                });
            }
            let entry = journey.last_mut().expect("just pushed");
            entry.signals += signals;
            entry.tags.insert(tag, signals);
            entry.first_signal_at = entry.first_signal_at.min(first);
            entry.last_signal_at = entry.last_signal_at.max(last);
        }
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
        let rows = sqlx::query("SELECT * FROM dead_letters WHERE id < ? ORDER BY id DESC LIMIT ?")
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
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
            })
            .collect()
    }

    async fn export(&self) -> Result<Vec<LoopDetail>, StorageError> {
        let mut history: HashMap<String, Vec<HistoryRow>> = HashMap::new();
        for row in sqlx::query("SELECT * FROM loop_history ORDER BY loop_id, seq")
            .fetch_all(&self.reader)
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
            .fetch_all(&self.reader)
            .await?
        {
            let entry: EvidenceRow = json_from_row(&row, "evidence")?;
            evidence
                .entry(entry.loop_id.clone())
                .or_default()
                .push(entry);
        }
        let links = sqlx::query(EXPORT_LINKS)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(export_link_from_row)
            .collect::<Result<Vec<_>, StorageError>>()?;
        let loops = sqlx::query("SELECT record, trace FROM loops LEFT JOIN loop_traces ON loop_traces.loop_id = loops.id \
             ORDER BY key, generation")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|row| {
                let trace: Option<String> = row.try_get("trace")?;
                Ok((loop_from_row(row)?, trace.map(|text| trace_from_stored(&text)).transpose()?))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok(export_details(loops, history, evidence, links))
    }

    async fn journey_snapshot(&self, lookback: Millis) -> Result<JourneySnapshot, StorageError> {
        let mut snapshot = JourneySnapshot::default();
        if lookback <= 0 {
            return Ok(snapshot);
        }
        let Some(newest) = self.journey_newest_start().await? else {
            return Ok(snapshot);
        };
        let since = newest - lookback;
        for row in sqlx::query(&format!(
            "SELECT start, stage, tag, touchpoint, {} FROM journey_bucket_rows WHERE start >= ? \
             GROUP BY start, stage, tag, touchpoint",
            figure_sums()
        ))
        .bind(since)
        .fetch_all(&self.writer)
        .await?
        {
            snapshot
                .buckets
                .push((bucket_from_row(&row)?, figures_from_row(&row)?));
        }
        for row in sqlx::query(
            "SELECT start, stage, tag, touchpoint, account_id FROM journey_accounts WHERE start >= ?",
        )
        .bind(since)
        .fetch_all(&self.writer)
        .await?
        {
            let account_id: String = row.try_get("account_id")?;
            let account_id =
                AccountId::parse(&account_id).map_err(|error| corrupt("journey account", error))?;
            snapshot.accounts.push((bucket_from_row(&row)?, account_id));
        }
        // Fired markers are keyed by their window's start, which may lie before the grain rows'.
        snapshot.fired = self.journey_fired_since(since - lookback).await?;
        Ok(snapshot)
    }

    async fn journey_newest_start(&self) -> Result<Option<Millis>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT MAX(start) FROM journey_bucket_rows")
                .fetch_one(&self.writer)
                .await?,
        )
    }

    async fn current_journey_loops(&self) -> Result<Vec<LoopRecord>, StorageError> {
        sqlx::query(
            "SELECT record FROM loops WHERE (key, generation) IN \
             (SELECT key, MAX(generation) FROM loops WHERE substr(key, 1, 8) = 'journey:' GROUP BY key) \
             ORDER BY key",
        )
        .fetch_all(&self.writer)
        .await?
        .iter()
        .map(loop_from_row)
        .collect()
    }

    async fn journey_fired_since(&self, since: Millis) -> Result<Vec<FiredRow>, StorageError> {
        let mut fired = Vec::new();
        for row in sqlx::query(
            "SELECT window, start, stage, tag, detector FROM journey_fired WHERE start >= ? \
             ORDER BY window, start, stage, tag, detector",
        )
        .bind(since)
        .fetch_all(&self.writer)
        .await?
        {
            let window: String = row.try_get("window")?;
            fired.push(FiredRow {
                window: Window::parse(&window).ok_or_else(|| corrupt("journey window", &window))?,
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
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {} FROM journey_bucket_rows WHERE 1 = 1",
            select(&figure_sums())
        ));
        push_journey_filters(&mut builder, query);
        builder.push(&grouping);
        let mut groups = Vec::new();
        let mut index: HashMap<GroupKey, usize> = HashMap::new();
        for row in builder.build().fetch_all(&self.reader).await? {
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
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {} FROM journey_accounts WHERE 1 = 1",
            select("COUNT(DISTINCT account_id) AS accounts")
        ));
        push_journey_filters(&mut builder, query);
        builder.push(&grouping);
        for row in builder.build().fetch_all(&self.reader).await? {
            let key = group_key(&row, query)?;
            if let Some(position) = index.get(&key) {
                groups[*position].accounts = row.try_get::<i64, _>("accounts")? as u64;
            }
        }
        Ok(groups)
    }

    async fn source_offsets(&self) -> Result<Vec<StoredOffset>, StorageError> {
        let rows = sqlx::query(
            "SELECT topic, partition, next_offset FROM source_offsets ORDER BY topic, partition",
        )
        .fetch_all(&self.reader)
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
        let mut found = Vec::new();
        for chunk in statement_chunks(keys) {
            let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT source, id FROM seen_events WHERE (source, id) IN (VALUES ",
            );
            let mut values = builder.separated(", ");
            for (source, id) in chunk {
                values.push("(");
                values.push_bind_unseparated(source);
                values.push_unseparated(", ");
                values.push_bind_unseparated(id);
                values.push_unseparated(")");
            }
            builder.push(")");
            let rows = builder.build().fetch_all(&self.reader).await?;
            for row in rows {
                found.push((row.try_get("source")?, row.try_get("id")?));
            }
        }
        Ok(found)
    }

    async fn outbox_after(&self, after: i64, limit: u32) -> Result<Vec<OutboxRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, created_at, loop_id, loop_key, account_id, event, at, payload FROM outbox \
             WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
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
        // One statement, so the check and the take cannot interleave with another claim: the
        // update applies only to the holder's own lease or to one that has run out.
        let delivered: Option<i64> = sqlx::query_scalar(
            "INSERT INTO outbox_sinks (sink, delivered, holder, lease_until) VALUES (?1, 0, ?2, ?4) \
             ON CONFLICT (sink) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
             WHERE outbox_sinks.holder = excluded.holder OR outbox_sinks.lease_until <= ?3 \
             RETURNING delivered",
        )
        .bind(sink)
        .bind(holder)
        .bind(now)
        .bind(lease_until)
        .fetch_optional(&self.writer)
        .await?;
        Ok(delivered)
    }

    async fn advance_outbox(
        &self,
        sink: &str,
        holder: &str,
        delivered: i64,
    ) -> Result<(), StorageError> {
        // MAX: a cursor never moves back, so purge can trust it.
        let updated = sqlx::query(
            "UPDATE outbox_sinks SET delivered = MAX(delivered, ?) WHERE sink = ? AND holder = ?",
        )
        .bind(delivered)
        .bind(sink)
        .bind(holder)
        .execute(&self.writer)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(fenced_lease(sink, holder));
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn create_token(&self, token: &NewToken) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, secret_hash, name, scopes, team, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&token.id)
        .bind(&token.secret_hash)
        .bind(&token.name)
        .bind(scopes_text(&token.scopes))
        .bind(&token.team)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRow>, StorageError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE secret_hash = ?"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StorageError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(token_from_row)
        .collect()
    }

    async fn revoke_token(&self, id: &str, at: Millis) -> Result<Option<TokenRow>, StorageError> {
        // One statement: the first revocation time stays, and the row comes back as stored.
        sqlx::query(&format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(at)
        .bind(id)
        .fetch_optional(&self.writer)
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
    }
}

impl SqliteStorage {
    /// The loops at the other end of `record`'s links, oldest link first.
    async fn links_of(&self, record: &LoopRecord) -> Result<Vec<LinkedLoop>, StorageError> {
        let query = match record.kind {
            // Through the journey loops of the account loop's tag (`loops_journey_tag`): every
            // link joins loops of one tag.
            SignalKind::Account => sqlx::query(
                "SELECT loop_links.at AS at, loops.record AS record FROM loops \
                 JOIN loop_links ON loop_links.journey_loop = loops.id AND loop_links.account_loop = ?1 \
                 WHERE loops.kind = 'journey' AND loops.tag = ?2 ORDER BY loop_links.at, loops.id",
            )
            .bind(&record.id)
            .bind(&record.tag),
            SignalKind::Journey => sqlx::query(
                "SELECT loop_links.at AS at, loops.record AS record FROM loop_links \
                 JOIN loops ON loops.id = loop_links.account_loop \
                 WHERE loop_links.journey_loop = ? ORDER BY loop_links.at, loops.id",
            )
            .bind(&record.id),
        };
        query
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|row| Ok(linked(&loop_from_row(row)?, row.try_get("at")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_chunks_cover_every_row_in_order_in_the_fixed_sizes() {
        for count in [0usize, 1, 3, 255, 256, 257, 1000, 40_000] {
            let rows: Vec<usize> = (0..count).collect();
            let chunks: Vec<&[usize]> = statement_chunks(&rows).collect();
            assert_eq!(chunks.concat(), rows, "{count} rows");
            assert!(
                chunks
                    .iter()
                    .all(|chunk| STATEMENT_ROWS.contains(&chunk.len())),
                "{count} rows"
            );
            // Largest first, so a batch uses as few statements as the sizes allow.
            assert!(chunks.windows(2).all(|pair| pair[0].len() >= pair[1].len()));
        }
        let sizes = |count: usize| -> Vec<usize> {
            let rows = vec![(); count];
            statement_chunks(&rows).map(<[()]>::len).collect()
        };
        assert_eq!(sizes(255), [128, 64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(sizes(600), [256, 256, 64, 16, 8]);
    }
}
