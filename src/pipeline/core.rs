//! The pure core: one batch of log entries in, the batch's effects out.
//!
//! `Core::process_batch` decodes, tags, detects, routes and moves loops through their states over the
//! in-memory [`CoreState`], and describes every change in [`BatchEffects`] for storage to commit in
//! one transaction. It never reads the wall clock or does I/O: time enters as event time and through
//! the [`BatchClock`] the caller passes, so the same log and configuration give the same loops.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::config::routes::{OnBreach, SignalKind};
use crate::config::signals::Severity;
use crate::config::Config;
use crate::decode::{self, Rejection, RejectionCode};
use crate::detect::time::{
    AccountTimer, MetricSeries, TimeDetectors, TimeSignal, TimeState, TimeUpdate,
};
use crate::detect::{DetectorState, Detectors, RepeatKey, Signal};
use crate::domain::{
    format_millis, AccountId, AccountUpserted, Event, EventData, Millis, SurveyKind,
};
use crate::journey::{
    self, BucketDelta, Feed, Figures, FiredRow, FleetFigures, JourneyDetectors, JourneyFigures,
    JourneySnapshot, JourneyState, Observation,
};
use crate::loops::sla::SlaPolicy;
use crate::loops::{
    loop_id, priority_for, transition, Action, CloseReason, EvidenceRow, HistoryRow, LinkRow,
    LoopRecord, LoopState, Task, TimerKind,
};
use crate::route::{Account, RouteDecision, RouteInput, Router, RouterState};
use crate::tag::{Tagger, Tagging};

/// Tag matches kept with a loop's trace and evidence: the best-ranked ones. The primary tag is always
/// first; the long tail of weak matches would only bloat every stored row.
pub const STORED_TAG_MATCHES: usize = 5;

/// The actor of changes the system makes itself.
pub const SYSTEM_ACTOR: &str = "sigloop";

/// How the core tells the time for loop timestamps and deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchClock {
    /// The wall clock, read once for the whole batch by the caller.
    Live(Millis),
    /// The largest event time processed so far.
    EventTime,
}

/// What a log entry holds: an event, or an operator action appended through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Event,
    Action,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Event => "event",
            EntryKind::Action => "action",
        }
    }
}

/// One row of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: i64,
    pub kind: EntryKind,
    pub source: String,
    pub id: String,
    pub payload: String,
}

/// An operator action as it is appended to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub loop_id: String,
    #[serde(flatten)]
    pub action: Action,
    pub actor: String,
    pub note: Option<String>,
    /// Wall-clock time of the request; the event time of the action.
    pub time: Millis,
}

/// What became of an action entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ActionOutcome {
    Applied { state: LoopState },
    NotFound,
    Illegal { message: String },
}

/// Everything the core keeps between batches. Loaded from storage at start-up, mirrored there by
/// every committed batch.
#[derive(Debug, Clone, Default)]
pub struct CoreState {
    pub offset: i64,
    pub clock: Millis,
    pub accounts: HashMap<AccountId, Account>,
    /// The newest generation of every loop key, by id. Superseded generations live only in storage.
    pub loops: HashMap<String, LoopRecord>,
    /// The newest generation's id per loop key.
    pub current: HashMap<String, String>,
    pub detectors: DetectorState,
    pub router: RouterState,
    /// The journey detectors' tracked windows.
    pub journeys: JourneyState,
    /// Account loops linked to each current journey loop, by id.
    pub links: HashMap<String, BTreeSet<String>>,
    /// The account loops in memory by (tag, stage), ids in order: the loops a journey loop of that
    /// tag and stage gathers when it opens, found without scanning every loop. Maintained by
    /// `insert_loop` and `forget_loop`, the only ways loops enter and leave memory.
    pub account_loops: HashMap<(String, Option<String>), BTreeSet<String>>,
    /// Journey account-set rows already written recently (a cache, not committed state).
    pub journey_written: journey::RecentPairs,
    /// Pending loop deadlines: (due, kind, loop id). Derived from the loop records, so it is rebuilt
    /// with them; may hold deadlines a loop no longer has, which are skipped when they come up.
    pub timers: BTreeSet<(Millis, TimerKind, String)>,
    /// The time detectors' pending timers, metric series and milestones reached.
    pub time: TimeState,
    /// Window-close timers of metric series: (due, key), fired on their source's watermark.
    pub window_timers: BTreeSet<(Millis, String)>,
    /// Verifying loops that wait for a survey of their account, by account (may hold loops that
    /// left `verifying`; they are skipped and dropped when met). Rebuilt from the loops at load.
    pub awaiting_survey: HashMap<AccountId, BTreeSet<String>>,
    /// Verifying loops that wait for their usage to recover, by metric series key (as above).
    pub awaiting_recovery: HashMap<String, BTreeSet<String>>,
    /// The largest event time processed per source. In memory only: after a restart it grows back
    /// with the next events, and every window it had passed was already judged.
    pub watermarks: HashMap<String, Millis>,
    /// Distributed mode: the partitions this instance holds. `None` (the embedded mode) owns
    /// everything.
    pub ownership: Option<ownership::Ownership>,
    /// Distributed mode: (source, id) of the events already stored or in flight among those of the
    /// batch about to run, set by the processor before each batch (not committed state).
    pub seen: HashSet<(String, String)>,
}

impl CoreState {
    /// Whether this instance acts for `key` (an account id, or a journey loop's key).
    pub fn owns(&self, key: &str) -> bool {
        self.ownership
            .as_ref()
            .is_none_or(|ownership| ownership.owns(key))
    }
}

impl CoreState {
    pub fn insert_loop(&mut self, record: LoopRecord) {
        let newer = self
            .current
            .get(&record.key)
            .and_then(|id| self.loops.get(id))
            .is_none_or(|current| current.generation <= record.generation);
        if newer {
            self.current.insert(record.key.clone(), record.id.clone());
        }
        let id = record.id.clone();
        if record.kind == SignalKind::Account {
            self.account_loops
                .entry((record.tag.clone(), record.stage.clone()))
                .or_default()
                .insert(id.clone());
        }
        self.loops.insert(id.clone(), record);
        if newer {
            self.arm_timers(&id);
        }
    }

    /// Applies what an event or a timer changed in the time detectors' state, indexes new timers, and
    /// records the changes for storage.
    pub fn apply_time(&mut self, update: TimeUpdate, effects: &mut BatchEffects) {
        if update.is_empty() {
            return;
        }
        self.time.apply(&update);
        for key in update.cancelled {
            effects.account_timers.insert(key, None);
        }
        for timer in update.timers {
            self.timers
                .insert((timer.due, TimerKind::Detector, timer.key.clone()));
            effects
                .account_timers
                .insert(timer.key.clone(), Some(timer));
        }
        for series in update.series {
            if let Some(close) = series.next_close {
                self.window_timers.insert((close, series.key.clone()));
            }
            effects.metric_series.insert(series.key.clone(), series);
        }
        let clock = self.clock;
        effects.milestones.extend(
            update
                .milestones
                .into_iter()
                .map(|(account, milestone)| (account, milestone, clock)),
        );
    }

    /// Indexes every stored time-detector timer, after a load.
    pub fn arm_time_timers(&mut self) {
        for timer in self.time.timers.values() {
            self.timers
                .insert((timer.due, TimerKind::Detector, timer.key.clone()));
        }
        for series in self.time.series.values() {
            if let Some(close) = series.next_close {
                self.window_timers.insert((close, series.key.clone()));
            }
        }
    }

    /// Indexes the pending deadlines of loop `id`.
    pub fn arm_timers(&mut self, id: &str) {
        if let Some(record) = self.loops.get(id) {
            for (due, kind) in record.pending_timers() {
                self.timers.insert((due, kind, id.to_owned()));
            }
        }
    }

    pub fn current_loop(&self, key: &str) -> Option<&LoopRecord> {
        self.current.get(key).and_then(|id| self.loops.get(id))
    }

    /// Forgets a superseded generation (its rows stay in storage).
    fn forget_loop(&mut self, id: &str) {
        if let Some(record) = self.loops.remove(id) {
            let key = (record.tag, record.stage);
            if let Some(ids) = self.account_loops.get_mut(&key) {
                ids.remove(id);
                if ids.is_empty() {
                    self.account_loops.remove(&key);
                }
            }
        }
        self.links.remove(id);
    }
}

/// A signal shown in an account's recent signals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalRow {
    pub account_id: String,
    pub time: Millis,
    pub detector: String,
    pub severity: Severity,
    pub tag: String,
    pub loop_id: String,
    pub event_source: String,
    pub event_id: String,
    pub reason: String,
    /// The journey stage of the event.
    #[serde(default = "unknown_stage")]
    pub stage: String,
}

