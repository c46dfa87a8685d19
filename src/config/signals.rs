//! `signals.toml`: the detectors that turn tagged events into signals, and the loop policy.

use std::collections::HashSet;

use serde::Deserialize;

use crate::domain::{Millis, TicketPriority, MILLIS_PER_DAY};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    #[serde(default)]
    pub loops: LoopPolicy,
    #[serde(default)]
    pub priority: PriorityPolicy,
    /// Account detectors, evaluated in this order for every event.
    #[serde(rename = "account", default)]
    pub account_detectors: Vec<AccountDetectorConfig>,
    /// How journey figures are bucketed.
    #[serde(default)]
    pub journeys: JourneyPolicy,
    /// Journey detectors, evaluated in this order for every aggregated event.
    #[serde(rename = "journey", default)]
    pub journey_detectors: Vec<JourneyDetectorConfig>,
}

/// A journey window: figures are bucketed by event time into windows of these lengths, in UTC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    Hour,
    Day,
    /// Monday 00:00 UTC to the next Monday.
    Week,
}

impl Window {
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Week];

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Week => "week",
        }
    }

    pub fn parse(value: &str) -> Option<Window> {
        Window::ALL
            .into_iter()
            .find(|window| window.as_str() == value)
    }

    pub fn length(self) -> Millis {
        match self {
            Window::Hour => MILLIS_PER_DAY / 24,
            Window::Day => MILLIS_PER_DAY,
            Window::Week => 7 * MILLIS_PER_DAY,
        }
    }

    /// Where the windows are aligned: the Unix epoch was a Thursday, so weeks start 4 days later.
    pub fn offset(self) -> Millis {
        match self {
            Window::Week => 4 * MILLIS_PER_DAY,
            _ => 0,
        }
    }

    /// The start of the window holding `time`.
    pub fn start(self, time: Millis) -> Millis {
        (time - self.offset()).div_euclid(self.length()) * self.length() + self.offset()
    }

    /// The start of the first window at or after `time`.
    pub fn ceiling(self, time: Millis) -> Millis {
        let start = self.start(time);
        if start == time {
            start
        } else {
            start + self.length()
        }
    }
}

/// The journey windows. The shortest one is the grain at which buckets are stored; the longer ones are
/// whole multiples of it (hours nest in days, days in weeks), so their figures are sums of grain rows
/// and their distinct accounts unions of the grain's account sets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyPolicy {
    pub windows: Vec<Window>,
}

impl Default for JourneyPolicy {
    fn default() -> Self {
        JourneyPolicy {
            windows: vec![Window::Day, Window::Week],
        }
    }
}

impl JourneyPolicy {
    /// The shortest configured window, at which buckets are stored.
    pub fn grain(&self) -> Window {
        self.windows.iter().copied().min().unwrap_or(Window::Day)
    }
}

/// What a journey detector compares, for one stage x tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JourneyDetectorKind {
    /// At least `min_accounts` distinct accounts in the window.
    AffectedAccounts,
    /// NPS down at least `min_drop` points against the previous window, with at least
    /// `min_responses` NPS responses in both.
    NpsDrop,
    /// Tickets opened up at least `min_increase_percent` against the previous window, with at least
    /// `min_tickets` in the window.
    TicketSurge,
}

impl JourneyDetectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JourneyDetectorKind::AffectedAccounts => "affected_accounts",
            JourneyDetectorKind::NpsDrop => "nps_drop",
            JourneyDetectorKind::TicketSurge => "ticket_surge",
        }
    }
}

/// The most windows a usage or error baseline may span (the metric series keep this many plus one).
pub const MAX_BASELINE_WINDOWS: u32 = 12;

