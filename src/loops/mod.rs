//! Loops: the tracked work item a signal opens or joins, and the explicit, total state machine.
//!
//! `transition` is the one `match (state, action)` that lists every legal move; everything else is a
//! typed [`TransitionError`], which the API answers with 409 and which changes nothing.

pub mod sla;

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::routes::SignalKind;
use crate::config::signals::Severity;
use crate::domain::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopState {
    Open,
    Acknowledged,
    InProgress,
    Resolved,
    Verifying,
    Closed,
    Reopened,
}

impl LoopState {
    pub const ALL: [LoopState; 7] = [
        LoopState::Open,
        LoopState::Acknowledged,
        LoopState::InProgress,
        LoopState::Resolved,
        LoopState::Verifying,
        LoopState::Closed,
        LoopState::Reopened,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LoopState::Open => "open",
            LoopState::Acknowledged => "acknowledged",
            LoopState::InProgress => "in_progress",
            LoopState::Resolved => "resolved",
            LoopState::Verifying => "verifying",
            LoopState::Closed => "closed",
            LoopState::Reopened => "reopened",
        }
    }

    pub fn parse(value: &str) -> Option<LoopState> {
        LoopState::ALL
            .into_iter()
            .find(|state| state.as_str() == value)
    }

    /// States in which a new signal of the key joins the loop.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            LoopState::Open | LoopState::Acknowledged | LoopState::InProgress | LoopState::Reopened
        )
    }
}

impl fmt::Display for LoopState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Verified,
    Duplicate,
    WontFix,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Verified => "verified",
            CloseReason::Duplicate => "duplicate",
            CloseReason::WontFix => "wont_fix",
        }
    }

    pub fn parse(value: &str) -> Option<CloseReason> {
        match value {
            "verified" => Some(CloseReason::Verified),
            "duplicate" => Some(CloseReason::Duplicate),
            "wont_fix" | "won't fix" | "wontfix" => Some(CloseReason::WontFix),
            _ => None,
        }
    }
}

/// Operator actions (through the API) and system actions (from the clock and journeys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Acknowledge,
    Start,
    Resolve,
    Close {
        reason: CloseReason,
    },
    Reopen,
    Assign {
        owner: String,
    },
    Comment,
    /// System: the journey loop this loop is linked to was resolved (the fix shipped).
    JourneyFixed,
    /// System: a resolved loop starts its verification window.
    Verify,
    /// System: the verification window passed with no contradicting signal.
    Verified,
    /// System: an SLA deadline passed.
    Breach,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Start => "start",
            Action::Resolve => "resolve",
            Action::Close { .. } => "close",
            Action::Reopen => "reopen",
            Action::Assign { .. } => "assign",
            Action::Comment => "comment",
            Action::JourneyFixed => "journey_fixed",
            Action::Verify => "verify",
            Action::Verified => "verified",
            Action::Breach => "breach",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a loop that is {state}")]
pub struct TransitionError {
    pub state: LoopState,
    pub action: &'static str,
}

/// The state machine: every legal (state, action) pair and the state it leads to.
pub fn transition(state: LoopState, action: &Action) -> Result<LoopState, TransitionError> {
    use LoopState::*;
    let next = match (state, action) {
        (Open | Reopened, Action::Acknowledge) => Acknowledged,
        (Open | Reopened | Acknowledged, Action::Start) => InProgress,
        (Open | Reopened | Acknowledged | InProgress, Action::Resolve) => Resolved,
        (Open | Reopened | Acknowledged | InProgress, Action::JourneyFixed) => Resolved,
        // Already resolved: the fix still has to reach the customer (the task), the state stays.
        (Resolved | Verifying, Action::JourneyFixed) => state,
        (
            Open | Reopened | Acknowledged | InProgress | Resolved | Verifying,
            Action::Close { .. },
        ) => Closed,
        (Resolved | Verifying | Closed, Action::Reopen) => Reopened,
        (Resolved, Action::Verify) => Verifying,
        (Verifying, Action::Verified) => Closed,
        (Open | Reopened | Acknowledged | InProgress, Action::Breach) => state,
        (
            Open | Reopened | Acknowledged | InProgress | Resolved | Verifying,
            Action::Assign { .. },
        ) => state,
        (_, Action::Comment) => state,
        _ => {
            return Err(TransitionError {
                state,
                action: action.name(),
            })
        }
    };
    Ok(next)
}

/// Loop ids derive from the key and generation, so replays give the same ids.
pub fn loop_id(key: &str, generation: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key.as_bytes());
    hasher.update([0]);
    hasher.update(generation.to_le_bytes());
    format!("lp_{}", hex::encode(&hasher.finalize()[..10]))
}