fn unknown_stage() -> String {
    journey::UNKNOWN.to_owned()
}

/// A log entry the core could not use; it becomes a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedEntry {
    pub seq: i64,
    pub source: String,
    pub id: String,
    pub rejection: Rejection,
    pub payload: String,
}

/// Counters for the batch, turned into metrics by the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchStats {
    pub events: usize,
    /// Distributed mode: events skipped because their (source, id) was already seen.
    pub duplicates: u64,
    pub actions: usize,
    pub tags_applied: BTreeMap<String, u64>,
    pub signals: BTreeMap<String, u64>,
    /// (queue, outcome) -> count, outcome one of opened, joined, reopened, closed.
    pub loop_changes: BTreeMap<(String, &'static str), u64>,
    /// Event time to loop change, in milliseconds on the batch clock, per signal.
    pub event_to_loop_millis: Vec<Millis>,
    /// SLA breaches by the queue the loop was on.
    pub sla_breaches: BTreeMap<String, u64>,
}

/// The changes one batch makes, committed by storage in one transaction with `offset`.
#[derive(Debug, Clone, Default)]
pub struct BatchEffects {
    pub offset: i64,
    pub clock: Millis,
    pub accounts: BTreeMap<AccountId, Account>,
    pub loops: BTreeMap<String, LoopRecord>,
    /// Decision traces of loops opened in this batch, as JSON.
    pub traces: Vec<(String, String)>,
    pub evidence: Vec<EvidenceRow>,
    pub history: Vec<HistoryRow>,
    pub signals: Vec<SignalRow>,
    pub repeat_windows: BTreeMap<RepeatKey, Vec<Millis>>,
    pub round_robin: BTreeMap<String, u64>,
    /// What the batch's events add to the journey buckets at the grain, in the order first fed, with
    /// the accounts seen in each (each pair once per batch, and rarely again later).
    pub journey_buckets: Vec<BucketDelta>,
    /// Where each bucket of the batch is in `journey_buckets`, by (grain start, dimensions digest).
    pub journey_index: FxHashMap<(Millis, u128), usize>,
    pub journey_fired: Vec<FiredRow>,
    pub links: Vec<LinkRow>,
    /// Time-detector timers set (`Some`) or gone (`None`, fired or cancelled), by key.
    pub account_timers: BTreeMap<String, Option<AccountTimer>>,
    /// Metric series as they stand after the batch, by key.
    pub metric_series: BTreeMap<String, MetricSeries>,
    /// Milestones reached: (account, milestone, clock).
    pub milestones: Vec<(AccountId, String, Millis)>,
    pub action_outcomes: Vec<(i64, ActionOutcome)>,
    pub failed: Vec<FailedEntry>,
    /// Loop events for the outbox (Kafka's `sigloop.loops`, webhooks), in the order they happened.
    pub outbox: Vec<OutboxEvent>,
    /// In the distributed mode, how far the batch moves each Kafka partition it read.
    pub source_offsets: Vec<OffsetAdvance>,
    /// In the distributed mode, (source, id) of the batch's new events, stored so that a repeat is
    /// recognised.
    pub seen: Vec<(String, String)>,
    pub stats: BatchStats,
}

/// A batch moves one partition's committed position from `from` (what the batch started from:
/// `None` when nothing was stored) to `to`, the next offset to read. Storage commits it only if the
/// stored position is still `from`, so that an instance that lost the partition cannot overwrite
/// the new owner's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAdvance {
    pub topic: String,
    pub partition: i32,
    pub from: Option<i64>,
    pub to: i64,
}

/// One loop event, as published on the loops topic and to webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEvent {
    pub loop_id: String,
    pub loop_key: String,
    pub account_id: Option<String>,
    /// `opened`, `joined`, `state_changed`, `breached`, `reopened` or `closed`.
    pub event: String,
    pub at: Millis,
    /// The event as JSON.
    pub payload: String,
}

/// The decision trace of a loop: why it is on this queue, with this owner.
#[derive(Debug, Clone, Serialize)]
pub struct Trace<'a> {
    pub event: EventReference<'a>,
    pub primary_tag: &'a str,
    /// The best-ranked tag matches with their evidence (at most [`STORED_TAG_MATCHES`]).
    pub tags: &'a [crate::tag::TagMatch],
    pub tags_matched: usize,
    pub detector: &'a str,
    pub detector_reason: &'a str,
    pub severity: Severity,
    pub route: &'a RouteDecision,
    pub priority: u8,
    pub priority_reason: String,
    pub sla: Option<SlaTrace>,
    /// The journey buckets the event fed, stored compact; storage expands it when reading a trace
    /// (`journey::stored_feed`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "journey::stored_feed::serialize_ref"
    )]
    pub journey: Option<&'a Feed>,
    /// The figures that crossed a journey detector's threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub figures: Option<&'a JourneyFigures>,
    pub config_version: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventReference<'a> {
    pub source: &'a str,
    pub id: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub time: String,
    pub reference: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlaTrace {
    pub policy: String,
    pub ack_within: String,
    pub resolve_within: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<String>,
    pub on_breach: OnBreach,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation_queue: Option<String>,
}

impl SlaTrace {
    fn of(policy: &SlaPolicy) -> SlaTrace {
        SlaTrace {
            policy: policy.name.clone(),
            ack_within: policy.config.ack_within.clone(),
            resolve_within: policy.config.resolve_within.clone(),
            business_hours: policy.config.business_hours.as_ref().map(|hours| {
                format!(
                    "{} {}-{} {}",
                    hours.days.join(","),
                    hours.start,
                    hours.end,
                    hours.time_zone
                )
            }),
            on_breach: policy.on_breach,
            escalation_queue: policy.escalation_queue.clone(),
        }
    }
}

/// The dry-run decision for one event, as `explain` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub event: serde_json::Value,
    pub tags: Tagging,
    /// The journey buckets the event would feed (none for `account.upserted`, or journeys off).
    pub journey: Option<Feed>,
    pub signals: Vec<ExplainedSignal>,
    pub config_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainedSignal {
    pub signal: Signal,
    pub loop_key: String,
    /// open, join or reopen.
    pub outcome: &'static str,
    pub loop_id: String,
    pub queue: String,
    pub owner: String,
    /// `P1` (most urgent) to `P4`.
    pub priority: String,
    /// The routing decision, for a signal that would open a loop.
    pub route: Option<RouteDecision>,
    pub sla: Option<SlaTrace>,
}

/// The compiled configuration: everything the core needs that does not change between batches.
pub struct Core {
    tagger: Tagger,
    detectors: Detectors,
    router: Router,
    reopen_window: Millis,
    raise_for_tiers: Vec<String>,
    sla: BTreeMap<String, SlaPolicy>,
    /// How long a resolved loop waits in `verifying` when its SLA policy says nothing.
    verify_for: Millis,
    /// Detectors that act when time passes.
    time: TimeDetectors,
    /// `None` when journeys are off (`[journeys] enabled = false`).
    journeys: Option<JourneyDetectors>,
    /// The distributed mode: events already seen are skipped here (Kafka, unlike the embedded log,
    /// can deliver an id twice).
    distributed: bool,
    /// Batches carry loop events for the outbox: someone relays them (Kafka, webhooks).
    outbox: bool,
    config_version: String,
}

enum Placement {
    Open {
        generation: u32,
        predecessor: Option<String>,
    },
    Join(String),
    Reopen(String),
}

impl Core {
    pub fn new(config: &Config) -> Result<Core, Vec<String>> {
        let tagger = Tagger::compile(&config.taxonomy)?;
        let mut sla = BTreeMap::new();
        for (name, policy) in &config.routes.sla {
            sla.insert(
                name.clone(),
                SlaPolicy::compile(name, policy).map_err(|error| vec![error])?,
            );
        }
        Ok(Core {
            tagger,
            detectors: Detectors::new(&config.signals),
            router: Router::new(&config.routes, &config.taxonomy),
            reopen_window: config.signals.loops.reopen_window(),
            raise_for_tiers: config.signals.priority.raise_for_tiers.clone(),
            sla,
            verify_for: config.signals.loops.verify_for(),
            time: TimeDetectors::new(&config.signals),
            journeys: config
                .settings
                .journeys
                .enabled
                .then(|| JourneyDetectors::new(&config.signals)),
            distributed: config.settings.kafka.enabled,
            outbox: config.settings.kafka.enabled || !config.settings.webhooks.is_empty(),
            config_version: config.version.clone(),
        })
    }

    pub fn config_version(&self) -> &str {
        &self.config_version
    }