/// Journey detectors per configuration: each has one bit in the journey state's fired markers.
pub const MAX_JOURNEY_DETECTORS: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyDetectorConfig {
    pub name: String,
    pub kind: JourneyDetectorKind,
    pub severity: Severity,
    /// The loop key's tag when the bucket's tag is `uncategorized`; without one, the detector leaves
    /// uncategorized buckets alone.
    #[serde(default)]
    pub tag: Option<String>,
    /// The window compared; one of `[journeys].windows`.
    pub window: Window,
    /// Only buckets whose tag is under one of these prefixes (all when empty).
    #[serde(default)]
    pub tag_prefixes: Vec<String>,
    /// Never buckets whose tag is under one of these prefixes (`uncategorized` included).
    #[serde(default)]
    pub exclude_tag_prefixes: Vec<String>,
    #[serde(default)]
    pub min_accounts: Option<u32>,
    #[serde(default)]
    pub min_drop: Option<u32>,
    #[serde(default)]
    pub min_responses: Option<u32>,
    #[serde(default)]
    pub min_increase_percent: Option<u32>,
    #[serde(default)]
    pub min_tickets: Option<u32>,
}

/// How signals join, reopen or open loops.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopPolicy {
    /// A signal reopens a loop closed as verified less than this many days ago (on the clock).
    pub reopen_window_days: u32,
    /// How many days a resolved loop waits in `verifying` when its SLA policy names no `verify_for`.
    #[serde(default = "default_verify_days")]
    pub verify_days: u32,
}

fn default_verify_days() -> u32 {
    7
}

impl Default for LoopPolicy {
    fn default() -> Self {
        LoopPolicy {
            reopen_window_days: 30,
            verify_days: default_verify_days(),
        }
    }
}

impl LoopPolicy {
    pub fn reopen_window(&self) -> Millis {
        Millis::from(self.reopen_window_days) * MILLIS_PER_DAY
    }

    pub fn verify_for(&self) -> Millis {
        Millis::from(self.verify_days) * MILLIS_PER_DAY
    }
}

/// Priority P1 (most urgent) to P4 from the detector's severity, raised one level for key tiers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityPolicy {
    /// Account tiers whose loops are one priority level more urgent (never above P1).
    pub raise_for_tiers: Vec<String>,
}

impl Default for PriorityPolicy {
    fn default() -> Self {
        PriorityPolicy {
            raise_for_tiers: vec!["enterprise".to_owned()],
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What an account detector looks for. Each kind reads its own parameters; validate() checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountDetectorKind {
    /// An NPS response with score at most `max_score`.
    Detractor,
    /// A CSAT response with score at most `max_score`.
    LowCsat,
    /// A CES response with score at least `min_score`.
    HighEffort,
    /// A ticket opened or updated with one of `priorities`.
    UrgentTicket,
    /// An event whose primary tag starts with one of `tag_prefixes`.
    ChurnIntent,
    /// A ticket.reopened event.
    TicketReopened,
    /// At least `min_tickets` tickets opened on one tag for one account within `window_days` of event time.
    RepeatTickets,
    /// The onboarding milestone `milestone` not reached `after_days` days after the account's
    /// `started_at` (an absence timer, cancelled when the milestone arrives).
    MilestoneMissing,
    /// No activity (any event but `account.upserted`) for `days` days.
    Inactive,
    /// The usage metric `metric` summed over a closed `window` down at least `min_change_percent`
    /// against the mean of the `baseline_windows` windows before it.
    UsageDrop,
    /// The error metric `metric` summed over a closed `window` up at least `min_change_percent`
    /// against the mean of the `baseline_windows` windows before it.
    ErrorSpike,
}

impl AccountDetectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountDetectorKind::Detractor => "detractor",
            AccountDetectorKind::LowCsat => "low_csat",
            AccountDetectorKind::HighEffort => "high_effort",
            AccountDetectorKind::UrgentTicket => "urgent_ticket",
            AccountDetectorKind::ChurnIntent => "churn_intent",
            AccountDetectorKind::TicketReopened => "ticket_reopened",
            AccountDetectorKind::RepeatTickets => "repeat_tickets",
            AccountDetectorKind::MilestoneMissing => "milestone_missing",
            AccountDetectorKind::Inactive => "inactive",
            AccountDetectorKind::UsageDrop => "usage_drop",
            AccountDetectorKind::ErrorSpike => "error_spike",
        }
    }

