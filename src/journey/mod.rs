//! Journeys for CX: what each event adds to the journey figures, and the journey detectors.
//!
//! Pure, like the rest of the core. An event feeds one bucket per configured window, keyed by its
//! journey stage (the event's `journey_stage`, else its account's `lifecycle_stage`, else `unknown`),
//! its primary tag and its touchpoint. Storage keeps additive rows at the grain (the shortest window)
//! and the accounts of each bucket; the core keeps only what the journey detectors compare: for each
//! detector window, the figures of the newest windows per stage x tag.

use std::collections::{BTreeMap, BTreeSet};

// FxHash: the tracked windows are keyed by 128-bit digests that are already uniform, so the cheapest
// hasher does; SipHash was a tenth of the core's time on them.
use rustc_hash::{FxHashMap, FxHashSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::routes::SignalKind;
use crate::config::signals::{JourneyDetectorConfig, JourneyDetectorKind, SignalsConfig, Window};
use crate::config::taxonomy::UNCATEGORIZED;
use crate::detect::{tag_has_prefix, Signal};
use crate::domain::{format_millis, AccountId, Event, EventData, Millis, SurveyKind};
use crate::route::Account;

/// The stage or touchpoint of an event that names none.
pub const UNKNOWN: &str = "unknown";

/// Windows of each detector window kind kept in memory: the newest and the two before it, so that an
/// event in the newest or the previous window can be compared with the window before its own.
pub const TRACKED_WINDOWS: i64 = 3;

/// Additive journey figures: counts and sums, never ratios, so partial rows add up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub events: u64,
    /// Tickets opened.
    pub tickets: u64,
    pub nps_responses: u64,
    /// NPS 9-10.
    pub promoters: u64,
    /// NPS 7-8.
    pub passives: u64,
    /// NPS 0-6.
    pub detractors: u64,
    pub csat_responses: u64,
    pub csat_sum: u64,
    pub ces_responses: u64,
    pub ces_sum: u64,
}

impl Figures {
    /// What one event adds.
    pub fn of(data: &EventData) -> Figures {
        let mut figures = Figures {
            events: 1,
            ..Figures::default()
        };
        match data {
            EventData::TicketOpened(_) => figures.tickets = 1,
            EventData::SurveyResponded(survey) => {
                let score = u64::from(survey.score);
                match survey.kind {
                    SurveyKind::Nps => {
                        figures.nps_responses = 1;
                        match survey.score {
                            9.. => figures.promoters = 1,
                            7..=8 => figures.passives = 1,
                            _ => figures.detractors = 1,
                        }
                    }
                    SurveyKind::Csat => {
                        figures.csat_responses = 1;
                        figures.csat_sum = score;
                    }
                    SurveyKind::Ces => {
                        figures.ces_responses = 1;
                        figures.ces_sum = score;
                    }
                }
            }
            _ => {}
        }
        figures
    }

    pub fn add(&mut self, other: &Figures) {
        self.events += other.events;
        self.tickets += other.tickets;
        self.nps_responses += other.nps_responses;
        self.promoters += other.promoters;
        self.passives += other.passives;
        self.detractors += other.detractors;
        self.csat_responses += other.csat_responses;
        self.csat_sum += other.csat_sum;
        self.ces_responses += other.ces_responses;
        self.ces_sum += other.ces_sum;
    }

    pub fn plus(mut self, other: &Figures) -> Figures {
        self.add(other);
        self
    }

    /// (promoters - detractors) / NPS responses x 100, to two decimals; `None` without responses.
    pub fn nps(&self) -> Option<f64> {
        (self.nps_responses > 0).then(|| {
            round2(
                (i128::from(self.promoters) - i128::from(self.detractors)) * 100,
                i128::from(self.nps_responses),
            )
        })
    }

    pub fn csat_avg(&self) -> Option<f64> {
        (self.csat_responses > 0)
            .then(|| round2(i128::from(self.csat_sum), i128::from(self.csat_responses)))
    }

    pub fn ces_avg(&self) -> Option<f64> {
        (self.ces_responses > 0)
            .then(|| round2(i128::from(self.ces_sum), i128::from(self.ces_responses)))
    }
}

