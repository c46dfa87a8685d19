//! Account detectors that need time: an onboarding milestone missing some days after the account
//! started (an absence timer, cancelled when the milestone arrives), no activity for some days, and a
//! usage or error metric against its trailing baseline, judged when each window closes.
//!
//! Pure, like the rest of detection: events and due timers go in, the state changes to make and the
//! signals come out; the core applies them and storage keeps every pending timer and metric series,
//! so a restart neither loses nor repeats a timer.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::signals::{
    AccountDetectorConfig, AccountDetectorKind, SignalsConfig, Window, MAX_BASELINE_WINDOWS,
};
use crate::domain::{format_millis, AccountId, Event, EventData, Millis, MILLIS_PER_DAY};
use crate::route::Account;

/// A pending clock timer of a time detector (a milestone's absence, inactivity), stored until it fires
/// or is cancelled. Window closes of metric series are kept in the series (`next_close`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountTimer {
    /// `milestone:{detector}:{account}` or `inactive:{detector}:{account}`.
    pub key: String,
    pub due: Millis,
    pub account_id: AccountId,
    pub subject: TimerSubject,
}

/// What a timer is waiting for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimerSubject {
    /// The milestone of `detector` is due this long after `started_at`.
    Milestone {
        detector: String,
        started_at: Millis,
    },
    /// The account's last activity, for the inactivity `detector`.
    Inactive {
        detector: String,
        last_active: Millis,
    },
}

/// One account's metric summed per window, with the windows already judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSeries {
    pub key: String,
    /// The source of its events: its windows close when that source's event-time watermark passes.
    #[serde(default)]
    pub source: String,
    pub account_id: AccountId,
    pub metric: String,
    pub window: Window,
    /// The first window with a value: windows before it are unknown, not zero.
    pub first: Millis,
    /// (window start, sum of the values) of the newest windows (the longest baseline plus two), in
    /// order. A short vector, not a map: there are as many series as accounts x metrics, and a
    /// B-tree node per series cost about 150 bytes more each.
    pub sums: Vec<(Millis, f64)>,
    /// Windows up to this start have been judged.
    pub judged_through: Option<Millis>,
    /// The pending window close: when the next window to judge ends. It passes on the event time of
    /// the series' source (its watermark), not on the clock, so that a backfill judges each window
    /// only once its events are in. Stored with the series, so it needs no timer row of its own.
    #[serde(default)]
    pub next_close: Option<Millis>,
}

/// What the time detectors remember: pending timers, metric series, milestones reached.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeState {
    pub timers: HashMap<String, AccountTimer>,
    pub series: HashMap<String, MetricSeries>,
    /// (account, milestone) pairs reached, for the configured milestones only.
    pub milestones: HashSet<(AccountId, String)>,
}

/// The state changes an event or a timer makes; the caller applies them to [`TimeState`] and to the
/// batch's effects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeUpdate {
    pub timers: Vec<AccountTimer>,
    pub cancelled: Vec<String>,
    pub series: Vec<MetricSeries>,
    pub milestones: Vec<(AccountId, String)>,
    /// Metric series (by key) whose judged window was back at its baseline, with that window's end.
    pub recovered: Vec<(String, Millis)>,
}

impl TimeUpdate {
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
            && self.cancelled.is_empty()
            && self.series.is_empty()
            && self.milestones.is_empty()
    }
}

impl TimeState {
    pub fn apply(&mut self, update: &TimeUpdate) {
        for key in &update.cancelled {
            self.timers.remove(key);
        }
        for timer in &update.timers {
            self.timers.insert(timer.key.clone(), timer.clone());
        }
        for series in &update.series {
            self.series.insert(series.key.clone(), series.clone());
        }
        for pair in &update.milestones {
            self.milestones.insert(pair.clone());
        }
    }
}

/// A time detector's verdict: the detector and why.
#[derive(Debug, Clone)]
pub struct TimeSignal<'a> {
    pub detector: &'a AccountDetectorConfig,
    pub account_id: AccountId,
    pub reason: String,
}