    /// Detectors that act when time passes (timers), not on the event in hand.
    pub fn needs_time(self) -> bool {
        matches!(
            self,
            AccountDetectorKind::MilestoneMissing
                | AccountDetectorKind::Inactive
                | AccountDetectorKind::UsageDrop
                | AccountDetectorKind::ErrorSpike
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountDetectorConfig {
    /// Unique detector name, used in traces and as a metric label.
    pub name: String,
    pub kind: AccountDetectorKind,
    pub severity: Severity,
    /// The detector's own tag, used for the loop key when the event's primary tag is `uncategorized`.
    pub tag: String,
    #[serde(default)]
    pub max_score: Option<u8>,
    #[serde(default)]
    pub min_score: Option<u8>,
    #[serde(default)]
    pub priorities: Vec<TicketPriority>,
    #[serde(default)]
    pub tag_prefixes: Vec<String>,
    #[serde(default)]
    pub min_tickets: Option<u32>,
    #[serde(default)]
    pub window_days: Option<u32>,
    /// milestone_missing: the milestone (as `usage.milestone` names it) and how many days after
    /// `started_at` it is due.
    #[serde(default)]
    pub milestone: Option<String>,
    #[serde(default)]
    pub after_days: Option<u32>,
    /// inactive: days without activity.
    #[serde(default)]
    pub days: Option<u32>,
    /// usage_drop, error_spike: the `usage.metric` metric, the window its values are summed over (day
    /// or week), how many windows before it make the baseline, the change that fires, and the
    /// smallest baseline mean worth judging.
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub window: Option<Window>,
    #[serde(default)]
    pub baseline_windows: Option<u32>,
    #[serde(default)]
    pub min_change_percent: Option<u32>,
    #[serde(default)]
    pub min_baseline: Option<f64>,
    /// usage_drop: a loop it raised is verified only once a window of the metric is back at its
    /// baseline (at least the mean of the windows before it) after the loop was resolved.
    #[serde(default)]
    pub verify_recovered: bool,
}

impl SignalsConfig {
    /// Every problem at once. `is_tag` tells whether a tag id exists in the taxonomy.
    pub fn validate(&self, is_tag: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        for detector in &self.account_detectors {
            let name = format!("signals: detector `{}`", detector.name);
            if detector.name.is_empty() {
                problems.push("signals: a detector has an empty name".to_owned());
            }
            if !names.insert(detector.name.as_str()) {
                problems.push(format!("{name} is defined twice"));
            }
            if !is_tag(&detector.tag) {
                problems.push(format!(
                    "{name} uses tag `{}`, which is not in the taxonomy",
                    detector.tag
                ));
            }
            let needs = |present: bool, parameter: &str, problems: &mut Vec<String>| {
                if !present {
                    problems.push(format!(
                        "{name} of kind {} needs `{parameter}`",
                        detector.kind.as_str()
                    ));
                }
            };
            match detector.kind {
                AccountDetectorKind::Detractor | AccountDetectorKind::LowCsat => {
                    needs(detector.max_score.is_some(), "max_score", &mut problems)
                }
                AccountDetectorKind::HighEffort => {
                    needs(detector.min_score.is_some(), "min_score", &mut problems)
                }
                AccountDetectorKind::UrgentTicket => {
                    needs(!detector.priorities.is_empty(), "priorities", &mut problems)
                }
                AccountDetectorKind::ChurnIntent => needs(
                    !detector.tag_prefixes.is_empty(),
                    "tag_prefixes",
                    &mut problems,
                ),
                AccountDetectorKind::TicketReopened => {}
                AccountDetectorKind::RepeatTickets => {
                    needs(
                        detector.min_tickets.is_some_and(|count| count >= 2),
                        "min_tickets (at least 2)",
                        &mut problems,
                    );
                    needs(
                        detector.window_days.is_some_and(|days| days >= 1),
                        "window_days (at least 1)",
                        &mut problems,
                    );
                }
                AccountDetectorKind::MilestoneMissing => {
                    needs(
                        detector
                            .milestone
                            .as_deref()
                            .is_some_and(|milestone| !milestone.is_empty()),
                        "milestone",
                        &mut problems,
                    );
                    needs(
                        detector.after_days.is_some_and(|days| days >= 1),
                        "after_days (at least 1)",
                        &mut problems,
                    );
                }
                AccountDetectorKind::Inactive => needs(
                    detector.days.is_some_and(|days| days >= 1),
                    "days (at least 1)",
                    &mut problems,
                ),
                AccountDetectorKind::UsageDrop | AccountDetectorKind::ErrorSpike => {
                    needs(
                        detector
                            .metric
                            .as_deref()
                            .is_some_and(|metric| !metric.is_empty()),
                        "metric",
                        &mut problems,
                    );
                    needs(
                        matches!(detector.window, Some(Window::Day | Window::Week)),
                        "window (day or week)",
                        &mut problems,
                    );
                    needs(
                        detector
                            .baseline_windows
                            .is_some_and(|windows| (1..=MAX_BASELINE_WINDOWS).contains(&windows)),
                        "baseline_windows (1 to 12)",
                        &mut problems,
                    );
                    needs(
                        detector.min_change_percent.is_some_and(|percent| {
                            percent >= 1
                                && (detector.kind == AccountDetectorKind::ErrorSpike
                                    || percent <= 100)
                        }),
                        "min_change_percent (1 to 100 for a drop, at least 1 for a spike)",
                        &mut problems,
                    );
                    needs(
                        detector
                            .min_baseline
                            .is_none_or(|baseline| baseline.is_finite() && baseline >= 0.0),
                        "a finite, non-negative min_baseline",
                        &mut problems,
                    );
                }
            }
        }
        if self.journeys.windows.is_empty() {
            problems.push("signals: journeys.windows names no window".to_owned());
        }
        // The journey state marks fired detectors in one 64-bit word per window, stage and tag.
        if self.journey_detectors.len() > MAX_JOURNEY_DETECTORS {
            problems.push(format!(
                "signals: {} journey detectors configured, at most {MAX_JOURNEY_DETECTORS} are supported",
                self.journey_detectors.len()
            ));
        }
        for detector in &self.journey_detectors {
            let name = format!("signals: journey detector `{}`", detector.name);
            if detector.name.is_empty() {
                problems.push("signals: a journey detector has an empty name".to_owned());
            }
            if !names.insert(detector.name.as_str()) {
                problems.push(format!("{name} is defined twice"));
            }
            if let Some(tag) = detector.tag.as_deref().filter(|tag| !is_tag(tag)) {
                problems.push(format!(
                    "{name} uses tag `{tag}`, which is not in the taxonomy"
                ));
            }
            if !self.journeys.windows.contains(&detector.window) {
                problems.push(format!(
                    "{name} uses window `{}`, which is not in journeys.windows",
                    detector.window.as_str()
                ));
            }
            let needs = |present: bool, parameter: &str, problems: &mut Vec<String>| {
                if !present {
                    problems.push(format!(
                        "{name} of kind {} needs `{parameter}`",
                        detector.kind.as_str()
                    ));
                }
            };
            match detector.kind {
                JourneyDetectorKind::AffectedAccounts => needs(
                    detector.min_accounts.is_some_and(|count| count >= 1),
                    "min_accounts (at least 1)",
                    &mut problems,
                ),
                JourneyDetectorKind::NpsDrop => {
                    needs(
                        detector
                            .min_drop
                            .is_some_and(|points| (1..=200).contains(&points)),
                        "min_drop (1 to 200 points)",
                        &mut problems,
                    );
                    needs(
                        detector.min_responses.is_some_and(|count| count >= 1),
                        "min_responses (at least 1)",
                        &mut problems,
                    );
                }
                JourneyDetectorKind::TicketSurge => {
                    needs(
                        detector
                            .min_increase_percent
                            .is_some_and(|percent| percent >= 1),
                        "min_increase_percent (at least 1)",
                        &mut problems,
                    );
                    needs(
                        detector.min_tickets.is_some_and(|count| count >= 1),
                        "min_tickets (at least 1)",
                        &mut problems,
                    );
                }
            }
        }
        if self.loops.verify_days == 0 {
            problems.push("signals: loops.verify_days must be at least 1".to_owned());
        }
        if self.loops.reopen_window_days == 0 {
            problems.push("signals: loops.reopen_window_days must be at least 1".to_owned());
        }
        problems
    }
}