/// Priority 1 (most urgent) to 4 from severity, one level more urgent for key tiers.
pub fn priority_for(severity: Severity, raised_tier: bool) -> u8 {
    let base = match severity {
        Severity::Critical => 1,
        Severity::High => 2,
        Severity::Medium => 3,
        Severity::Low => 4,
    };
    if raised_tier {
        (base - 1).max(1)
    } else {
        base
    }
}

/// The row of one loop, as the core keeps it and storage writes it. Evidence, history and the trace
/// are append-only rows of their own and are not kept in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopRecord {
    pub id: String,
    pub key: String,
    pub generation: u32,
    pub kind: SignalKind,
    pub account_id: Option<String>,
    pub tag: String,
    pub state: LoopState,
    pub close_reason: Option<CloseReason>,
    pub queue: String,
    pub owner: String,
    pub priority: u8,
    pub severity: Severity,
    pub sla_policy: Option<String>,
    pub ack_due: Option<Millis>,
    pub resolve_due: Option<Millis>,
    pub breached: bool,
    pub opened_at: Millis,
    pub updated_at: Millis,
    pub acknowledged_at: Option<Millis>,
    pub resolved_at: Option<Millis>,
    pub closed_at: Option<Millis>,
    /// How many times the loop was reopened.
    pub recurrence: u32,
    pub signal_count: u32,
    pub first_signal_at: Millis,
    pub last_signal_at: Millis,
    /// The previous generation of the same key.
    pub predecessor: Option<String>,
    pub watchers: Vec<String>,
    pub config_version: String,
    /// Number of history rows written so far; the next row's sequence number.
    pub history_len: u32,
    /// The journey stage: of the event that opened an account loop, or of a journey loop's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The journey loop an account loop is linked to (the newest link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journey_loop: Option<String>,
    /// Work the system handed to the owner, such as telling the customer a fix shipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<Task>,
    /// When the acknowledge deadline passed unmet (once per opening).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_breached_at: Option<Millis>,
    /// When the resolve deadline passed unmet (once per opening).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_breached_at: Option<Millis>,
    /// The end of the verification window while the loop is `verifying`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_due: Option<Millis>,
    /// While verifying under a policy that wants a survey: when a good enough survey arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_confirmed_at: Option<Millis>,
}

/// A pending deadline of a loop, as the core's timer index holds it: (due, kind, loop id). Derived
/// from the loop records (their `ack_due`, `resolve_due` and `verify_due`), so it is stored with them
/// and a restart rebuilds it: a timer is neither lost nor fired twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    Acknowledge,
    Resolve,
    Verification,
    /// A time detector's timer (an absence, inactivity or window close): the id is the timer's key.
    Detector,
}

impl LoopRecord {
    /// The deadlines still pending: each (due, kind) that would act on this loop when it passes.
    pub fn pending_timers(&self) -> Vec<(Millis, TimerKind)> {
        let mut timers = Vec::new();
        if matches!(self.state, LoopState::Open | LoopState::Reopened)
            && self.ack_breached_at.is_none()
        {
            if let Some(due) = self.ack_due {
                timers.push((due, TimerKind::Acknowledge));
            }
        }
        if self.state.is_active() && self.resolve_breached_at.is_none() {
            if let Some(due) = self.resolve_due {
                timers.push((due, TimerKind::Resolve));
            }
        }
        if self.state == LoopState::Verifying {
            if let Some(due) = self.verify_due {
                timers.push((due, TimerKind::Verification));
            }
        }
        timers
    }
}

/// A task for a loop's owner, created by a system action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// `tell_customer`: tell the customer that the fix of the linked journey loop shipped.
    pub kind: String,
    pub owner: String,
    pub created_at: Millis,
    /// The journey loop whose fix created the task.
    pub journey_loop: String,
    pub note: String,
}

/// A link between a journey loop and an account loop it explains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRow {
    pub journey_loop: String,
    pub account_loop: String,
    pub at: Millis,
}

/// One state change (or comment) of a loop, written in the same transaction as the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub loop_id: String,
    pub seq: u32,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub from_state: Option<LoopState>,
    pub to_state: LoopState,
    pub reason: Option<String>,
}

/// One signal attached to a loop, with references to the source record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRow {
    pub loop_id: String,
    /// Clock reading when the signal was attached.
    pub at: Millis,
    pub event_time: Millis,
    pub event_source: String,
    pub event_id: String,
    pub event_type: String,
    pub detector: String,
    pub severity: Severity,
    pub reason: String,
    pub primary_tag: String,
    /// The event's ranked tag matches with their evidence, as JSON.
    pub tags: serde_json::Value,
    /// Source-system references (ticket_id, response_id) that open the original.
    pub reference: serde_json::Value,
    /// How the signal met the loop: open, join or reopen.
    pub outcome: String,
    /// The journey buckets the event fed, stored compact (`journey::stored_feed`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::journey::stored_feed"
    )]
    pub journey: Option<crate::journey::Feed>,
}