/// The configured time detectors.
#[derive(Debug, Clone, Default)]
pub struct TimeDetectors {
    detectors: Vec<AccountDetectorConfig>,
    /// The (metric, window) series the metric detectors need, with the windows each keeps (the
    /// longest baseline plus the judged window and the open one).
    series: Vec<(String, Window, usize)>,
}

impl TimeDetectors {
    pub fn new(config: &SignalsConfig) -> TimeDetectors {
        let detectors: Vec<AccountDetectorConfig> = config
            .account_detectors
            .iter()
            .filter(|detector| detector.kind.needs_time())
            .cloned()
            .collect();
        let mut series: Vec<(String, Window, usize)> = Vec::new();
        for detector in &detectors {
            if let (Some(metric), Some(window)) = (&detector.metric, detector.window) {
                let keep = detector.baseline_windows.unwrap_or(MAX_BASELINE_WINDOWS) as usize + 2;
                match series
                    .iter_mut()
                    .find(|(name, kind, _)| name == metric && *kind == window)
                {
                    Some(known) => known.2 = known.2.max(keep),
                    None => series.push((metric.clone(), window, keep)),
                }
            }
        }
        TimeDetectors { detectors, series }
    }

    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// The metric series whose recovery verifies a loop with this key tag, if a usage-drop detector
    /// with `verify_recovered` raises loops on that tag.
    pub fn recovery_series(&self, account_id: &AccountId, tag: &str) -> Option<String> {
        self.detectors
            .iter()
            .find(|detector| {
                detector.kind == AccountDetectorKind::UsageDrop
                    && detector.verify_recovered
                    && detector.tag == tag
            })
            .and_then(|detector| {
                Some(series_key(
                    account_id,
                    detector.metric.as_deref()?,
                    detector.window?,
                ))
            })
    }

