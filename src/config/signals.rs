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
}

/// How signals join, reopen or open loops.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopPolicy {
    /// A signal reopens a loop closed as verified less than this many days ago (on the clock).
    pub reopen_window_days: u32,
}

impl Default for LoopPolicy {
    fn default() -> Self {
        LoopPolicy {
            reopen_window_days: 30,
        }
    }
}

impl LoopPolicy {
    pub fn reopen_window(&self) -> Millis {
        Millis::from(self.reopen_window_days) * MILLIS_PER_DAY
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
        }
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
            }
        }
        if self.loops.reopen_window_days == 0 {
            problems.push("signals: loops.reopen_window_days must be at least 1".to_owned());
        }
        problems
    }
}
