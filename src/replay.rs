//! `sigloop replay` and `sigloop diff`: the pipeline run on event time over an NDJSON file.
//!
//! A replay writes the file into the log of a fresh database the way the live paths do (events
//! through [`Ingestor::ingest`], operator actions as the same `action` entries the API appends), then
//! drives the pure core over that log with [`BatchClock::EventTime`], in batches of
//! `processor.batch_size`, committing each batch through [`Storage::commit_batch`]. The clock is the
//! largest event time processed so far, so the same file and configuration give the same loops, byte
//! for byte, in `sigloop export`'s canonical form (DESIGN.md, invariant 3).
//!
//! The processor of `sigloop serve` is not reused: it retries failed commits forever and keeps action
//! outcomes only until an HTTP request collects them, where a command should stop at the first error
//! and report every refused action with its line.
//!
//! A diff replays one file under two configurations, each into its own temporary database, and
//! compares the loops by key and generation ([`diff_loops`]).
//!
//! # Action lines
//!
//! A line whose JSON object has a top-level `loop_id` field is an operator action in the form the log
//! stores it ([`ActionRequest`]): `{"loop_id": ..., "action": ..., "actor": ..., "note": ...,
//! "time": millis}`, plus `"reason"` for `close` and `"owner"` for `assign`. CloudEvents attribute
//! names are lower-case letters and digits only, so no event can have that field. Every other line
//! is an event.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::settings::Synchronous;
use crate::config::{Config, ConfigError, ConfigSources};
use crate::decode::{RejectionCode, MAX_TEXT_BYTES};
use crate::domain::MAX_ID_BYTES;
use crate::ingest::{Ingestor, ACTION_SOURCE};
use crate::loops::{Action, CloseReason, LoopRecord, LoopState};
use crate::pipeline::core::{ActionOutcome, ActionRequest, BatchClock, Core, EntryKind};
use crate::pipeline::now_millis;
use crate::storage::{AppendEntry, LoopDetail, SqliteStorage, Storage};
use crate::telemetry::Metrics;

/// Lines appended to the log per transaction while the file is read.
const APPEND_CHUNK: usize = 5_000;

/// The `origin` of dead letters that a replay writes for rejected event lines.
const REPLAY_ORIGIN: &str = "replay";

/// The configuration of `--config DIR`, or the embedded one; `SIGLOOP__` variables apply as usual.
pub fn load_config(dir: Option<&Path>) -> Result<Config, ConfigError> {
    match dir {
        Some(dir) => Config::load(Some(dir), std::env::vars()),
        // Not `./config`: a replay without --config should mean the same thing in every directory.
        None => Config::parse(&ConfigSources::embedded(), std::env::vars()),
    }
}

/// A line of the input that did not take effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineProblem {
    /// 1-based line number in the input file; `None` for a log entry not traced to a line.
    pub line: Option<usize>,
    /// A rejection code (`invalid_json`, `missing_field`, ...) for lines refused before the log;
    /// `loop_not_found` or `illegal_transition` for actions the core refused.
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for LineProblem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(formatter, "line {line}: {}: {}", self.code, self.message),
            None => write!(formatter, "log entry: {}: {}", self.code, self.message),
        }
    }
}

/// What a replay did with its input.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub events_accepted: usize,
    /// Events whose `(source, id)` appeared earlier in the file: they change nothing.
    pub duplicates: usize,
    pub actions_applied: usize,
    /// Lines refused before the log: invalid events and malformed actions.
    pub rejected: Vec<LineProblem>,
    /// Actions that were logged but that the core refused (no such loop, illegal transition).
    pub refused: Vec<LineProblem>,
}

impl ReplayReport {
    pub fn is_clean(&self) -> bool {
        self.rejected.is_empty() && self.refused.is_empty()
    }

    /// One line of counts, for standard error.
    pub fn summary(&self, loops: usize) -> String {
        format!(
            "{} events accepted, {} duplicates, {} rejected lines; {} actions applied, {} refused; {loops} loops",
            self.events_accepted,
            self.duplicates,
            self.rejected.len(),
            self.actions_applied,
            self.refused.len()
        )
    }
}