/// `numerator / denominator` (denominator > 0) to two decimals, halves rounded away from zero, computed
/// in integers so that the figure is exact up to its last digit.
pub fn round2(numerator: i128, denominator: i128) -> f64 {
    let scaled = numerator * 100;
    let quotient = scaled / denominator;
    let remainder = scaled % denominator;
    let rounded = if 2 * remainder.abs() >= denominator {
        quotient + scaled.signum()
    } else {
        quotient
    };
    rounded as f64 / 100.0
}

/// Where an event's journey stage came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageSource {
    /// The event's own `journey_stage`.
    Event,
    /// The account's `lifecycle_stage`.
    Account,
    /// Neither: `unknown`.
    Unknown,
}

/// One window an event fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedWindow {
    pub window: Window,
    #[serde(
        serialize_with = "serialize_time",
        deserialize_with = "deserialize_time"
    )]
    pub start: Millis,
}

/// The journey buckets an event fed: its stage, primary tag and touchpoint, in each window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feed {
    pub stage: String,
    pub stage_from: StageSource,
    pub tag: String,
    pub touchpoint: String,
    pub windows: Vec<FeedWindow>,
}

/// The stored form of a [`Feed`] in evidence rows and traces: `[stage, stage_from, tag, touchpoint,
/// [[window, start millis], ...]]`, about 90 bytes where the object form with RFC 3339 starts takes
/// about 220. Every signal stores its feed twice (evidence and trace), so the object form made the
/// journey data the largest part of those rows. Reading accepts both forms: rows written before the
/// compact form keep the object form.
pub mod stored_feed {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Feed, FeedWindow, StageSource};
    use crate::config::signals::Window;
    use crate::domain::Millis;

    type Compact<'a> = (
        &'a str,
        StageSource,
        &'a str,
        &'a str,
        Vec<(Window, Millis)>,
    );

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Compact(String, StageSource, String, String, Vec<(Window, Millis)>),
        Object(Feed),
    }

    fn compact(feed: &Feed) -> Compact<'_> {
        (
            &feed.stage,
            feed.stage_from,
            &feed.tag,
            &feed.touchpoint,
            feed.windows
                .iter()
                .map(|window| (window.window, window.start))
                .collect(),
        )
    }

    /// For `#[serde(with = "stored_feed")]` on an `Option<Feed>`.
    pub fn serialize<S: Serializer>(feed: &Option<Feed>, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_ref(&feed.as_ref(), serializer)
    }

    /// For `#[serde(serialize_with = "stored_feed::serialize_ref")]` on an `Option<&Feed>`.
    pub fn serialize_ref<S: Serializer>(
        feed: &Option<&Feed>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        feed.map(compact).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Feed>, D::Error> {
        Ok(
            Option::<Stored>::deserialize(deserializer)?.map(|stored| match stored {
                Stored::Compact(stage, stage_from, tag, touchpoint, windows) => Feed {
                    stage,
                    stage_from,
                    tag,
                    touchpoint,
                    windows: windows
                        .into_iter()
                        .map(|(window, start)| FeedWindow { window, start })
                        .collect(),
                },
                Stored::Object(feed) => feed,
            }),
        )
    }

    /// A stored trace's `journey` in the form the API shows (`Feed`'s own serialization), whichever
    /// form it was stored in.
    pub fn expand(stored: serde_json::Value) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(deserialize(stored)?)
    }
}

/// A stored journey bucket at the grain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketKey {
    pub start: Millis,
    pub stage: String,
    pub tag: String,
    pub touchpoint: String,
}

/// The journey dimensions of one event, borrowed from the event, its tagging and its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims<'a> {
    pub stage: &'a str,
    pub stage_from: StageSource,
    /// The primary tag (`uncategorized` included), so that every grouping partitions the events.
    pub tag: &'a str,
    pub touchpoint: &'a str,
}