    pub fn tagger(&self) -> &Tagger {
        &self.tagger
    }

    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn journeys(&self) -> Option<&JourneyDetectors> {
        self.journeys.as_ref()
    }

    /// How far back the stored journey rows that rebuild the detector state reach (0 when off, and
    /// in the distributed mode, whose detectors judge the fleet's figures instead).
    pub fn journey_lookback(&self) -> Millis {
        match &self.journeys {
            Some(journeys) if !self.distributed => journeys.lookback(),
            _ => 0,
        }
    }

    /// Whether the distributed mode's fleet evaluation has anything to judge.
    pub fn judges_fleet(&self) -> bool {
        self.distributed
            && self
                .journeys
                .as_ref()
                .is_some_and(|journeys| journeys.names().next().is_some())
    }

    /// The distributed mode: the journey detectors judge the fleet's merged figures (read from
    /// storage, every instance's rows added up) for the journey loop keys this instance owns, so
    /// that a threshold that no instance's share crosses still fires, and fires once. A batch of no
    /// entries: the signals open or join journey loops as of the clock (timers are left to the
    /// batches), with the fleet's figures in their trace. No fired row in the effects: nothing to
    /// commit.
    pub fn judge_fleet(
        &self,
        state: &mut CoreState,
        fleet: &FleetFigures,
        clock: BatchClock,
    ) -> BatchEffects {
        let mut effects = BatchEffects::default();
        if let BatchClock::Live(now) = clock {
            state.clock = state.clock.max(now);
        }
        let now = state.clock;
        // Journey loops owned elsewhere: this instance's copies catch up (an account loop that opens
        // here links to an active one), its account loops that match an active one are linked, and
        // the shipped fix of one reaches the account loops linked to it here. The owner does both as
        // it goes.
        for record in &fleet.journey_loops {
            if !state.owns(&record.key) {
                state.insert_loop(record.clone());
            }
        }
        for record in &fleet.journey_loops {
            if state.owns(&record.key) {
                continue;
            }
            match (record.state, record.resolved_at) {
                (current, _) if current.is_active() => {
                    self.link_accounts(state, &mut effects, &record.id, now);
                }
                (LoopState::Resolved | LoopState::Verifying | LoopState::Closed, Some(fixed)) => {
                    self.journey_fixed(state, &mut effects, &record.id, now.max(fixed));
                }
                _ => {}
            }
        }
        if let Some(journeys) = &self.journeys {
            let mut found = journeys.judge_fleet(fleet, |key| state.owns(key), now);
            found.sort_by_key(|(signal, _)| std::cmp::Reverse(signal.severity));
            for (signal, fired) in found {
                let tagging = Tagging {
                    primary: signal.primary_tag.clone(),
                    matches: Vec::new(),
                };
                let figures = signal
                    .journey
                    .as_deref()
                    .expect("journey signals carry figures");
                let origin = Origin {
                    source: SYSTEM_ACTOR,
                    id: format!(
                        "{}@{}:{}",
                        signal.loop_key(),
                        fired.window.as_str(),
                        format_millis(fired.start)
                    ),
                    event_type: signal.detector_kind,
                    time: now,
                    reference: serde_json::json!({
                        "fleet": {
                            "window": figures.window.as_str(),
                            "start": format_millis(figures.current.start),
                            "stage": figures.stage,
                            "tag": figures.tag,
                        }
                    }),
                    tagging: &tagging,
                };
                *effects
                    .stats
                    .signals
                    .entry(signal.detector.clone())
                    .or_default() += 1;
                effects.journey_fired.push(fired);
                self.apply_signal(state, &origin, None, &signal, now, &mut effects);
            }
        }
        effects.offset = state.offset;
        effects.clock = state.clock;
        if self.outbox {
            effects.outbox = outbox::events(&effects);
        }
        effects
    }

    /// Rebuilds the journey detectors' windows from stored rows, at start-up.
    pub fn restore_journeys(&self, state: &mut CoreState, snapshot: &JourneySnapshot) {
        if let Some(journeys) = &self.journeys {
            state.journeys = journeys.restore(snapshot);
        }
    }

    /// Processes `entries` (in log order) against `state`, updating it and returning the effects.
    pub fn process_batch(
        &self,
        state: &mut CoreState,
        entries: &[LogEntry],
        clock: BatchClock,
    ) -> BatchEffects {
        let mut effects = BatchEffects::default();
        if let BatchClock::Live(now) = clock {
            state.clock = state.clock.max(now);
            self.fire_timers(state, state.clock, &mut effects);
        }
        for entry in entries {
            match entry.kind {
                EntryKind::Event => match decode::decode_event(entry.payload.as_bytes()) {
                    Ok(event)
                        if self.distributed && !first_sighting(state, &event, &mut effects) =>
                    {
                        effects.stats.duplicates += 1;
                    }
                    Ok(event) => {
                        let now = advance_clock(state, clock, event.time);
                        self.fire_timers(state, now, &mut effects);
                        match state.watermarks.get_mut(&event.source) {
                            Some(watermark) => *watermark = (*watermark).max(event.time),
                            None => {
                                state.watermarks.insert(event.source.clone(), event.time);
                            }
                        }
                        self.fire_window_timers(state, &mut effects);
                        effects.stats.events += 1;
                        self.process_event(state, &event, now, &mut effects);
                    }
                    Err(rejection) => effects.failed.push(failed(entry, rejection)),
                },
                EntryKind::Action => match serde_json::from_str::<ActionRequest>(&entry.payload) {
                    Ok(request) => {
                        let now = advance_clock(state, clock, request.time);
                        self.fire_timers(state, now, &mut effects);
                        effects.stats.actions += 1;
                        let outcome = self.apply_action(state, &request, now, &mut effects);
                        effects.action_outcomes.push((entry.seq, outcome));
                    }
                    Err(error) => effects.failed.push(failed(
                        entry,
                        Rejection {
                            code: RejectionCode::InvalidJson,
                            id: Some(entry.id.clone()),
                            message: format!("action entry is not a valid action: {error}"),
                        },
                    )),
                },
            }
            state.offset = entry.seq;
        }
        effects.offset = state.offset;
        effects.clock = state.clock;
        if self.outbox {
            effects.outbox = outbox::events(&effects);
        }
        effects
    }

    /// The earliest pending loop deadline, if any: when the processor should run an empty batch on
    /// the live clock so that it fires without waiting for an event.
    pub fn next_timer(&self, state: &CoreState) -> Option<Millis> {
        state.timers.first().map(|(due, _, _)| *due)
    }

    fn process_event(
        &self,
        state: &mut CoreState,
        event: &Event,
        now: Millis,
        effects: &mut BatchEffects,
    ) {
        if let EventData::AccountUpserted(update) = &event.data {
            let merged = merge_account(state.accounts.get(&update.account_id), update);
            effects
                .accounts
                .insert(merged.account_id.clone(), merged.clone());
            state.accounts.insert(merged.account_id.clone(), merged);
            if !self.time.is_empty() {
                let change = self.time.on_account(
                    &state.accounts[&update.account_id],
                    state.clock,
                    &state.time,
                );
                state.apply_time(change, effects);
            }
            return;
        }
        let tagging = self.tagger.tag(&event.data);
        for tag_match in &tagging.matches {
            *effects
                .stats
                .tags_applied
                .entry(tag_match.tag.clone())
                .or_default() += 1;
        }
        if !state.awaiting_survey.is_empty() {
            self.confirm_by_survey(state, event, now, effects);
        }
        let mut detection = self.detectors.detect(event, &tagging, &state.detectors);
        if !self.time.is_empty() {
            let change = self.time.on_event(event, state.clock, &state.time);
            state.apply_time(change, effects);
        }
        let (feed, mut journey_signals) = match &self.journeys {
            Some(journeys) => {
                let account_signals = !detection.signals.is_empty();
                self.aggregate(journeys, state, event, &tagging, account_signals, effects)
            }
            None => (None, Vec::new()),
        };
        // Several signals of one event usually share a key: the most severe one opens (and routes)
        // the loop, the rest join it, whatever the detectors' order in the configuration. Journey
        // signals go first, so that an account loop opened by the same event links to the journey
        // loop at once.
        journey_signals.sort_by_key(|signal| std::cmp::Reverse(signal.severity));
        detection
            .signals
            .sort_by_key(|signal| std::cmp::Reverse(signal.severity));
        if let Some(update) = detection.repeat_update {
            effects
                .repeat_windows
                .insert(update.key.clone(), update.times.clone());
            state.detectors.apply(update);
        }
        for signal in journey_signals.iter().chain(&detection.signals) {
            *effects
                .stats
                .signals
                .entry(signal.detector.clone())
                .or_default() += 1;
            self.apply_signal(
                state,
                &Origin::event(event, &tagging),
                feed.as_ref(),
                signal,
                now,
                effects,
            );
        }
    }