/// The loops a replay produced, in the export order (key, generation), and its report.
pub struct ReplayOutcome {
    pub loops: Vec<LoopDetail>,
    pub report: ReplayReport,
}

/// Replays `events` under `config` into `db` (a path that must not exist yet) or, without one, into a
/// temporary directory removed afterwards.
pub async fn replay(
    config: &Config,
    events: &Path,
    db: Option<&Path>,
) -> anyhow::Result<ReplayOutcome> {
    let core = Core::new(config).map_err(|problems| ConfigError { problems })?;
    let (directory, path) = match db {
        Some(path) => {
            if path.exists() {
                anyhow::bail!(
                    "{} already exists; a replay writes a fresh database",
                    path.display()
                );
            }
            (None, path.to_owned())
        }
        None => {
            let directory =
                tempfile::tempdir().context("Failed to create a temporary directory")?;
            let path = directory.path().join("replay.db");
            (Some(directory), path)
        }
    };
    let input = std::fs::File::open(events)
        .with_context(|| format!("Failed to open {}", events.display()))?;
    // `normal` rather than the server's `full`: in WAL mode it cannot corrupt the database, and a
    // replay lost to a power cut is simply run again.
    let storage = Arc::new(
        SqliteStorage::open(&path, Synchronous::Normal)
            .await
            .with_context(|| format!("Failed to open the database {}", path.display()))?,
    );
    let result = replay_into(
        &core,
        config,
        storage.clone(),
        std::io::BufReader::new(input),
    )
    .await;
    storage.close().await;
    drop(directory);
    result
}

async fn replay_into(
    core: &Core,
    config: &Config,
    storage: Arc<SqliteStorage>,
    input: impl BufRead,
) -> anyhow::Result<ReplayOutcome> {
    let mut report = ReplayReport::default();
    let action_lines = append_file(storage.clone(), input, &mut report).await?;
    let mut state = crate::pipeline::load_state(storage.as_ref(), core)
        .await
        .context("Failed to load the state of the fresh database")?;
    let batch_size = config.settings.processor.batch_size.max(1);
    loop {
        let entries = storage
            .read_log(state.offset, batch_size)
            .await
            .context("Failed to read the replay log")?;
        if entries.is_empty() {
            break;
        }
        let effects = core.process_batch(&mut state, &entries, BatchClock::EventTime);
        for (seq, outcome) in &effects.action_outcomes {
            let line = action_lines.get(seq).copied();
            match outcome {
                ActionOutcome::Applied { .. } => report.actions_applied += 1,
                ActionOutcome::NotFound => report.refused.push(LineProblem {
                    line,
                    code: "loop_not_found".to_owned(),
                    message: "no current loop with that id (unknown, not opened yet at this \
                              point of the file, or superseded by a newer generation)"
                        .to_owned(),
                }),
                ActionOutcome::Illegal { message } => report.refused.push(LineProblem {
                    line,
                    code: "illegal_transition".to_owned(),
                    message: message.clone(),
                }),
            }
        }
        for failed in &effects.failed {
            report.refused.push(LineProblem {
                line: action_lines.get(&failed.seq).copied(),
                code: failed.rejection.code.as_str().to_owned(),
                message: failed.rejection.message.clone(),
            });
        }
        storage
            .commit_batch(&effects, now_millis())
            .await
            .context("Failed to commit a replayed batch")?;
    }
    let loops = storage
        .export()
        .await
        .context("Failed to read the replayed loops")?;
    Ok(ReplayOutcome { loops, report })
}