impl<'a> Dims<'a> {
    pub fn of(event: &'a Event, primary_tag: &'a str, account: Option<&'a Account>) -> Dims<'a> {
        let (stage, stage_from) = stage_of(&event.data, account);
        Dims {
            stage,
            stage_from,
            tag: primary_tag,
            touchpoint: touchpoint_of(&event.data),
        }
    }

    /// The buckets fed at `time` in each of `windows`, owned, as traces and `explain` show them.
    pub fn feed(&self, windows: &[Window], time: Millis) -> Feed {
        Feed {
            stage: self.stage.to_owned(),
            stage_from: self.stage_from,
            tag: self.tag.to_owned(),
            touchpoint: self.touchpoint.to_owned(),
            windows: windows
                .iter()
                .map(|window| FeedWindow {
                    window: *window,
                    start: window.start(time),
                })
                .collect(),
        }
    }

    /// The stored bucket at the grain that an event at `time` adds to.
    pub fn bucket(&self, grain: Window, time: Millis) -> BucketKey {
        BucketKey {
            start: grain.start(time),
            stage: self.stage.to_owned(),
            tag: self.tag.to_owned(),
            touchpoint: self.touchpoint.to_owned(),
        }
    }
}

/// The journey stage of an event: its own `journey_stage`, else its account's `lifecycle_stage`, else
/// `unknown`.
pub fn stage_of<'a>(data: &'a EventData, account: Option<&'a Account>) -> (&'a str, StageSource) {
    if let Some(stage) = data.journey_stage() {
        return (stage, StageSource::Event);
    }
    match account.and_then(|account| account.lifecycle_stage.as_deref()) {
        Some(stage) => (stage, StageSource::Account),
        None => (UNKNOWN, StageSource::Unknown),
    }
}

/// Where the customer met the company: a survey's touchpoint, a ticket's channel, else `unknown`.
pub fn touchpoint_of(data: &EventData) -> &str {
    let touchpoint = match data {
        EventData::SurveyResponded(survey) => survey.touchpoint.as_deref(),
        EventData::TicketOpened(ticket) => ticket.channel.as_deref(),
        _ => None,
    };
    touchpoint.unwrap_or(UNKNOWN)
}

/// A 128-bit digest of a sequence of strings (or fixed-length byte strings), each followed by 0xFF,
/// a byte UTF-8 never contains, so that different sequences never share an input. In memory only:
/// a false match needs a 128-bit collision. XXH3-128 (the `xxhash-rust` crate): a 128-bit hash several
/// times faster than two SipHash passes on keys this short.
fn digest(parts: &[&[u8]]) -> u128 {
    let length: usize = parts.iter().map(|part| part.len() + 1).sum();
    let mut stack = [0u8; 192];
    let mut heap = Vec::new();
    let buffer: &mut [u8] = if length <= stack.len() {
        &mut stack[..length]
    } else {
        heap.resize(length, 0);
        &mut heap
    };
    let mut at = 0;
    for part in parts {
        buffer[at..at + part.len()].copy_from_slice(part);
        buffer[at + part.len()] = 0xFF;
        at += part.len() + 1;
    }
    xxhash_rust::xxh3::xxh3_128(buffer)
}

fn stage_tag_digest(stage: &str, tag: &str) -> u128 {
    digest(&[stage.as_bytes(), tag.as_bytes()])
}

fn account_digest(account: &AccountId) -> u128 {
    digest(&[account.as_str().as_bytes()])
}

/// One event as the journeys see it: its dimensions, what it adds, and the digests it is looked up
/// by, computed once.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub dims: Dims<'a>,
    pub time: Millis,
    pub delta: Figures,
    account: u128,
    stage_tag: u128,
    /// Of (stage, tag, touchpoint): with the grain start, the stored bucket.
    dims_digest: u128,
}

impl<'a> Observation<'a> {
    pub fn new(
        event: &'a Event,
        primary_tag: &'a str,
        account: Option<&'a Account>,
    ) -> Observation<'a> {
        let dims = Dims::of(event, primary_tag, account);
        Observation {
            dims,
            time: event.time,
            delta: Figures::of(&event.data),
            account: account_digest(event.account_id()),
            stage_tag: stage_tag_digest(dims.stage, dims.tag),
            dims_digest: digest(&[
                dims.stage.as_bytes(),
                dims.tag.as_bytes(),
                dims.touchpoint.as_bytes(),
            ]),
        }
    }

    /// The stored bucket's identity: the grain start and a digest of stage, tag and touchpoint.
    pub fn bucket_id(&self, grain: Window) -> (Millis, u128) {
        (grain.start(self.time), self.dims_digest)
    }
}