impl LoopRecord {
    /// Applies a legal transition's side effects; the caller has already checked legality.
    pub fn apply_transition(&mut self, action: &Action, next: LoopState, now: Millis) {
        match action {
            Action::Acknowledge => self.acknowledged_at = Some(now),
            Action::Start => {
                if self.acknowledged_at.is_none() {
                    self.acknowledged_at = Some(now);
                }
            }
            Action::Resolve => self.resolved_at = Some(now),
            Action::JourneyFixed => {
                if self.state.is_active() {
                    self.resolved_at = Some(now);
                }
            }
            Action::Close { reason } => {
                self.closed_at = Some(now);
                self.close_reason = Some(*reason);
            }
            Action::Verified => {
                self.closed_at = Some(now);
                self.close_reason = Some(CloseReason::Verified);
            }
            Action::Reopen => {
                self.recurrence += 1;
                self.closed_at = None;
                self.close_reason = None;
                self.resolved_at = None;
                self.verify_due = None;
                self.verify_confirmed_at = None;
            }
            Action::Assign { owner } => self.owner = owner.clone(),
            Action::Breach => self.breached = true,
            Action::Verify | Action::Comment => {}
        }
        self.state = next;
        self.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_actions() -> Vec<Action> {
        vec![
            Action::Acknowledge,
            Action::Start,
            Action::Resolve,
            Action::Close {
                reason: CloseReason::Duplicate,
            },
            Action::Reopen,
            Action::Assign {
                owner: "x".to_owned(),
            },
            Action::Comment,
            Action::JourneyFixed,
            Action::Verified,
            Action::Breach,
        ]
    }

    #[test]
    fn the_happy_path_runs_open_to_closed() {
        let mut state = LoopState::Open;
        for action in [
            Action::Acknowledge,
            Action::Start,
            Action::Resolve,
            Action::Close {
                reason: CloseReason::Verified,
            },
        ] {
            state = transition(state, &action).unwrap();
        }
        assert_eq!(state, LoopState::Closed);
    }

    #[test]
    fn illegal_transitions_are_typed_errors() {
        let error = transition(LoopState::Closed, &Action::Acknowledge).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot acknowledge a loop that is closed"
        );
        assert!(transition(LoopState::Open, &Action::Reopen).is_err());
        assert!(transition(LoopState::Resolved, &Action::Start).is_err());
        assert!(transition(LoopState::Open, &Action::Verified).is_err());
    }

    #[test]
    fn operators_may_resolve_from_open_or_acknowledged_and_close_from_any_live_state() {
        assert_eq!(
            transition(LoopState::Open, &Action::Resolve),
            Ok(LoopState::Resolved)
        );
        assert_eq!(
            transition(LoopState::Acknowledged, &Action::Resolve),
            Ok(LoopState::Resolved)
        );
        for state in LoopState::ALL
            .into_iter()
            .filter(|state| *state != LoopState::Closed)
        {
            let close = Action::Close {
                reason: CloseReason::WontFix,
            };
            assert_eq!(
                transition(state, &close),
                Ok(LoopState::Closed),
                "from {state}"
            );
        }
    }

    #[test]
    fn the_state_machine_is_total_and_never_leaves_a_closed_loop_except_by_reopen_or_comment() {
        for action in all_actions() {
            let result = transition(LoopState::Closed, &action);
            match action {
                Action::Reopen => assert_eq!(result, Ok(LoopState::Reopened)),
                Action::Comment => assert_eq!(result, Ok(LoopState::Closed)),
                _ => assert!(result.is_err(), "{action:?}"),
            }
        }
    }

    #[test]
    fn loop_ids_derive_from_key_and_generation() {
        assert_eq!(
            loop_id("account:a:billing", 1),
            loop_id("account:a:billing", 1)
        );
        assert_ne!(
            loop_id("account:a:billing", 1),
            loop_id("account:a:billing", 2)
        );
        assert!(loop_id("k", 1).starts_with("lp_"));
    }

    #[test]
    fn key_tiers_raise_priority_but_never_above_p1() {
        assert_eq!(priority_for(Severity::Medium, false), 3);
        assert_eq!(priority_for(Severity::Medium, true), 2);
        assert_eq!(priority_for(Severity::Critical, true), 1);
    }
}