/// Appends the file to the log in file order; returns the log sequence number of each action entry
/// with its line, so that the core's verdicts can be reported by line.
async fn append_file(
    storage: Arc<SqliteStorage>,
    input: impl BufRead,
    report: &mut ReplayReport,
) -> anyhow::Result<BTreeMap<i64, usize>> {
    let mut appender = Appender {
        ingestor: Ingestor {
            storage: storage.clone(),
            // Metrics of their own: nobody scrapes a replay, but the ingest path counts as it goes.
            metrics: Arc::new(Metrics::new()),
            appended: Arc::default(),
            producer: None,
        },
        storage,
        events: Vec::new(),
        actions: Vec::new(),
        action_lines: BTreeMap::new(),
    };
    for (index, line) in input.split(b'\n').enumerate() {
        let number = index + 1;
        let mut line = line.context("Failed to read the events file")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if is_action_line(&line) {
            appender.flush_events(report).await?;
            match parse_action_line(&line) {
                Ok(request) => appender
                    .actions
                    .push((number, action_entry(&request, number))),
                Err(problem) => report.rejected.push(LineProblem {
                    line: Some(number),
                    code: problem.0.as_str().to_owned(),
                    message: problem.1,
                }),
            }
            if appender.actions.len() >= APPEND_CHUNK {
                appender.flush_actions(report).await?;
            }
        } else {
            appender.flush_actions(report).await?;
            appender.events.push((number, line));
            if appender.events.len() >= APPEND_CHUNK {
                appender.flush_events(report).await?;
            }
        }
    }
    appender.flush_events(report).await?;
    appender.flush_actions(report).await?;
    Ok(appender.action_lines)
}

/// Lines waiting to be appended. Only one of `events` and `actions` is non-empty at a time, so that
/// the log keeps the file's order.
struct Appender {
    ingestor: Ingestor,
    storage: Arc<SqliteStorage>,
    events: Vec<(usize, Vec<u8>)>,
    actions: Vec<(usize, AppendEntry)>,
    action_lines: BTreeMap<i64, usize>,
}

impl Appender {
    async fn flush_events(&mut self, report: &mut ReplayReport) -> anyhow::Result<()> {
        if self.events.is_empty() {
            return Ok(());
        }
        let items: Vec<&[u8]> = self
            .events
            .iter()
            .map(|(_, line)| line.as_slice())
            .collect();
        let ingested = self
            .ingestor
            .ingest(&items, REPLAY_ORIGIN, now_millis())
            .await
            .context("Failed to append events to the replay log")?;
        report.events_accepted += ingested.accepted;
        report.duplicates += ingested.duplicates;
        for rejected in ingested.rejected {
            report.rejected.push(LineProblem {
                line: Some(self.events[rejected.index].0),
                code: rejected.code.as_str().to_owned(),
                message: rejected.message,
            });
        }
        self.events.clear();
        Ok(())
    }

    async fn flush_actions(&mut self, report: &mut ReplayReport) -> anyhow::Result<()> {
        if self.actions.is_empty() {
            return Ok(());
        }
        let entries: Vec<AppendEntry> = self
            .actions
            .iter()
            .map(|(_, entry)| entry.clone())
            .collect();
        let outcome = self
            .storage
            .append(&entries, &[], now_millis())
            .await
            .context("Failed to append actions to the replay log")?;
        for ((line, _), seq) in self.actions.iter().zip(&outcome.seqs) {
            match seq {
                Some(seq) => {
                    self.action_lines.insert(*seq, *line);
                }
                // Ids carry the line number, so this would take a log that was not empty.
                None => report.duplicates += 1,
            }
        }
        self.actions.clear();
        Ok(())
    }
}

/// True when the line is a JSON object with a top-level `loop_id`: an action, not an event.
pub fn is_action_line(line: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        loop_id: Option<serde::de::IgnoredAny>,
    }
    // The substring test spares events a second parse; the parse keeps a `loop_id` inside `data`
    // (or inside a string) from making an event an action.
    const FIELD: &[u8] = b"\"loop_id\"";
    line.windows(FIELD.len()).any(|window| window == FIELD)
        && serde_json::from_slice::<Probe>(line).is_ok_and(|probe| probe.loop_id.is_some())
}