/// A window's figures for one stage x tag, as the detectors compare them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowFigures {
    pub figures: Figures,
    /// 128-bit digests of the accounts seen: a third of the memory of the ids, and a false match needs
    /// a 128-bit collision. The reported figures count real ids in SQL.
    pub accounts: FxHashSet<u128>,
    /// Detectors that already fired for this window, stage and tag: bit i for the i-th detector.
    fired: u64,
}

/// The tracked windows of one window kind: start -> digest of (stage, tag) -> figures.
#[derive(Debug, Clone, Default, PartialEq)]
struct Series {
    newest: Option<Millis>,
    by_start: BTreeMap<Millis, FxHashMap<u128, WindowFigures>>,
}

impl Series {
    fn get(&self, start: Millis, stage_tag: u128) -> Option<&WindowFigures> {
        self.by_start.get(&start)?.get(&stage_tag)
    }

    fn entry(&mut self, start: Millis, stage_tag: u128) -> &mut WindowFigures {
        self.by_start
            .entry(start)
            .or_default()
            .entry(stage_tag)
            .or_default()
    }

    /// The oldest window start still tracked, once `newest` is known.
    fn floor(&self, window: Window) -> Option<Millis> {
        self.newest
            .map(|newest| newest - (TRACKED_WINDOWS - 1) * window.length())
    }

    fn tracks(&self, window: Window, start: Millis) -> bool {
        self.floor(window).is_none_or(|floor| start >= floor)
    }

    fn advance(&mut self, window: Window, start: Millis) {
        if self.newest.is_some_and(|newest| newest >= start) {
            return;
        }
        self.newest = Some(start);
        if let Some(floor) = self.floor(window) {
            self.by_start = self.by_start.split_off(&floor);
        }
    }
}

/// What the journey detectors remember between events: per detector window kind, the tracked
/// windows' figures. Rebuilt from storage at start-up ([`JourneyDetectors::restore`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneyState {
    series: BTreeMap<Window, Series>,
}

/// A detector that fired for a window, stage and tag; stored so that a restart does not fire it again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FiredRow {
    pub window: Window,
    pub start: Millis,
    pub stage: String,
    pub tag: String,
    pub detector: String,
}

/// The stored rows the journey state is rebuilt from: everything at or after the grain start
/// `since`.
#[derive(Debug, Clone, Default)]
pub struct JourneySnapshot {
    pub buckets: Vec<(BucketKey, Figures)>,
    pub accounts: Vec<(BucketKey, AccountId)>,
    pub fired: Vec<FiredRow>,
}

impl JourneyState {
    /// Figures of one tracked window, for tests and `explain`.
    pub fn figures(
        &self,
        window: Window,
        start: Millis,
        stage: &str,
        tag: &str,
    ) -> Option<&WindowFigures> {
        self.series
            .get(&window)?
            .get(start, stage_tag_digest(stage, tag))
    }
}

/// What a batch adds to one stored journey bucket: its figures and the accounts not written there
/// recently.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketDelta {
    pub key: BucketKey,
    pub figures: Figures,
    pub accounts: Vec<AccountId>,
}

/// The (bucket, account) pairs already written in the two newest grain windows, so that an account
/// seen again in a bucket is not written again. Only a cache: it starts empty after a restart, and a
/// pair written twice changes no distinct count.
#[derive(Debug, Clone, Default)]
pub struct RecentPairs {
    /// 128-bit digests of (stage, tag, touchpoint, account) per grain start: a false "seen", which
    /// would lose a pair, needs a 128-bit collision.
    by_start: BTreeMap<Millis, FxHashSet<u128>>,
}

impl RecentPairs {
    /// True when the observed event's (bucket, account) pair was not seen yet (it is remembered from
    /// now on).
    pub fn insert(&mut self, grain: Window, observation: &Observation) -> bool {
        let start = grain.start(observation.time);
        let newest = self.by_start.keys().next_back().copied();
        if newest.is_some_and(|newest| start < newest - grain.length()) {
            return true;
        }
        let pair = digest(&[
            &observation.dims_digest.to_le_bytes(),
            &observation.account.to_le_bytes(),
        ]);
        let inserted = self.by_start.entry(start).or_default().insert(pair);
        if newest.is_none_or(|newest| start > newest) {
            self.by_start = self.by_start.split_off(&(start - grain.length()));
        }
        inserted
    }
}