    fn of_kind(
        &self,
        kind: AccountDetectorKind,
    ) -> impl Iterator<Item = &AccountDetectorConfig> + '_ {
        self.detectors
            .iter()
            .filter(move |detector| detector.kind == kind)
    }

    /// What a directory update changes: `account` is the entry after the merge; `now` is the clock.
    /// A directory update is not activity.
    pub fn on_account(&self, account: &Account, now: Millis, state: &TimeState) -> TimeUpdate {
        let mut update = TimeUpdate::default();
        let account_id = &account.account_id;
        let Some(started_at) = account.started_at else {
            return update;
        };
        for detector in self.of_kind(AccountDetectorKind::MilestoneMissing) {
            let milestone = detector.milestone.clone().unwrap_or_default();
            if state.milestones.contains(&(account_id.clone(), milestone)) {
                continue;
            }
            let key = format!("milestone:{}:{account_id}", detector.name);
            let due = started_at + Millis::from(detector.after_days.unwrap_or(0)) * MILLIS_PER_DAY;
            // An account whose milestone was due before sigloop saw it arms nothing: what
            // happened before is unknown (a directory import would otherwise flood loops).
            if due <= now {
                continue;
            }
            if state.timers.get(&key).is_none_or(|timer| timer.due != due) {
                update.timers.push(AccountTimer {
                    key,
                    due,
                    account_id: account_id.clone(),
                    subject: TimerSubject::Milestone {
                        detector: detector.name.clone(),
                        started_at,
                    },
                });
            }
        }
        update
    }

    /// What any other `event` changes; `now` is the clock.
    pub fn on_event(&self, event: &Event, now: Millis, state: &TimeState) -> TimeUpdate {
        let mut update = TimeUpdate::default();
        let account_id = event.account_id();
        match &event.data {
            EventData::UsageMilestone(reached) => {
                for detector in self.of_kind(AccountDetectorKind::MilestoneMissing) {
                    let pair = (account_id.clone(), reached.milestone.clone());
                    if detector.milestone.as_deref() != Some(reached.milestone.as_str())
                        || state.milestones.contains(&pair)
                        || update.milestones.contains(&pair)
                    {
                        continue;
                    }
                    update.milestones.push(pair);
                    let key = format!("milestone:{}:{account_id}", detector.name);
                    if state.timers.contains_key(&key) {
                        update.cancelled.push(key);
                    }
                }
            }
            EventData::UsageMetric(metric) => {
                for (name, window, keep) in &self.series {
                    if *name == metric.metric {
                        self.add_to_series(event, *window, *keep, metric.value, state, &mut update);
                    }
                }
            }
            _ => {}
        }
        // Inactivity counts whole days: the timer moves at most once a day per account.
        for detector in self.of_kind(AccountDetectorKind::Inactive) {
            let due = Window::Day.start(event.time)
                + Millis::from(detector.days.unwrap_or(0) + 1) * MILLIS_PER_DAY;
            // An event already older than the quiet period (a backfill) arms nothing.
            if due <= now {
                continue;
            }
            let key = format!("inactive:{}:{account_id}", detector.name);
            if state.timers.get(&key).is_none_or(|timer| timer.due < due) {
                update.timers.push(AccountTimer {
                    key,
                    due,
                    account_id: account_id.clone(),
                    subject: TimerSubject::Inactive {
                        detector: detector.name.clone(),
                        last_active: event.time,
                    },
                });
            }
        }
        update
    }

    fn add_to_series(
        &self,
        event: &Event,
        window: Window,
        keep: usize,
        value: f64,
        state: &TimeState,
        update: &mut TimeUpdate,
    ) {
        let account_id = event.account_id();
        let metric = match &event.data {
            EventData::UsageMetric(metric) => metric.metric.as_str(),
            _ => return,
        };
        let key = series_key(account_id, metric, window);
        let start = window.start(event.time);
        let mut series = state.series.get(&key).cloned().unwrap_or(MetricSeries {
            key: key.clone(),
            source: event.source.clone(),
            account_id: account_id.clone(),
            metric: metric.to_owned(),
            window,
            first: start,
            sums: Vec::new(),
            judged_through: None,
            next_close: None,
        });
        series.first = series.first.min(start);
        match series
            .sums
            .binary_search_by_key(&start, |(window_start, _)| *window_start)
        {
            Ok(index) => series.sums[index].1 += value,
            Err(index) => series.sums.insert(index, (start, value)),
        }
        if series.sums.len() > keep {
            let excess = series.sums.len() - keep;
            series.sums.drain(..excess);
        }
        // The close of this window is judged unless it already was; an earlier open window first.
        let close = start + window.length();
        let judged = series.judged_through.is_some_and(|judged| start <= judged);
        if !judged && series.next_close.is_none_or(|due| close < due) {
            series.next_close = Some(close);
        }
        update.series.push(series);
    }

    /// A due timer: the signals it raises and what changes (the timer is consumed).
    pub fn on_timer<'a>(
        &'a self,
        timer: &AccountTimer,
        state: &TimeState,
    ) -> (Vec<TimeSignal<'a>>, TimeUpdate) {
        let mut signals = Vec::new();
        let update = TimeUpdate {
            cancelled: vec![timer.key.clone()],
            ..TimeUpdate::default()
        };
        let named = |name: &str| self.detectors.iter().find(|detector| detector.name == name);
        match &timer.subject {
            TimerSubject::Milestone {
                detector,
                started_at,
            } => {
                if let Some(detector) = named(detector) {
                    let milestone = detector.milestone.as_deref().unwrap_or_default();
                    if !state
                        .milestones
                        .contains(&(timer.account_id.clone(), milestone.to_owned()))
                    {
                        signals.push(TimeSignal {
                            detector,
                            account_id: timer.account_id.clone(),
                            reason: format!(
                                "milestone {milestone} not reached {} days after the account started ({})",
                                detector.after_days.unwrap_or(0),
                                format_millis(*started_at)
                            ),
                        });
                    }
                }
            }
            TimerSubject::Inactive {
                detector,
                last_active,
            } => {
                if let Some(detector) = named(detector) {
                    signals.push(TimeSignal {
                        detector,
                        account_id: timer.account_id.clone(),
                        reason: format!(
                            "no activity for {} days (last event {})",
                            detector.days.unwrap_or(0),
                            format_millis(*last_active)
                        ),
                    });
                }
            }
        }
        (signals, update)
    }

    /// The pending window close of the series `key` passed its source's watermark: the closed window
    /// is judged, and the next close armed while the series' recent windows hold any value.
    pub fn on_window_close<'a>(
        &'a self,
        key: &str,
        state: &TimeState,
    ) -> (Vec<TimeSignal<'a>>, TimeUpdate) {
        let mut signals = Vec::new();
        let mut update = TimeUpdate::default();
        if let Some(series) = state.series.get(key) {
            if let Some(close) = series.next_close {
                self.judge(
                    series,
                    close - series.window.length(),
                    &mut signals,
                    &mut update,
                );
            }
        }
        (signals, update)
    }

    /// Judges the closed window `start` of `series` with every metric detector on it; moves the
    /// series' pending close to the next window while its recent windows still hold any value.
    fn judge<'a>(
        &'a self,
        series: &MetricSeries,
        start: Millis,
        signals: &mut Vec<TimeSignal<'a>>,
        update: &mut TimeUpdate,
    ) {
        let window = series.window;
        let length = window.length();
        let sum_at = |start: Millis| {
            series
                .sums
                .binary_search_by_key(&start, |(window_start, _)| *window_start)
                .map_or(0.0, |index| series.sums[index].1)
        };
        let current = sum_at(start);
        for detector in self.detectors.iter().filter(|detector| {
            detector.metric.as_deref() == Some(series.metric.as_str())
                && detector.window == Some(window)
        }) {
            let windows = Millis::from(detector.baseline_windows.unwrap_or(1));
            let oldest = start - windows * length;
            // The baseline needs every one of its windows inside the known history.
            if oldest < series.first {
                continue;
            }
            let total = (1..=windows)
                .map(|back| sum_at(start - back * length))
                .sum::<f64>();
            let baseline = total / windows as f64;
            let percent = f64::from(detector.min_change_percent.unwrap_or(100));
            if baseline <= 0.0 || baseline < detector.min_baseline.unwrap_or(0.0) {
                continue;
            }
            if detector.kind == AccountDetectorKind::UsageDrop
                && current * windows as f64 >= total
                && !update.recovered.iter().any(|(key, _)| *key == series.key)
            {
                update.recovered.push((series.key.clone(), start + length));
            }
            let change = (current - baseline) / baseline * 100.0;
            // Compared without dividing (current x 100 x windows against the baseline total x
            // (100 -/+ percent)): exact for whole-numbered metrics, so a change of exactly the
            // threshold always fires.
            let scaled = current * 100.0 * windows as f64;
            let (fires, direction) = match detector.kind {
                AccountDetectorKind::UsageDrop => (scaled <= total * (100.0 - percent), "down"),
                AccountDetectorKind::ErrorSpike => (scaled >= total * (100.0 + percent), "up"),
                _ => (false, ""),
            };
            if fires {
                signals.push(TimeSignal {
                    detector,
                    account_id: series.account_id.clone(),
                    reason: format!(
                        "{} in the {} of {}: {} is {direction} {:.1}% against the mean of the {windows} {}s before ({}) (threshold {percent}%)",
                        series.metric,
                        window.as_str(),
                        format_millis(start),
                        round(current),
                        change.abs(),
                        window.as_str(),
                        round(baseline)
                    ),
                });
            }
        }
        let mut judged = series.clone();
        judged.judged_through = Some(start);
        judged.next_close = None;
        let next = start + length;
        let longest = self
            .detectors
            .iter()
            .filter(|detector| detector.metric.as_deref() == Some(series.metric.as_str()))
            .filter_map(|detector| detector.baseline_windows)
            .max()
            .unwrap_or(1);
        let recent = (0..=Millis::from(longest)).any(|back| sum_at(start - back * length) != 0.0);
        if recent {
            judged.next_close = Some(next + length);
        }
        update.series.push(judged);
    }
}

/// The key of an account's metric series over a window kind.
pub fn series_key(account_id: &AccountId, metric: &str, window: Window) -> String {
    format!("series:{account_id}:{metric}:{}", window.as_str())
}

/// Two decimals, for reasons.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