    /// Adds the event to its journey buckets and runs the journey detectors on the result; returns
    /// the buckets fed when a signal will need them for its trace and evidence.
    fn aggregate(
        &self,
        journeys: &JourneyDetectors,
        state: &mut CoreState,
        event: &Event,
        tagging: &Tagging,
        account_signals: bool,
        effects: &mut BatchEffects,
    ) -> (Option<Feed>, Vec<Signal>) {
        let account = state.accounts.get(event.account_id());
        let observation = Observation::new(event, &tagging.primary, account);
        let index = *effects
            .journey_index
            .entry(observation.bucket_id(journeys.grain()))
            .or_insert_with(|| {
                effects.journey_buckets.push(BucketDelta {
                    key: observation.dims.bucket(journeys.grain(), event.time),
                    figures: Figures::default(),
                    accounts: Vec::new(),
                });
                effects.journey_buckets.len() - 1
            });
        let bucket = &mut effects.journey_buckets[index];
        bucket.figures.add(&observation.delta);
        if state.journey_written.insert(journeys.grain(), &observation) {
            bucket.accounts.push(event.account_id().clone());
        }
        // The distributed mode judges the fleet's figures instead ([`Core::judge_fleet`]): this
        // instance's share of a window would miss what the others saw.
        let signals = if self.distributed {
            Vec::new()
        } else {
            let (signals, fired) = journeys.detect(&state.journeys, &observation);
            journeys.observe(&mut state.journeys, &observation, &fired);
            effects.journey_fired.extend(fired);
            signals
        };
        let feed = (account_signals || !signals.is_empty())
            .then(|| observation.dims.feed(journeys.windows(), event.time));
        (feed, signals)
    }

    fn placement(&self, state: &CoreState, key: &str, now: Millis) -> Placement {
        match state.current_loop(key) {
            None => Placement::Open {
                generation: 1,
                predecessor: None,
            },
            Some(current) => match current.state {
                active if active.is_active() => Placement::Join(current.id.clone()),
                LoopState::Resolved | LoopState::Verifying => Placement::Reopen(current.id.clone()),
                _ => {
                    let recently_verified = current.close_reason == Some(CloseReason::Verified)
                        && current
                            .closed_at
                            .is_some_and(|closed_at| now - closed_at < self.reopen_window);
                    if recently_verified {
                        Placement::Reopen(current.id.clone())
                    } else {
                        Placement::Open {
                            generation: current.generation + 1,
                            predecessor: Some(current.id.clone()),
                        }
                    }
                }
            },
        }
    }

    fn priority(&self, signal: &Signal, account: Option<&Account>) -> (u8, String) {
        let tier = account.and_then(|account| account.tier.as_deref());
        let raised =
            tier.is_some_and(|tier| self.raise_for_tiers.iter().any(|raised| raised == tier));
        let base = priority_for(signal.severity, false);
        let priority = priority_for(signal.severity, raised);
        let severity = signal.severity.as_str();
        let reason = match tier {
            Some(tier) if priority < base => {
                format!("severity {severity} gives P{base}, raised to P{priority} for tier {tier}")
            }
            Some(tier) if raised => {
                format!(
                    "severity {severity} gives P{base}, already the most urgent for tier {tier}"
                )
            }
            _ => format!("severity {severity} gives P{base}"),
        };
        (priority, reason)
    }