/// A window's figures as a journey signal's trace shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowSummary {
    #[serde(serialize_with = "serialize_time")]
    pub start: Millis,
    pub events: u64,
    pub tickets: u64,
    pub accounts: u64,
    pub nps_responses: u64,
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
    pub nps: Option<f64>,
}

impl WindowSummary {
    fn new(start: Millis, figures: &Figures, accounts: u64) -> WindowSummary {
        WindowSummary {
            start,
            events: figures.events,
            tickets: figures.tickets,
            accounts,
            nps_responses: figures.nps_responses,
            promoters: figures.promoters,
            passives: figures.passives,
            detractors: figures.detractors,
            nps: figures.nps(),
        }
    }
}

/// The figures that crossed a journey detector's threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JourneyFigures {
    pub window: Window,
    pub stage: String,
    /// The bucket's tag (`uncategorized` included).
    pub tag: String,
    pub current: WindowSummary,
    pub previous: Option<WindowSummary>,
    pub threshold: String,
}

/// The fleet's merged figures of one window, stage and tag: every instance's partial rows added up,
/// with the distinct accounts of the union of their account sets.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetGroup {
    pub window: Window,
    pub start: Millis,
    pub stage: String,
    pub tag: String,
    pub figures: Figures,
    pub accounts: u64,
}

/// What the fleet's journey detectors judge (the distributed mode): per detector window kind, the
/// newest tracked windows and the one before them, and the detectors that already fired there; with
/// the journey loops as stored, whose links and fixes reach every instance's account loops.
#[derive(Debug, Clone, Default)]
pub struct FleetFigures {
    pub groups: Vec<FleetGroup>,
    pub fired: Vec<FiredRow>,
    pub journey_loops: Vec<crate::loops::LoopRecord>,
}

/// One window of one stage x tag as a detector judges it: the window's figures and distinct
/// accounts, and the previous window's (`None` when it is not known).
#[derive(Debug, Clone, Copy)]
struct Judged<'a> {
    stage: &'a str,
    tag: &'a str,
    window: Window,
    start: Millis,
    current: Figures,
    accounts: u64,
    previous: Option<(Figures, u64)>,
}

/// The configured journey detectors.
#[derive(Debug, Clone)]
pub struct JourneyDetectors {
    detectors: Vec<JourneyDetectorConfig>,
    /// Every configured window, in configuration order: an event feeds one bucket in each.
    windows: Vec<Window>,
    /// The windows the detectors compare, tracked in memory.
    tracked: Vec<Window>,
    grain: Window,
}

impl JourneyDetectors {
    pub fn new(config: &SignalsConfig) -> JourneyDetectors {
        let tracked: BTreeSet<Window> = config
            .journey_detectors
            .iter()
            .map(|detector| detector.window)
            .collect();
        JourneyDetectors {
            detectors: config.journey_detectors.clone(),
            windows: config.journeys.windows.clone(),
            tracked: tracked.into_iter().collect(),
            grain: config.journeys.grain(),
        }
    }

    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// The windows kept in memory for the detectors.
    pub fn tracked(&self) -> &[Window] {
        &self.tracked
    }

    pub fn grain(&self) -> Window {
        self.grain
    }

    /// How far before the newest stored grain bucket the rows that rebuild the state reach.
    pub fn lookback(&self) -> Millis {
        self.tracked
            .iter()
            .map(|window| (TRACKED_WINDOWS + 1) * window.length())
            .max()
            .unwrap_or(0)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().map(|detector| detector.name.as_str())
    }

    /// Adds an observed event to the tracked windows and marks the detectors that fired on it.
    pub fn observe(&self, state: &mut JourneyState, observation: &Observation, fired: &[FiredRow]) {
        for window in &self.tracked {
            let start = window.start(observation.time);
            let series = state.series.entry(*window).or_default();
            series.advance(*window, start);
            if !series.tracks(*window, start) {
                continue;
            }
            let figures = series.entry(start, observation.stage_tag);
            figures.figures.add(&observation.delta);
            figures.accounts.insert(observation.account);
            for row in fired.iter().filter(|row| row.window == *window) {
                figures.fired |= self.bit(&row.detector);
            }
        }
    }