/// Parses and checks an action line as the API checks an action request; the state machine's
/// verdict comes later, from the core, in log order.
pub fn parse_action_line(line: &[u8]) -> Result<ActionRequest, (RejectionCode, String)> {
    let mut request: ActionRequest = serde_json::from_slice(line).map_err(|error| {
        let code = if error.is_data() {
            RejectionCode::InvalidField
        } else {
            RejectionCode::InvalidJson
        };
        (
            code,
            format!("the action line is not a valid action: {error}"),
        )
    })?;
    let actor = request.actor.trim();
    if actor.is_empty() {
        return Err((
            RejectionCode::MissingField,
            "actor is required: who is acting".to_owned(),
        ));
    }
    if actor.len() > MAX_ID_BYTES {
        return Err((
            RejectionCode::TooLarge,
            "actor must be at most 256 bytes".to_owned(),
        ));
    }
    request.actor = actor.to_owned();
    if request.loop_id.is_empty() || request.loop_id.len() > MAX_ID_BYTES {
        return Err((
            RejectionCode::InvalidField,
            "loop_id must be 1 to 256 bytes".to_owned(),
        ));
    }
    if request
        .note
        .as_ref()
        .is_some_and(|note| note.len() > MAX_TEXT_BYTES)
    {
        return Err((
            RejectionCode::TooLarge,
            "note must be at most 64 KiB".to_owned(),
        ));
    }
    match &request.action {
        Action::Comment
            if request
                .note
                .as_deref()
                .is_none_or(|note| note.trim().is_empty()) =>
        {
            Err((
                RejectionCode::MissingField,
                "comment needs a note".to_owned(),
            ))
        }
        Action::Assign { owner } if owner.trim().is_empty() => Err((
            RejectionCode::MissingField,
            "assign needs an owner".to_owned(),
        )),
        Action::JourneyFixed | Action::Verified | Action::Breach => Err((
            RejectionCode::InvalidField,
            format!(
                "action `{}` is a system action; an action line takes acknowledge, start, resolve, \
                 close, reopen, assign or comment",
                request.action.name()
            ),
        )),
        _ => Ok(request),
    }
}

/// The log entry of an action, as `Ingestor::append_action` builds it for the API, except for the
/// id: the line number, not a random suffix, makes it unique, so a replay's log is reproducible too.
fn action_entry(request: &ActionRequest, line: usize) -> AppendEntry {
    AppendEntry {
        kind: EntryKind::Action,
        source: ACTION_SOURCE.to_owned(),
        id: format!("{}:{}:line-{line}", request.loop_id, request.time),
        event_type: format!("action.{}", request.action.name()),
        event_time: request.time,
        payload: serde_json::to_string(request).expect("actions serialize"),
    }
}

// ---- diff ----

/// A loop only one configuration opens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnlyIn {
    pub key: String,
    pub generation: u32,
    pub id: String,
    pub state: LoopState,
    pub close_reason: Option<CloseReason>,
    pub queue: String,
    pub owner: String,
}

/// A state and close reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ending {
    pub state: LoopState,
    pub close_reason: Option<CloseReason>,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.close_reason {
            Some(reason) => write!(formatter, "{} ({})", self.state.as_str(), reason.as_str()),
            None => formatter.write_str(self.state.as_str()),
        }
    }
}

/// One loop of both configurations whose field differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changed<T> {
    pub key: String,
    pub generation: u32,
    pub id: String,
    pub a: T,
    pub b: T,
}

/// How the loops of configuration B differ from those of configuration A.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoopDiff {
    pub opened_only_by_b: Vec<OnlyIn>,
    pub opened_only_by_a: Vec<OnlyIn>,
    /// A different state or close reason.
    pub closed_differently: Vec<Changed<Ending>>,
    /// A different queue.
    pub rerouted: Vec<Changed<String>>,
    /// A different owner.
    pub reowned: Vec<Changed<String>>,
}