    fn route_input<'a>(&self, signal: &'a Signal, account: Option<&'a Account>) -> RouteInput<'a> {
        RouteInput {
            kind: signal.kind,
            tag: &signal.key_tag,
            severity: signal.severity,
            detector: &signal.detector,
            account,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_signal(
        &self,
        state: &mut CoreState,
        origin: &Origin<'_>,
        feed: Option<&Feed>,
        signal: &Signal,
        now: Millis,
        effects: &mut BatchEffects,
    ) {
        let key = signal.loop_key();
        let account = signal
            .account_id
            .as_ref()
            .and_then(|account_id| state.accounts.get(account_id));
        let (priority, priority_reason) = self.priority(signal, account);
        let (loop_id, outcome) = match self.placement(state, &key, now) {
            Placement::Open {
                generation,
                predecessor,
            } => {
                let decision = self
                    .router
                    .route(&self.route_input(signal, account), &state.router);
                state.router.apply(&decision);
                if let Some((team, cursor)) = &decision.round_robin_advance {
                    effects.round_robin.insert(team.clone(), *cursor);
                }
                let id = loop_id(&key, generation);
                let sla = decision
                    .sla_policy
                    .as_ref()
                    .and_then(|name| self.sla.get(name));
                let record = LoopRecord {
                    id: id.clone(),
                    key: key.clone(),
                    generation,
                    kind: signal.kind,
                    account_id: signal.account_id.as_ref().map(AccountId::to_string),
                    tag: signal.key_tag.clone(),
                    state: LoopState::Open,
                    close_reason: None,
                    queue: decision.queue.clone(),
                    owner: decision.owner.clone(),
                    priority,
                    severity: signal.severity,
                    sla_policy: decision.sla_policy.clone(),
                    ack_due: sla.map(|policy| policy.deadline(now, policy.ack_within)),
                    resolve_due: sla.map(|policy| policy.deadline(now, policy.resolve_within)),
                    breached: false,
                    opened_at: now,
                    updated_at: now,
                    acknowledged_at: None,
                    resolved_at: None,
                    closed_at: None,
                    recurrence: 0,
                    signal_count: 0,
                    first_signal_at: signal.time,
                    last_signal_at: signal.time,
                    predecessor,
                    watchers: decision.watchers.clone(),
                    config_version: self.config_version.clone(),
                    history_len: 0,
                    stage: match signal.kind {
                        SignalKind::Journey => signal.stage.clone(),
                        SignalKind::Account => feed.map(|feed| feed.stage.clone()),
                    },
                    journey_loop: None,
                    tasks: Vec::new(),
                    ack_breached_at: None,
                    resolve_breached_at: None,
                    verify_due: None,
                    verify_confirmed_at: None,
                };
                let trace = Trace {
                    event: origin.reference(),
                    primary_tag: &origin.tagging.primary,
                    tags: stored_matches(origin.tagging),
                    tags_matched: origin.tagging.matches.len(),
                    detector: &signal.detector,
                    detector_reason: &signal.reason,
                    severity: signal.severity,
                    route: &decision,
                    priority,
                    priority_reason: priority_reason.clone(),
                    sla: sla.map(SlaTrace::of),
                    journey: feed,
                    figures: signal.journey.as_deref(),
                    config_version: &self.config_version,
                };
                effects.traces.push((
                    id.clone(),
                    serde_json::to_string(&trace).expect("traces serialize"),
                ));
                let predecessor = record.predecessor.clone();
                state.insert_loop(record);
                // A superseded generation is closed for good and read-only (actions go to the newest
                // one), so the core forgets it: memory grows with the number of keys, not with
                // history. Its row stays in storage.
                if let Some(predecessor) = predecessor {
                    state.forget_loop(&predecessor);
                }
                let reason = format!("{}: {}", signal.detector, signal.reason);
                push_history(
                    state,
                    effects,
                    &id,
                    now,
                    SYSTEM_ACTOR,
                    "open",
                    None,
                    Some(reason),
                );
                (id, "opened")
            }
            Placement::Join(id) => {
                let record = state.loops.get_mut(&id).expect("current loops exist");
                let raised = priority < record.priority;
                if raised {
                    record.priority = priority;
                }
                record.updated_at = now;
                let state_now = record.state;
                if raised {
                    let reason = format!(
                        "priority raised to P{priority} by {}: {}",
                        signal.detector, signal.reason
                    );
                    push_history(
                        state,
                        effects,
                        &id,
                        now,
                        SYSTEM_ACTOR,
                        "escalate",
                        Some(state_now),
                        Some(reason),
                    );
                }
                (id, "joined")
            }
            Placement::Reopen(id) => {
                let record = state.loops.get_mut(&id).expect("current loops exist");
                let from = record.state;
                let next = transition(from, &Action::Reopen)
                    .expect("placement reopens only resolved, verifying or closed loops");
                record.apply_transition(&Action::Reopen, next, now);
                self.restart_sla(record, now);
                record.priority = record.priority.min(priority);
                let reason = format!("recurrence: {}: {}", signal.detector, signal.reason);
                push_history(
                    state,
                    effects,
                    &id,
                    now,
                    SYSTEM_ACTOR,
                    "reopen",
                    Some(from),
                    Some(reason),
                );
                state.arm_timers(&id);
                (id, "reopened")
            }
        };
        let record = state.loops.get_mut(&loop_id).expect("placed loops exist");
        record.signal_count += 1;
        record.first_signal_at = record.first_signal_at.min(signal.time);
        record.last_signal_at = record.last_signal_at.max(signal.time);
        let queue = record.queue.clone();
        match signal.kind {
            // A journey loop that opens or reopens gathers the account loops it explains.
            SignalKind::Journey if outcome != "joined" => {
                self.link_accounts(state, effects, &loop_id, now)
            }
            SignalKind::Journey => {}
            SignalKind::Account => {
                // The account loop's own stage (that of the event that opened it), as when a
                // journey loop gathers its account loops: one account loop, one journey key.
                let stage = state.loops[&loop_id]
                    .stage
                    .as_deref()
                    .or(feed.map(|feed| feed.stage.as_str()));
                if let Some(stage) = stage {
                    let journey_key = format!("journey:{stage}:{}", signal.key_tag);
                    let journey_loop = state
                        .current_loop(&journey_key)
                        .filter(|journey| journey.state.is_active())
                        .map(|journey| journey.id.clone());
                    let linked = |journey_loop: &String| {
                        state
                            .links
                            .get(journey_loop)
                            .is_some_and(|linked| linked.contains(&loop_id))
                    };
                    if let Some(journey_loop) = journey_loop.filter(|id| !linked(id)) {
                        link(state, effects, &journey_loop, &loop_id, now);
                    }
                }
            }
        }
        let record = &state.loops[&loop_id];
        effects.loops.insert(loop_id.clone(), record.clone());
        *effects
            .stats
            .loop_changes
            .entry((queue, outcome))
            .or_default() += 1;
        effects.stats.event_to_loop_millis.push(now - origin.time);
        effects.evidence.push(EvidenceRow {
            loop_id: loop_id.clone(),
            at: now,
            event_time: origin.time,
            event_source: origin.source.to_owned(),
            event_id: origin.id.clone(),
            event_type: origin.event_type.to_owned(),
            detector: signal.detector.clone(),
            severity: signal.severity,
            reason: signal.reason.clone(),
            primary_tag: origin.tagging.primary.clone(),
            tags: serde_json::to_value(stored_matches(origin.tagging)).expect("tags serialize"),
            reference: origin.reference.clone(),
            outcome: match outcome {
                "opened" => "open",
                "joined" => "join",
                _ => "reopen",
            }
            .to_owned(),
            journey: feed.cloned(),
        });
        // An account's signals, for its page; a journey signal concerns no single account.
        if let Some(account_id) = &signal.account_id {
            effects.signals.push(SignalRow {
                account_id: account_id.to_string(),
                time: signal.time,
                detector: signal.detector.clone(),
                severity: signal.severity,
                tag: signal.key_tag.clone(),
                loop_id,
                event_source: origin.source.to_owned(),
                event_id: origin.id.clone(),
                reason: signal.reason.clone(),
                stage: feed.map_or_else(unknown_stage, |feed| feed.stage.clone()),
            });
        }
    }

    /// Links every account loop not yet closed whose tag and stage match the journey loop
    /// `journey_id`, in id order.
    fn link_accounts(
        &self,
        state: &mut CoreState,
        effects: &mut BatchEffects,
        journey_id: &str,
        now: Millis,
    ) {
        let journey = &state.loops[journey_id];
        let linked = state.links.get(journey_id);
        let Some(candidates) = state
            .account_loops
            .get(&(journey.tag.clone(), journey.stage.clone()))
        else {
            return;
        };
        // In id order, as the index keeps them.
        let matching: Vec<String> = candidates
            .iter()
            .map(|id| &state.loops[id])
            .filter(|record| {
                // Distributed mode: other instances' account loops are theirs to write.
                record
                    .account_id
                    .as_deref()
                    .is_some_and(|account| state.owns(account))
                    && record.state != LoopState::Closed
                    && record.journey_loop.as_deref() != Some(journey_id)
                    && !linked.is_some_and(|linked| linked.contains(&record.id))
            })
            .map(|record| record.id.clone())
            .collect();
        for account_loop in matching {
            link(state, effects, journey_id, &account_loop, now);
            effects
                .loops
                .insert(account_loop.clone(), state.loops[&account_loop].clone());
        }
    }

    /// The fix of a journey loop shipped: each linked account loop that is not closed gets a
    /// `tell_customer` task for its owner and is resolved (`journey_fixed`), in id order.
    fn journey_fixed(
        &self,
        state: &mut CoreState,
        effects: &mut BatchEffects,
        journey_id: &str,
        now: Millis,
    ) {
        let Some(linked) = state.links.get(journey_id).cloned() else {
            return;
        };
        let journey_key = state.loops[journey_id].key.clone();
        let fixed_at = state.loops[journey_id].resolved_at.unwrap_or(now);
        for account_loop in linked {
            let owned = state.loops.get(&account_loop).is_some_and(|record| {
                record
                    .account_id
                    .as_deref()
                    .is_none_or(|account| state.owns(account))
            });
            if !owned {
                continue;
            }
            let Some(record) = state.loops.get_mut(&account_loop) else {
                continue;
            };
            if record.journey_loop.as_deref() != Some(journey_id) {
                continue;
            }
            // This fix reached the loop already (another instance's copy of the journey loop
            // shows it shipped until it reopens).
            let told = record
                .tasks
                .iter()
                .any(|task| task.journey_loop == journey_id && task.created_at >= fixed_at);
            if told {
                continue;
            }
            let from = record.state;
            let Ok(next) = transition(from, &Action::JourneyFixed) else {
                continue;
            };
            record.apply_transition(&Action::JourneyFixed, next, now);
            let note = format!(
                "the fix of journey loop {journey_id} ({journey_key}) shipped: tell the customer"
            );
            let reason = format!("{note}; task tell_customer for {}", record.owner);
            record.tasks.push(Task {
                kind: "tell_customer".to_owned(),
                owner: record.owner.clone(),
                created_at: now,
                journey_loop: journey_id.to_owned(),
                note,
            });
            push_history(
                state,
                effects,
                &account_loop,
                now,
                SYSTEM_ACTOR,
                Action::JourneyFixed.name(),
                Some(from),
                Some(reason),
            );
            if next == LoopState::Resolved && from != LoopState::Resolved {
                self.start_verification(state, effects, &account_loop, now);
            }
            effects
                .loops
                .insert(account_loop.clone(), state.loops[&account_loop].clone());
        }
    }

    /// A reopened loop gets fresh SLA deadlines from its policy, as if it had just opened.
    fn restart_sla(&self, record: &mut LoopRecord, now: Millis) {
        record.acknowledged_at = None;
        record.breached = false;
        record.ack_breached_at = None;
        record.resolve_breached_at = None;
        if let Some(policy) = record
            .sla_policy
            .as_ref()
            .and_then(|name| self.sla.get(name))
        {
            record.ack_due = Some(policy.deadline(now, policy.ack_within));
            record.resolve_due = Some(policy.deadline(now, policy.resolve_within));
        }
    }

    /// A loop just resolved waits in `verifying` for its policy's window (history row, timer armed).
    fn start_verification(
        &self,
        state: &mut CoreState,
        effects: &mut BatchEffects,
        loop_id: &str,
        now: Millis,
    ) {
        let record = state.loops.get_mut(loop_id).expect("verified loops exist");
        let Ok(next) = transition(record.state, &Action::Verify) else {
            return;
        };
        let window = record
            .sla_policy
            .as_ref()
            .and_then(|name| self.sla.get(name))
            .and_then(|policy| policy.verify_for)
            .unwrap_or(self.verify_for);
        let from = record.state;
        record.apply_transition(&Action::Verify, next, now);
        let due = now + window;
        record.verify_due = Some(due);
        record.verify_confirmed_at = None;
        let recovery = self.recovery_series(record);
        if let Some(series) = recovery.clone() {
            state
                .awaiting_recovery
                .entry(series)
                .or_default()
                .insert(loop_id.to_owned());
        }
        let record = state.loops.get_mut(loop_id).expect("verified loops exist");
        let survey = self.verify_survey(record);
        if let (Some(_), None, Some(account)) = (survey, &recovery, &record.account_id) {
            if let Ok(account) = AccountId::parse(account) {
                state
                    .awaiting_survey
                    .entry(account)
                    .or_default()
                    .insert(loop_id.to_owned());
            }
        }
        push_history(
            state,
            effects,
            loop_id,
            now,
            SYSTEM_ACTOR,
            Action::Verify.name(),
            Some(from),
            Some(format!(
                "verifying until {}: a signal of {} before then reopens the loop",
                format_millis(due),
                state.loops[loop_id].key
            )),
        );
        state.arm_timers(loop_id);
    }

    /// Rebuilds the index of verifying loops that wait for a survey, from the loaded loops.
    pub fn restore_awaiting_survey(&self, state: &mut CoreState) {
        let mut awaiting: HashMap<AccountId, BTreeSet<String>> = HashMap::new();
        for record in state.loops.values() {
            if record.state != LoopState::Verifying
                || record.verify_confirmed_at.is_some()
                || self.verify_survey(record).is_none()
            {
                continue;
            }
            if let Some(account) = record
                .account_id
                .as_deref()
                .and_then(|id| AccountId::parse(id).ok())
            {
                awaiting
                    .entry(account)
                    .or_default()
                    .insert(record.id.clone());
            }
        }
        state.awaiting_survey = awaiting;
        let mut recovering: HashMap<String, BTreeSet<String>> = HashMap::new();
        for record in state.loops.values() {
            if record.state != LoopState::Verifying || record.verify_confirmed_at.is_some() {
                continue;
            }
            if let Some(series) = self.recovery_series(record) {
                recovering
                    .entry(series)
                    .or_default()
                    .insert(record.id.clone());
            }
        }
        state.awaiting_recovery = recovering;
    }

    /// The metric series whose recovery verifies this loop, if its tag is a usage drop that wants it.
    fn recovery_series(&self, record: &LoopRecord) -> Option<String> {
        let account = AccountId::parse(record.account_id.as_deref()?).ok()?;
        self.time.recovery_series(&account, &record.tag)
    }

    /// Usage of a series came back to its baseline in a window ending at `end`: the verifying loops
    /// that wait for it are confirmed, and closed as verified at once if their quiet window is over.
    fn confirm_by_recovery(
        &self,
        state: &mut CoreState,
        series: &str,
        end: Millis,
        effects: &mut BatchEffects,
    ) {
        let Some(waiting) = state.awaiting_recovery.remove(series) else {
            return;
        };
        let mut still = BTreeSet::new();
        for loop_id in waiting {
            let Some(record) = state.loops.get_mut(&loop_id) else {
                continue;
            };
            if record.state != LoopState::Verifying || record.verify_confirmed_at.is_some() {
                continue;
            }
            // Only a window that closed after the resolution says the fix worked.
            if record.resolved_at.is_none_or(|resolved| end <= resolved) {
                still.insert(loop_id);
                continue;
            }
            let note = format!(
                "usage of {series} back at its baseline in the window ending {}",
                format_millis(end)
            );
            confirm_verification(state, effects, &loop_id, end, &note);
        }
        if !still.is_empty() {
            state.awaiting_recovery.insert(series.to_owned(), still);
        }
    }

    /// The survey (kind, minimum score) the loop's policy wants before it is verified, if any.
    fn verify_survey(&self, record: &LoopRecord) -> Option<(SurveyKind, u8)> {
        record
            .sla_policy
            .as_ref()
            .and_then(|name| self.sla.get(name))
            .and_then(|policy| policy.verify_survey)
    }

    /// A survey answer confirms the fix of its account's verifying loops that wait for one: each is
    /// marked confirmed, and closed as verified at once if its quiet window is already over.
    fn confirm_by_survey(
        &self,
        state: &mut CoreState,
        event: &Event,
        now: Millis,
        effects: &mut BatchEffects,
    ) {
        let EventData::SurveyResponded(survey) = &event.data else {
            return;
        };
        let Some(waiting) = state.awaiting_survey.get(&survey.account_id).cloned() else {
            return;
        };
        for loop_id in waiting {
            let Some(record) = state.loops.get_mut(&loop_id) else {
                continue;
            };
            let wanted = self.verify_survey(record);
            if record.state != LoopState::Verifying || record.verify_confirmed_at.is_some() {
                state
                    .awaiting_survey
                    .get_mut(&survey.account_id)
                    .map(|set| set.remove(&loop_id));
                continue;
            }
            let Some((kind, min_score)) = wanted else {
                continue;
            };
            if survey.kind != kind || survey.score < min_score {
                continue;
            }
            let note = format!(
                "{} survey {} of {} (at least {min_score}) confirms the fix",
                kind.as_str(),
                survey.response_id,
                survey.score
            );
            confirm_verification(state, effects, &loop_id, now, &note);
            state
                .awaiting_survey
                .get_mut(&survey.account_id)
                .map(|set| set.remove(&loop_id));
        }
    }

    /// Applies every loop deadline due at or before `now`, in deadline order, each as of its deadline.
    fn fire_timers(&self, state: &mut CoreState, now: Millis, effects: &mut BatchEffects) {
        while let Some((due, kind, loop_id)) = state.timers.first().cloned() {
            if due > now {
                break;
            }
            state.timers.pop_first();
            // The index may hold deadlines that moved or went: only a pending one acts.
            let pending = match kind {
                TimerKind::Detector => state
                    .time
                    .timers
                    .get(&loop_id)
                    .is_some_and(|timer| timer.due == due),
                _ => state
                    .loops
                    .get(&loop_id)
                    .is_some_and(|record| record.pending_timers().contains(&(due, kind))),
            };
            if !pending {
                continue;
            }
            // Another instance owns this account (or journey loop): its deadlines fire there.
            let owner_key = match kind {
                TimerKind::Detector => state.time.timers[&loop_id].account_id.as_str(),
                _ => {
                    let record = &state.loops[&loop_id];
                    record.account_id.as_deref().unwrap_or(&record.key)
                }
            };
            if !state.owns(owner_key) {
                continue;
            }
            match kind {
                TimerKind::Detector => self.fire_detector_timer(state, &loop_id, due, effects),
                TimerKind::Acknowledge | TimerKind::Resolve => {
                    self.breach(state, effects, &loop_id, kind, due)
                }
                TimerKind::Verification => {
                    let record = state.loops.get_mut(&loop_id).expect("pending loops exist");
                    let wanted = match (self.recovery_series(record), self.verify_survey(record)) {
                        (Some(series), _) => {
                            Some(format!("a window of {series} back at its baseline"))
                        }
                        (None, Some((kind, min_score))) => Some(format!(
                            "a {} survey of at least {min_score}",
                            kind.as_str()
                        )),
                        (None, None) => None,
                    };
                    let record = state.loops.get_mut(&loop_id).expect("pending loops exist");
                    if let (Some(wanted), None) = (wanted, record.verify_confirmed_at) {
                        // The window passed quietly, but the fix is not confirmed yet.
                        record.verify_due = None;
                        push_history(
                            state,
                            effects,
                            &loop_id,
                            due,
                            SYSTEM_ACTOR,
                            "verify",
                            Some(LoopState::Verifying),
                            Some(format!(
                                "verification window over without {wanted} yet: verified when it comes"
                            )),
                        );
                        effects
                            .loops
                            .insert(loop_id.clone(), state.loops[&loop_id].clone());
                        continue;
                    }
                    close_verified(
                        state,
                        effects,
                        &loop_id,
                        due,
                        "no signal of its key during verification: closed as verified".to_owned(),
                    );
                }
            }
        }
    }

    /// Fires the window closes whose source's watermark has passed them, in due order.
    fn fire_window_timers(&self, state: &mut CoreState, effects: &mut BatchEffects) {
        loop {
            let Some(newest) = state.watermarks.values().max().copied() else {
                return;
            };
            let mut ready = Vec::new();
            let mut stale = Vec::new();
            for (due, key) in state
                .window_timers
                .iter()
                .take_while(|(due, _)| *due <= newest)
            {
                match state.time.series.get(key) {
                    // Another instance owns the account, and its up-to-date series.
                    Some(series) if !state.owns(series.account_id.as_str()) => {
                        stale.push((*due, key.clone()))
                    }
                    Some(series) if series.next_close == Some(*due) => {
                        if state
                            .watermarks
                            .get(&series.source)
                            .is_some_and(|watermark| *watermark >= *due)
                        {
                            ready.push((*due, key.clone()));
                        }
                    }
                    // The close moved or was judged: drop its old index entry.
                    _ => stale.push((*due, key.clone())),
                }
            }
            for entry in &stale {
                state.window_timers.remove(entry);
            }
            if ready.is_empty() {
                return;
            }
            // A judged window arms the next close, which the watermark may have passed too.
            for (due, key) in ready {
                state.window_timers.remove(&(due, key.clone()));
                let (found, change) = self.time.on_window_close(&key, &state.time);
                let recovered = change.recovered.clone();
                self.apply_time_signals(state, found, change, &key, due, effects);
                for (series, end) in recovered {
                    self.confirm_by_recovery(state, &series, end, effects);
                }
            }
        }
    }

    /// A time detector's timer is due: its signals open or join account loops as of `due`, with the
    /// timer as their origin (no event raised them).
    fn fire_detector_timer(
        &self,
        state: &mut CoreState,
        key: &str,
        due: Millis,
        effects: &mut BatchEffects,
    ) {
        let timer = state.time.timers[key].clone();
        let (found, change) = self.time.on_timer(&timer, &state.time);
        self.apply_time_signals(state, found, change, key, due, effects);
    }

    /// Applies what a due timer changed and the signals it raised, as of `due`.
    fn apply_time_signals(
        &self,
        state: &mut CoreState,
        found: Vec<TimeSignal<'_>>,
        change: TimeUpdate,
        key: &str,
        due: Millis,
        effects: &mut BatchEffects,
    ) {
        let signals: Vec<Signal> = found
            .into_iter()
            .map(|found| Signal {
                kind: SignalKind::Account,
                detector: found.detector.name.clone(),
                detector_kind: found.detector.kind.as_str(),
                severity: found.detector.severity,
                account_id: Some(found.account_id),
                stage: None,
                primary_tag: found.detector.tag.clone(),
                key_tag: found.detector.tag.clone(),
                time: due,
                reason: found.reason,
                journey: None,
            })
            .collect();
        state.apply_time(change, effects);
        for signal in &signals {
            let tagging = Tagging {
                primary: signal.key_tag.clone(),
                matches: Vec::new(),
            };
            let origin = Origin {
                source: SYSTEM_ACTOR,
                id: format!("{key}@{}", format_millis(due)),
                event_type: signal.detector_kind,
                time: due,
                reference: serde_json::json!({"timer": key, "due": format_millis(due)}),
                tagging: &tagging,
            };
            *effects
                .stats
                .signals
                .entry(signal.detector.clone())
                .or_default() += 1;
            self.apply_signal(state, &origin, None, signal, due, effects);
        }
    }

    /// An SLA deadline passed unmet: the loop is marked, then its priority rises one level or it moves
    /// to the policy's escalation queue, as the policy says.
    fn breach(
        &self,
        state: &mut CoreState,
        effects: &mut BatchEffects,
        loop_id: &str,
        kind: TimerKind,
        due: Millis,
    ) {
        let record = state.loops.get_mut(loop_id).expect("pending loops exist");
        let from = record.state;
        let next = transition(from, &Action::Breach)
            .expect("a pending SLA timer means the loop is active");
        record.apply_transition(&Action::Breach, next, due.max(record.updated_at));
        let deadline = match kind {
            TimerKind::Acknowledge => {
                record.ack_breached_at = Some(due);
                "acknowledge"
            }
            _ => {
                record.resolve_breached_at = Some(due);
                "resolve"
            }
        };
        let policy = record
            .sla_policy
            .as_ref()
            .and_then(|name| self.sla.get(name));
        let breached_queue = record.queue.clone();
        let consequence = match policy {
            Some(policy) if policy.on_breach == OnBreach::Escalate => {
                match policy.escalation_queue.as_deref() {
                    Some(queue) if queue != record.queue => {
                        record.queue = queue.to_owned();
                        format!("moved from {breached_queue} to {queue}")
                    }
                    _ => "already on the escalation queue".to_owned(),
                }
            }
            _ => {
                let before = record.priority;
                record.priority = before.saturating_sub(1).max(1);
                format!("priority P{before} -> P{}", record.priority)
            }
        };
        let reason = format!(
            "{deadline} deadline {} passed (sla {}): {consequence}",
            format_millis(due),
            record.sla_policy.as_deref().unwrap_or("none")
        );
        *effects
            .stats
            .sla_breaches
            .entry(breached_queue)
            .or_default() += 1;
        push_history(
            state,
            effects,
            loop_id,
            due,
            SYSTEM_ACTOR,
            Action::Breach.name(),
            Some(from),
            Some(reason),
        );
        effects
            .loops
            .insert(loop_id.to_owned(), state.loops[loop_id].clone());
    }

    /// Applies an operator action. Illegal ones change nothing and report why.
    pub fn apply_action(
        &self,
        state: &mut CoreState,
        request: &ActionRequest,
        now: Millis,
        effects: &mut BatchEffects,
    ) -> ActionOutcome {
        // Superseded generations are not in memory (see `apply_signal`), so an action on one is
        // not found here: only the newest generation of a key can change.
        let Some(record) = state.loops.get_mut(&request.loop_id) else {
            return ActionOutcome::NotFound;
        };
        let from = record.state;
        let next = match transition(from, &request.action) {
            Ok(next) => next,
            Err(error) => {
                return ActionOutcome::Illegal {
                    message: error.to_string(),
                }
            }
        };
        record.apply_transition(&request.action, next, now);
        if request.action == Action::Reopen {
            self.restart_sla(record, now);
        }
        let queue = record.queue.clone();
        let mut reason = request.note.clone();
        match &request.action {
            Action::Close {
                reason: close_reason,
            } => {
                *effects
                    .stats
                    .loop_changes
                    .entry((queue, "closed"))
                    .or_default() += 1;
                let note = reason
                    .take()
                    .map(|note| format!(": {note}"))
                    .unwrap_or_default();
                reason = Some(format!("closed as {}{note}", close_reason.as_str()));
            }
            Action::Assign { owner } => {
                let note = reason
                    .take()
                    .map(|note| format!(": {note}"))
                    .unwrap_or_default();
                reason = Some(format!("assigned to {owner}{note}"));
            }
            Action::Reopen => {
                *effects
                    .stats
                    .loop_changes
                    .entry((queue, "reopened"))
                    .or_default() += 1;
            }
            _ => {}
        }
        let loop_id = request.loop_id.clone();
        let fix_shipped = record.kind == SignalKind::Journey && request.action == Action::Resolve;
        push_history(
            state,
            effects,
            &loop_id,
            now,
            &request.actor,
            request.action.name(),
            Some(from),
            reason,
        );
        if next == LoopState::Resolved {
            self.start_verification(state, effects, &loop_id, now);
        }
        state.arm_timers(&loop_id);
        let record = &state.loops[&loop_id];
        effects.loops.insert(loop_id.clone(), record.clone());
        if fix_shipped {
            self.journey_fixed(state, effects, &loop_id, now);
        }
        ActionOutcome::Applied {
            state: state.loops[&loop_id].state,
        }
    }

    /// The dry run of one event against `state`: nothing in `state` changes.
    pub fn explain(&self, state: &CoreState, event: &Event, now: Millis) -> Explanation {
        let tagging = self.tagger.tag(&event.data);
        let is_account_update = matches!(event.data, EventData::AccountUpserted(_));
        let mut detection = if is_account_update {
            Default::default()
        } else {
            self.detectors.detect(event, &tagging, &state.detectors)
        };
        detection
            .signals
            .sort_by_key(|signal| std::cmp::Reverse(signal.severity));
        let (feed, mut journey_signals) = match &self.journeys {
            Some(journeys) if !is_account_update => {
                let account = state.accounts.get(event.account_id());
                let observation = Observation::new(event, &tagging.primary, account);
                let (signals, _) = journeys.detect(&state.journeys, &observation);
                (
                    Some(observation.dims.feed(journeys.windows(), event.time)),
                    signals,
                )
            }
            _ => (None, Vec::new()),
        };
        journey_signals.sort_by_key(|signal| std::cmp::Reverse(signal.severity));
        journey_signals.append(&mut detection.signals);
        detection.signals = journey_signals;
        let mut router_state = state.router.clone();
        let mut planned: HashMap<String, (String, String, String)> = HashMap::new();
        let mut signals = Vec::new();
        for signal in detection.signals {
            let key = signal.loop_key();
            let account = signal
                .account_id
                .as_ref()
                .and_then(|account_id| state.accounts.get(account_id));
            let (priority, _) = self.priority(&signal, account);
            let explained = if let Some((id, queue, owner)) = planned.get(&key) {
                ExplainedSignal {
                    loop_key: key.clone(),
                    outcome: "join",
                    loop_id: id.clone(),
                    queue: queue.clone(),
                    owner: owner.clone(),
                    priority: format!("P{priority}"),
                    route: None,
                    sla: None,
                    signal,
                }
            } else {
                match self.placement(state, &key, now) {
                    Placement::Open { generation, .. } => {
                        let decision = self
                            .router
                            .route(&self.route_input(&signal, account), &router_state);
                        router_state.apply(&decision);
                        let id = loop_id(&key, generation);
                        let sla = decision
                            .sla_policy
                            .as_ref()
                            .and_then(|name| self.sla.get(name))
                            .map(SlaTrace::of);
                        ExplainedSignal {
                            loop_key: key.clone(),
                            outcome: "open",
                            loop_id: id,
                            queue: decision.queue.clone(),
                            owner: decision.owner.clone(),
                            priority: format!("P{priority}"),
                            route: Some(decision),
                            sla,
                            signal,
                        }
                    }
                    Placement::Join(id) | Placement::Reopen(id) => {
                        let record = &state.loops[&id];
                        ExplainedSignal {
                            loop_key: key.clone(),
                            outcome: if record.state.is_active() {
                                "join"
                            } else {
                                "reopen"
                            },
                            loop_id: id.clone(),
                            queue: record.queue.clone(),
                            owner: record.owner.clone(),
                            priority: format!("P{}", priority.min(record.priority)),
                            route: None,
                            sla: record
                                .sla_policy
                                .as_ref()
                                .and_then(|name| self.sla.get(name))
                                .map(SlaTrace::of),
                            signal,
                        }
                    }
                }
            };
            planned.insert(
                key,
                (
                    explained.loop_id.clone(),
                    explained.queue.clone(),
                    explained.owner.clone(),
                ),
            );
            signals.push(explained);
        }
        Explanation {
            event: serde_json::json!({
                "source": event.source,
                "id": event.id,
                "type": event.event_type().as_str(),
                "time": crate::domain::format_millis(event.time),
                "account_id": event.account_id().as_str(),
            }),
            tags: tagging,
            journey: feed,
            signals,
            config_version: self.config_version.clone(),
        }
    }
}

fn stored_matches(tagging: &Tagging) -> &[crate::tag::TagMatch] {
    &tagging.matches[..tagging.matches.len().min(STORED_TAG_MATCHES)]
}

fn advance_clock(state: &mut CoreState, clock: BatchClock, entry_time: Millis) -> Millis {
    let reading = match clock {
        BatchClock::Live(now) => now,
        BatchClock::EventTime => entry_time,
    };
    state.clock = state.clock.max(reading);
    state.clock
}

fn failed(entry: &LogEntry, rejection: Rejection) -> FailedEntry {
    FailedEntry {
        seq: entry.seq,
        source: entry.source.clone(),
        id: entry.id.clone(),
        rejection,
        payload: entry.payload.clone(),
    }
}

/// Links an account loop to a journey loop, both ways: the account loop names its journey loop (and
/// says so in its history), the journey loop's link set holds the account loop.
fn link(
    state: &mut CoreState,
    effects: &mut BatchEffects,
    journey_id: &str,
    account_loop: &str,
    now: Millis,
) {
    let journey_key = state.loops[journey_id].key.clone();
    let record = state
        .loops
        .get_mut(account_loop)
        .expect("linked loops are current");
    record.journey_loop = Some(journey_id.to_owned());
    record.updated_at = now;
    let current = record.state;
    state
        .links
        .entry(journey_id.to_owned())
        .or_default()
        .insert(account_loop.to_owned());
    effects.links.push(LinkRow {
        journey_loop: journey_id.to_owned(),
        account_loop: account_loop.to_owned(),
        at: now,
    });
    push_history(
        state,
        effects,
        account_loop,
        now,
        SYSTEM_ACTOR,
        "link",
        Some(current),
        Some(format!(
            "linked to journey loop {journey_id} ({journey_key})"
        )),
    );
}

/// A verifying loop's fix is confirmed (by a survey, or usage back at its baseline) at `at`: closed as
/// verified at once if its quiet window is over, else noted and verified when the window ends.
fn confirm_verification(
    state: &mut CoreState,
    effects: &mut BatchEffects,
    loop_id: &str,
    at: Millis,
    note: &str,
) {
    let record = state.loops.get_mut(loop_id).expect("confirmed loops exist");
    record.verify_confirmed_at = Some(at);
    record.updated_at = record.updated_at.max(at);
    if record.verify_due.is_none() {
        close_verified(
            state,
            effects,
            loop_id,
            at,
            format!("{note}: closed as verified"),
        );
    } else {
        push_history(
            state,
            effects,
            loop_id,
            at,
            SYSTEM_ACTOR,
            "comment",
            Some(LoopState::Verifying),
            Some(format!(
                "{note}; verified at the end of the window unless a signal recurs"
            )),
        );
        effects
            .loops
            .insert(loop_id.to_owned(), state.loops[loop_id].clone());
    }
}

/// Closes a verifying loop as verified at `at`, with its history row and count.
fn close_verified(
    state: &mut CoreState,
    effects: &mut BatchEffects,
    loop_id: &str,
    at: Millis,
    reason: String,
) {
    let record = state.loops.get_mut(loop_id).expect("verified loops exist");
    let from = record.state;
    let next = transition(from, &Action::Verified).expect("only a verifying loop is verified");
    record.apply_transition(&Action::Verified, next, at);
    record.verify_due = None;
    let queue = record.queue.clone();
    *effects
        .stats
        .loop_changes
        .entry((queue, "closed"))
        .or_default() += 1;
    push_history(
        state,
        effects,
        loop_id,
        at,
        SYSTEM_ACTOR,
        Action::Verified.name(),
        Some(from),
        Some(reason),
    );
    effects
        .loops
        .insert(loop_id.to_owned(), state.loops[loop_id].clone());
}

/// Distributed mode: whether `event` is new, by its (source, id). `CoreState::seen` holds the ids the
/// processor found stored or in flight; a new one is added to it and to the batch's `seen` rows.
fn first_sighting(state: &mut CoreState, event: &Event, effects: &mut BatchEffects) -> bool {
    let key = (event.source.clone(), event.id.clone());
    if state.seen.contains(&key) {
        return false;
    }
    state.seen.insert(key.clone());
    effects.seen.push(key);
    true
}

/// Appends a history row and counts it on the loop. The caller copies the loop into the batch's effects
/// once, after its last change.
#[allow(clippy::too_many_arguments)]
fn push_history(
    state: &mut CoreState,
    effects: &mut BatchEffects,
    loop_id: &str,
    now: Millis,
    actor: &str,
    action: &str,
    from_state: Option<LoopState>,
    reason: Option<String>,
) {
    let record = state
        .loops
        .get_mut(loop_id)
        .expect("history is written for known loops");
    let seq = record.history_len;
    record.history_len += 1;
    effects.history.push(HistoryRow {
        loop_id: loop_id.to_owned(),
        seq,
        at: now,
        actor: actor.to_owned(),
        action: action.to_owned(),
        from_state,
        to_state: record.state,
        reason,
    });
}

/// Present fields of an `account.upserted` overwrite; absent ones keep what the directory knew, so a
/// partial update from one system does not erase what another set.
pub fn merge_account(known: Option<&Account>, update: &AccountUpserted) -> Account {
    let Some(known) = known else {
        return update.clone();
    };
    Account {
        account_id: update.account_id.clone(),
        name: update.name.clone().or_else(|| known.name.clone()),
        tier: update.tier.clone().or_else(|| known.tier.clone()),
        arr: update.arr.or(known.arr),
        region: update.region.clone().or_else(|| known.region.clone()),
        segment: update.segment.clone().or_else(|| known.segment.clone()),
        csm: update.csm.clone().or_else(|| known.csm.clone()),
        lifecycle_stage: update
            .lifecycle_stage
            .clone()
            .or_else(|| known.lifecycle_stage.clone()),
        started_at: update.started_at.or(known.started_at),
    }
}

fn reference_json(event: &Event) -> serde_json::Value {
    let mut reference = serde_json::Map::new();
    reference.insert("source".to_owned(), event.source.clone().into());
    reference.insert("event_id".to_owned(), event.id.clone().into());
    if let Some((name, value)) = event.data.source_reference() {
        reference.insert(name.to_owned(), value.to_owned().into());
    }
    serde_json::Value::Object(reference)
}

/// What a signal came from, as its evidence and trace name it: an event with its tags, or the timer of
/// a detector that needs time.
struct Origin<'a> {
    source: &'a str,
    id: String,
    event_type: &'a str,
    time: Millis,
    reference: serde_json::Value,
    tagging: &'a Tagging,
}

impl<'a> Origin<'a> {
    fn event(event: &'a Event, tagging: &'a Tagging) -> Origin<'a> {
        Origin {
            source: &event.source,
            id: event.id.clone(),
            event_type: event.event_type().as_str(),
            time: event.time,
            reference: reference_json(event),
            tagging,
        }
    }

    fn reference(&self) -> EventReference<'_> {
        EventReference {
            source: self.source,
            id: &self.id,
            event_type: self.event_type,
            time: crate::domain::format_millis(self.time),
            reference: self.reference.clone(),
        }
    }
}

mod outbox;
pub mod ownership;
#[cfg(test)]
mod tests;

pub use outbox::DEAD_LETTER;