    /// Rebuilds the tracked windows from stored grain rows.
    pub fn restore(&self, snapshot: &JourneySnapshot) -> JourneyState {
        let mut state = JourneyState::default();
        let Some(newest) = snapshot.buckets.iter().map(|(key, _)| key.start).max() else {
            return state;
        };
        for window in &self.tracked {
            let series = state.series.entry(*window).or_default();
            series.advance(*window, window.start(newest));
            for (key, figures) in &snapshot.buckets {
                let start = window.start(key.start);
                if series.tracks(*window, start) {
                    series
                        .entry(start, stage_tag_digest(&key.stage, &key.tag))
                        .figures
                        .add(figures);
                }
            }
            for (key, account) in &snapshot.accounts {
                let start = window.start(key.start);
                if series.tracks(*window, start) {
                    series
                        .entry(start, stage_tag_digest(&key.stage, &key.tag))
                        .accounts
                        .insert(account_digest(account));
                }
            }
            for row in snapshot.fired.iter().filter(|row| row.window == *window) {
                if series.tracks(*window, row.start) {
                    series
                        .entry(row.start, stage_tag_digest(&row.stage, &row.tag))
                        .fired |= self.bit(&row.detector);
                }
            }
        }
        state
    }

    /// The fired-marker bit of the detector named `name` (none for a detector no longer configured).
    fn bit(&self, name: &str) -> u64 {
        self.detectors
            .iter()
            .position(|detector| detector.name == name)
            .map_or(0, |index| 1 << index)
    }

    /// The journey signals an observed event raises, judged on the state before it; with the fired
    /// rows to record. Changes nothing: the caller applies [`JourneyDetectors::observe`].
    pub fn detect(
        &self,
        state: &JourneyState,
        observation: &Observation,
    ) -> (Vec<Signal>, Vec<FiredRow>) {
        let mut signals = Vec::new();
        let mut fired = Vec::new();
        let dims = &observation.dims;
        let delta = &observation.delta;
        for (index, detector) in self.detectors.iter().enumerate() {
            let Some(key_tag) = self.key_tag(detector, dims.tag) else {
                continue;
            };
            // A comparison is judged on the events that change it.
            let contributes = match detector.kind {
                JourneyDetectorKind::AffectedAccounts => true,
                JourneyDetectorKind::NpsDrop => delta.nps_responses > 0,
                JourneyDetectorKind::TicketSurge => delta.tickets > 0,
            };
            if !contributes {
                continue;
            }
            let window = detector.window;
            let length = window.length();
            let start = window.start(observation.time);
            let series = state.series.get(&window);
            let newest = series
                .and_then(|series| series.newest)
                .map_or(start, |newest| newest.max(start));
            let floor = newest - (TRACKED_WINDOWS - 1) * length;
            if start < floor {
                continue;
            }
            let lookup =
                |start: Millis| series.and_then(|series| series.get(start, observation.stage_tag));
            let known = lookup(start);
            if known.is_some_and(|known| known.fired & (1 << index) != 0) {
                continue;
            }
            let current = known
                .map(|known| known.figures)
                .unwrap_or_default()
                .plus(delta);
            let accounts = known.map_or(0, |known| known.accounts.len() as u64)
                + u64::from(
                    !known.is_some_and(|known| known.accounts.contains(&observation.account)),
                );
            // The previous window is known only while it is tracked.
            let previous = (start - length >= floor).then(|| {
                let previous = lookup(start - length);
                (
                    previous
                        .map(|previous| previous.figures)
                        .unwrap_or_default(),
                    previous.map_or(0, |previous| previous.accounts.len() as u64),
                )
            });
            let judged = Judged {
                stage: dims.stage,
                tag: dims.tag,
                window,
                start,
                current,
                accounts,
                previous,
            };
            let Some((reason, threshold)) = self.verdict(detector, &judged) else {
                continue;
            };
            let (signal, row) = self.signal(
                detector,
                key_tag,
                &judged,
                observation.time,
                reason,
                threshold,
            );
            fired.push(row);
            signals.push(signal);
        }
        (signals, fired)
    }