impl LoopDiff {
    pub fn is_empty(&self) -> bool {
        self.opened_only_by_b.is_empty()
            && self.opened_only_by_a.is_empty()
            && self.closed_differently.is_empty()
            && self.rerouted.is_empty()
            && self.reowned.is_empty()
    }

    pub fn counts(&self) -> Value {
        json!({
            "opened_only_by_b": self.opened_only_by_b.len(),
            "opened_only_by_a": self.opened_only_by_a.len(),
            "closed_differently": self.closed_differently.len(),
            "rerouted": self.rerouted.len(),
            "reowned": self.reowned.len(),
        })
    }

    /// One line per difference, sorted by key and generation (a loop can have several lines: it can
    /// be re-routed and re-owned), then a summary line. `loops_a` and `loops_b` count all loops.
    pub fn render_text(&self, loops_a: usize, loops_b: usize) -> String {
        let mut lines: Vec<((&str, u32, u8), String)> = Vec::new();
        let only = |only: &OnlyIn| {
            format!(
                "queue {}, owner {}, {}",
                only.queue,
                only.owner,
                Ending {
                    state: only.state,
                    close_reason: only.close_reason
                }
            )
        };
        for loop_b in &self.opened_only_by_b {
            lines.push((
                (&loop_b.key, loop_b.generation, 0),
                format!("opened only by B: {}", only(loop_b)),
            ));
        }
        for loop_a in &self.opened_only_by_a {
            lines.push((
                (&loop_a.key, loop_a.generation, 1),
                format!("opened only by A: {}", only(loop_a)),
            ));
        }
        for changed in &self.closed_differently {
            lines.push((
                (&changed.key, changed.generation, 2),
                format!("closed differently: A {}, B {}", changed.a, changed.b),
            ));
        }
        for changed in &self.rerouted {
            lines.push((
                (&changed.key, changed.generation, 3),
                format!("re-routed: {} -> {}", changed.a, changed.b),
            ));
        }
        for changed in &self.reowned {
            lines.push((
                (&changed.key, changed.generation, 4),
                format!("re-owned: {} -> {}", changed.a, changed.b),
            ));
        }
        lines.sort();
        let mut text = String::new();
        for ((key, generation, _), line) in &lines {
            text.push_str(&format!("{key} #{generation} {line}\n"));
        }
        text.push_str(&format!(
            "summary: {} opened only by B, {} opened only by A, {} closed differently, {} re-routed, \
             {} re-owned ({loops_a} loops under A, {loops_b} under B)\n",
            self.opened_only_by_b.len(),
            self.opened_only_by_a.len(),
            self.closed_differently.len(),
            self.rerouted.len(),
            self.reowned.len(),
        ));
        text
    }
}

/// Compares two sets of loops by key and generation; each list comes out sorted by them.
pub fn diff_loops<'a>(
    a: impl IntoIterator<Item = &'a LoopRecord>,
    b: impl IntoIterator<Item = &'a LoopRecord>,
) -> LoopDiff {
    let a = by_identity(a);
    let b = by_identity(b);
    let only = |record: &LoopRecord| OnlyIn {
        key: record.key.clone(),
        generation: record.generation,
        id: record.id.clone(),
        state: record.state,
        close_reason: record.close_reason,
        queue: record.queue.clone(),
        owner: record.owner.clone(),
    };
    let ending = |record: &LoopRecord| Ending {
        state: record.state,
        close_reason: record.close_reason,
    };
    let mut diff = LoopDiff::default();
    for (identity, loop_b) in &b {
        let Some(loop_a) = a.get(identity) else {
            diff.opened_only_by_b.push(only(loop_b));
            continue;
        };
        if (loop_a.state, loop_a.close_reason) != (loop_b.state, loop_b.close_reason) {
            diff.closed_differently
                .push(changed(loop_b, ending(loop_a), ending(loop_b)));
        }
        if loop_a.queue != loop_b.queue {
            diff.rerouted
                .push(changed(loop_b, loop_a.queue.clone(), loop_b.queue.clone()));
        }
        if loop_a.owner != loop_b.owner {
            diff.reowned
                .push(changed(loop_b, loop_a.owner.clone(), loop_b.owner.clone()));
        }
    }
    for (identity, loop_a) in &a {
        if !b.contains_key(identity) {
            diff.opened_only_by_a.push(only(loop_a));
        }
    }
    diff
}