    /// Distributed mode: judges the fleet's merged figures (every instance's partial rows added up)
    /// for the journey loop keys `owns` accepts, as of `time`; with the fired rows to record. A
    /// detector fires at most once per window, stage and tag, as in [`JourneyDetectors::detect`];
    /// the previous window is the one before in `fleet` (empty when absent).
    pub fn judge_fleet(
        &self,
        fleet: &FleetFigures,
        owns: impl Fn(&str) -> bool,
        time: Millis,
    ) -> Vec<(Signal, FiredRow)> {
        let fired: BTreeSet<(Window, Millis, &str, &str, &str)> = fleet
            .fired
            .iter()
            .map(|row| {
                (
                    row.window,
                    row.start,
                    row.stage.as_str(),
                    row.tag.as_str(),
                    row.detector.as_str(),
                )
            })
            .collect();
        let groups: BTreeMap<(Window, Millis, &str, &str), &FleetGroup> = fleet
            .groups
            .iter()
            .map(|group| {
                (
                    (
                        group.window,
                        group.start,
                        group.stage.as_str(),
                        group.tag.as_str(),
                    ),
                    group,
                )
            })
            .collect();
        let mut newest: BTreeMap<Window, Millis> = BTreeMap::new();
        for group in &fleet.groups {
            let start = newest.entry(group.window).or_insert(group.start);
            *start = (*start).max(group.start);
        }
        let mut found = Vec::new();
        for (&(window, start, stage, tag), group) in &groups {
            let length = window.length();
            if start < newest[&window] - (TRACKED_WINDOWS - 1) * length {
                // Only the previous window of the oldest judged one.
                continue;
            }
            let previous = groups
                .get(&(window, start - length, stage, tag))
                .map_or((Figures::default(), 0), |before| {
                    (before.figures, before.accounts)
                });
            let judged = Judged {
                stage,
                tag,
                window,
                start,
                current: group.figures,
                accounts: group.accounts,
                previous: Some(previous),
            };
            for detector in self
                .detectors
                .iter()
                .filter(|detector| detector.window == window)
            {
                let Some(key_tag) = self.key_tag(detector, tag) else {
                    continue;
                };
                if fired.contains(&(window, start, stage, tag, detector.name.as_str())) {
                    continue;
                }
                let Some((reason, threshold)) = self.verdict(detector, &judged) else {
                    continue;
                };
                let (signal, row) =
                    self.signal(detector, key_tag, &judged, time, reason, threshold);
                if owns(&signal.loop_key()) {
                    found.push((signal, row));
                }
            }
        }
        found
    }

    /// The reason and the threshold when `detector` finds that `judged` crossed its threshold.
    fn verdict(
        &self,
        detector: &JourneyDetectorConfig,
        judged: &Judged<'_>,
    ) -> Option<(String, String)> {
        let Judged {
            stage,
            tag,
            window,
            start,
            current,
            accounts,
            previous,
        } = *judged;
        match detector.kind {
            JourneyDetectorKind::AffectedAccounts => {
                let min = u64::from(detector.min_accounts.unwrap_or(u32::MAX));
                (accounts >= min).then(|| {
                    (
                        format!(
                            "{accounts} accounts on {tag} in the {} {stage} of {} (threshold {min})",
                            window.as_str(),
                            format_millis(start)
                        ),
                        format!("at least {min} accounts"),
                    )
                })
            }
            JourneyDetectorKind::NpsDrop => previous
                .and_then(|(before, _)| nps_drop(detector, &before, &current))
                .map(|(drop, min_drop)| {
                    (
                        format!(
                            "NPS of {tag} at {stage} fell {drop} points to {} against the previous {} ({}; threshold {min_drop})",
                            show(current.nps()),
                            window.as_str(),
                            show(previous.and_then(|(before, _)| before.nps())),
                        ),
                        format!(
                            "NPS down at least {min_drop} points, at least {} responses in both windows",
                            detector.min_responses.unwrap_or(0)
                        ),
                    )
                }),
            JourneyDetectorKind::TicketSurge => previous
                .and_then(|(before, _)| ticket_surge(detector, before.tickets, current.tickets))
                .map(|(change, percent)| {
                    (
                        format!(
                            "{} tickets on {tag} at {stage} this {}, {change} (threshold {percent}%)",
                            current.tickets,
                            window.as_str()
                        ),
                        format!(
                            "tickets up at least {percent}% against the previous {}, at least {} tickets",
                            window.as_str(),
                            detector.min_tickets.unwrap_or(0)
                        ),
                    )
                }),
        }
    }

    /// The journey signal of `detector` on `judged`, and its fired row.
    fn signal(
        &self,
        detector: &JourneyDetectorConfig,
        key_tag: &str,
        judged: &Judged<'_>,
        time: Millis,
        reason: String,
        threshold: String,
    ) -> (Signal, FiredRow) {
        let row = FiredRow {
            window: judged.window,
            start: judged.start,
            stage: judged.stage.to_owned(),
            tag: judged.tag.to_owned(),
            detector: detector.name.clone(),
        };
        let length = judged.window.length();
        let signal = Signal {
            kind: SignalKind::Journey,
            detector: detector.name.clone(),
            detector_kind: detector.kind.as_str(),
            severity: detector.severity,
            account_id: None,
            stage: Some(judged.stage.to_owned()),
            primary_tag: judged.tag.to_owned(),
            key_tag: key_tag.to_owned(),
            time,
            reason,
            journey: Some(Box::new(JourneyFigures {
                window: judged.window,
                stage: judged.stage.to_owned(),
                tag: judged.tag.to_owned(),
                current: WindowSummary::new(judged.start, &judged.current, judged.accounts),
                previous: judged.previous.map(|(before, before_accounts)| {
                    WindowSummary::new(judged.start - length, &before, before_accounts)
                }),
                threshold,
            })),
        };
        (signal, row)
    }

    /// The loop key's tag for a bucket, or `None` when the detector does not watch the bucket's tag.
    fn key_tag<'a>(&self, detector: &'a JourneyDetectorConfig, tag: &'a str) -> Option<&'a str> {
        let matches = |prefix: &String| tag_has_prefix(tag, prefix);
        if detector.exclude_tag_prefixes.iter().any(matches)
            || (!detector.tag_prefixes.is_empty() && !detector.tag_prefixes.iter().any(matches))
        {
            return None;
        }
        if tag == UNCATEGORIZED {
            detector.tag.as_deref()
        } else {
            Some(tag)
        }
    }
}

/// `Some((drop, min_drop))` when NPS fell at least `min_drop` points, with enough responses in both
/// windows. Compared exactly: prev - cur >= X  <=>  100((pp-pd)cn - (cp-cd)pn) >= X pn cn.
fn nps_drop(
    detector: &JourneyDetectorConfig,
    before: &Figures,
    current: &Figures,
) -> Option<(String, u32)> {
    let min_responses = u64::from(detector.min_responses?);
    let min_drop = detector.min_drop?;
    if before.nps_responses < min_responses || current.nps_responses < min_responses {
        return None;
    }
    let (pn, cn) = (
        i128::from(before.nps_responses),
        i128::from(current.nps_responses),
    );
    let before_net = i128::from(before.promoters) - i128::from(before.detractors);
    let current_net = i128::from(current.promoters) - i128::from(current.detractors);
    let scaled_drop = 100 * (before_net * cn - current_net * pn);
    (scaled_drop >= i128::from(min_drop) * pn * cn)
        .then(|| (format!("{}", round2(scaled_drop, pn * cn)), min_drop))
}

/// `Some((change, percent))` when tickets rose at least `percent` against the previous window (any
/// number against none), with at least `min_tickets` now.
fn ticket_surge(
    detector: &JourneyDetectorConfig,
    before: u64,
    current: u64,
) -> Option<(String, u32)> {
    let percent = detector.min_increase_percent?;
    let min_tickets = u64::from(detector.min_tickets?);
    if current < min_tickets {
        return None;
    }
    if before == 0 {
        return Some(("against none in the previous window".to_owned(), percent));
    }
    let (before, current) = (u128::from(before), u128::from(current));
    (current > before && (current - before) * 100 >= u128::from(percent) * before).then(|| {
        (
            format!(
                "up {}% from {before}",
                round2(((current - before) * 100) as i128, before as i128)
            ),
            percent,
        )
    })
}

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "none".to_owned(), |value| value.to_string())
}

fn serialize_time<S: Serializer>(millis: &Millis, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_millis(*millis))
}

fn deserialize_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Millis, D::Error> {
    let text = String::deserialize(deserializer)?;
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|time| time.timestamp_millis())
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests;