fn by_identity<'a>(
    records: impl IntoIterator<Item = &'a LoopRecord>,
) -> BTreeMap<(&'a str, u32), &'a LoopRecord> {
    records
        .into_iter()
        .map(|record| ((record.key.as_str(), record.generation), record))
        .collect()
}

fn changed<T>(record: &LoopRecord, a: T, b: T) -> Changed<T> {
    Changed {
        key: record.key.clone(),
        generation: record.generation,
        id: record.id.clone(),
        a,
        b,
    }
}

/// One side of a diff: where its configuration came from and what its replay did.
pub struct DiffSide {
    pub config_dir: PathBuf,
    pub config_version: String,
    pub loops: usize,
    pub report: ReplayReport,
}

impl DiffSide {
    pub fn to_json(&self) -> Value {
        json!({
            "config": self.config_dir.display().to_string(),
            "config_version": self.config_version,
            "loops": self.loops,
            "events_accepted": self.report.events_accepted,
            "duplicates": self.report.duplicates,
            "rejected_lines": self.report.rejected.len(),
            "actions_applied": self.report.actions_applied,
            "actions_refused": self.report.refused,
        })
    }
}

/// Replays `events` under the configurations of `config_a` and `config_b`, at the same time, each
/// into its own temporary database, and compares the loops.
pub async fn diff(
    events: &Path,
    config_a: &Path,
    config_b: &Path,
) -> anyhow::Result<(DiffSide, DiffSide, LoopDiff)> {
    let side = |dir: &Path| {
        let dir = dir.to_owned();
        let events = events.to_owned();
        async move {
            let config = load_config(Some(&dir))
                .with_context(|| format!("Failed to load the configuration {}", dir.display()))?;
            let outcome = replay(&config, &events, None)
                .await
                .with_context(|| format!("Failed to replay under {}", dir.display()))?;
            anyhow::Ok((dir, config.version, outcome))
        }
    };
    let task_a = tokio::spawn(side(config_a));
    let task_b = tokio::spawn(side(config_b));
    let (dir_a, version_a, outcome_a) = task_a.await.context("The replay under A failed")??;
    let (dir_b, version_b, outcome_b) = task_b.await.context("The replay under B failed")??;
    let diff = diff_loops(
        outcome_a.loops.iter().map(|detail| &detail.record),
        outcome_b.loops.iter().map(|detail| &detail.record),
    );
    let side_a = DiffSide {
        config_dir: dir_a,
        config_version: version_a,
        loops: outcome_a.loops.len(),
        report: outcome_a.report,
    };
    let side_b = DiffSide {
        config_dir: dir_b,
        config_version: version_b,
        loops: outcome_b.loops.len(),
        report: outcome_b.report,
    };
    Ok((side_a, side_b, diff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, generation: u32, queue: &str, owner: &str) -> LoopRecord {
        serde_json::from_value(json!({
            "id": crate::loops::loop_id(key, generation),
            "key": key,
            "generation": generation,
            "kind": "account",
            "account_id": "a-1",
            "tag": "billing.refund",
            "state": "open",
            "close_reason": null,
            "queue": queue,
            "owner": owner,
            "priority": 3,
            "severity": "medium",
            "sla_policy": null,
            "ack_due": null,
            "resolve_due": null,
            "breached": false,
            "opened_at": 0,
            "updated_at": 0,
            "acknowledged_at": null,
            "resolved_at": null,
            "closed_at": null,
            "recurrence": 0,
            "signal_count": 1,
            "first_signal_at": 0,
            "last_signal_at": 0,
            "predecessor": null,
            "watchers": [],
            "config_version": "test",
            "history_len": 1,
        }))
        .expect("a valid loop record")
    }

    #[test]
    fn an_object_with_a_top_level_loop_id_is_an_action_and_nothing_else_is() {
        assert!(is_action_line(
            br#"{"loop_id":"l-1","action":"acknowledge","actor":"ana","note":null,"time":1}"#
        ));
        assert!(!is_action_line(
            br#"{"specversion":"1.0","id":"e-1","data":{"loop_id":"l-1"}}"#
        ));
        assert!(!is_action_line(br#"{"id":"e-1","subject":"\"loop_id\""}"#));
        assert!(!is_action_line(br#"{"loop_id": broken"#));
    }

    #[test]
    fn an_action_line_is_checked_like_an_api_action_request() {
        let close = parse_action_line(
            br#"{"loop_id":"l-1","action":"close","reason":"duplicate","actor":" ana ","note":null,"time":5}"#,
        )
        .expect("a valid close");
        assert_eq!(
            close.action,
            Action::Close {
                reason: CloseReason::Duplicate
            }
        );
        assert_eq!(close.actor, "ana");
        let refused = |line: &[u8]| parse_action_line(line).unwrap_err().0;
        assert_eq!(
            refused(br#"{"loop_id":"l-1","action":"acknowledge","actor":"","time":5}"#),
            RejectionCode::MissingField
        );
        assert_eq!(
            refused(br#"{"loop_id":"l-1","action":"comment","actor":"ana","time":5}"#),
            RejectionCode::MissingField
        );
        assert_eq!(
            refused(br#"{"loop_id":"l-1","action":"breach","actor":"ana","time":5}"#),
            RejectionCode::InvalidField
        );
        assert_eq!(
            refused(br#"{"loop_id":"l-1","action":"dance","actor":"ana","time":5}"#),
            RejectionCode::InvalidField
        );
    }

    #[test]
    fn loops_are_matched_by_key_and_generation_and_each_difference_is_listed_once() {
        let a = [
            record("account:a-1:billing.refund", 1, "cs-digital", "hugo"),
            record("account:a-2:billing.refund", 1, "cs-digital", "ines"),
            record("account:a-3:churn.intent", 1, "cs-retention", "ana"),
        ];
        let mut closed = record("account:a-3:churn.intent", 1, "cs-mid-market", "ana");
        closed.state = LoopState::Closed;
        closed.close_reason = Some(CloseReason::WontFix);
        let b = [
            record("account:a-1:billing.refund", 1, "cs-digital", "hugo"),
            record("account:a-1:billing.refund", 2, "cs-digital", "hugo"),
            closed,
        ];
        let diff = diff_loops(&a, &b);
        assert_eq!(diff.opened_only_by_b.len(), 1);
        assert_eq!(diff.opened_only_by_b[0].generation, 2);
        assert_eq!(diff.opened_only_by_a.len(), 1);
        assert_eq!(diff.opened_only_by_a[0].key, "account:a-2:billing.refund");
        assert_eq!(diff.rerouted.len(), 1);
        assert_eq!(diff.rerouted[0].b, "cs-mid-market");
        assert!(diff.reowned.is_empty());
        assert_eq!(
            diff.closed_differently[0].b.to_string(),
            "closed (wont_fix)"
        );
        assert_eq!(
            diff.render_text(3, 3),
            "account:a-1:billing.refund #2 opened only by B: queue cs-digital, owner hugo, open\n\
             account:a-2:billing.refund #1 opened only by A: queue cs-digital, owner ines, open\n\
             account:a-3:churn.intent #1 closed differently: A open, B closed (wont_fix)\n\
             account:a-3:churn.intent #1 re-routed: cs-retention -> cs-mid-market\n\
             summary: 1 opened only by B, 1 opened only by A, 1 closed differently, 1 re-routed, \
             0 re-owned (3 loops under A, 3 under B)\n"
        );
        assert!(diff_loops(&a, &a).is_empty());
    }
}
