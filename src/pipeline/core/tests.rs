//! Unit tests of the pure core: log entries in, effects and state out, with no runtime and no database.
//!
//! Every test builds the core from the embedded configuration (the shipped `config/` files) and feeds
//! it CloudEvents JSON and serialized operator actions, as the processor reads them from the log. The
//! clock is `BatchClock::EventTime`, so each test controls time through the times it writes.

use serde_json::{json, Value};

use super::*;
use crate::domain::{format_millis, MILLIS_PER_DAY};
use crate::gen::{generate, GenOptions};

/// 2026-01-05T00:00:00Z.
const START: Millis = 1_767_571_200_000;
const HOUR: Millis = 3_600_000;
const MINUTE: Millis = 60_000;

/// A core, its state and the next log sequence number: one processor's view of the log.
struct Fixture {
    core: Core,
    state: CoreState,
    next_seq: i64,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            core: Core::new(&Config::embedded()).expect("the embedded configuration compiles"),
            state: CoreState::default(),
            next_seq: 1,
        }
    }

    /// Without the detectors that need time: for cases whose quiet weeks would otherwise raise the
    /// inactivity detector's own loop beside the one under test.
    fn without_time_detectors() -> Fixture {
        let mut config = Config::embedded();
        config
            .signals
            .account_detectors
            .retain(|detector| !detector.kind.needs_time());
        Fixture {
            core: Core::new(&config).expect("the embedded configuration compiles"),
            state: CoreState::default(),
            next_seq: 1,
        }
    }

    fn take_seq(&mut self) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn event_entry(&mut self, event: &Value) -> LogEntry {
        LogEntry {
            seq: self.take_seq(),
            kind: EntryKind::Event,
            source: event["source"].as_str().unwrap_or_default().to_owned(),
            id: event["id"].as_str().unwrap_or_default().to_owned(),
            payload: event.to_string(),
        }
    }

    fn action_entry(&mut self, request: &ActionRequest) -> LogEntry {
        let seq = self.take_seq();
        LogEntry {
            seq,
            kind: EntryKind::Action,
            source: "api".to_owned(),
            id: format!("action-{seq}"),
            payload: serde_json::to_string(request).expect("actions serialize"),
        }
    }

    fn process(&mut self, entries: &[LogEntry]) -> BatchEffects {
        self.core
            .process_batch(&mut self.state, entries, BatchClock::EventTime)
    }

    /// Appends one event to the log and processes it as a batch of its own.
    fn send(&mut self, event: Value) -> BatchEffects {
        let entry = self.event_entry(&event);
        self.process(&[entry])
    }

    /// Appends one operator action to the log and processes it as a batch of its own.
    fn act(
        &mut self,
        loop_id: &str,
        action: Action,
        actor: &str,
        note: Option<&str>,
        time: Millis,
    ) -> (ActionOutcome, BatchEffects) {
        let request = ActionRequest {
            loop_id: loop_id.to_owned(),
            action,
            actor: actor.to_owned(),
            note: note.map(str::to_owned),
            time,
        };
        let entry = self.action_entry(&request);
        let effects = self.process(std::slice::from_ref(&entry));
        assert_eq!(effects.action_outcomes.len(), 1, "one action, one outcome");
        let (seq, outcome) = effects.action_outcomes[0].clone();
        assert_eq!(
            seq, entry.seq,
            "the outcome is filed under the action's seq"
        );
        (outcome, effects)
    }

    fn current(&self, key: &str) -> &LoopRecord {
        self.state
            .current_loop(key)
            .unwrap_or_else(|| panic!("no current loop for {key}"))
    }
}

fn cloud_event(source: &str, id: &str, event_type: &str, time: Millis, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": event_type,
        "time": format_millis(time),
        "data": data,
    })
}

fn account_upserted(account_id: &str, tier: &str, csm: Option<&str>, time: Millis) -> Value {
    let mut data = json!({
        "account_id": account_id,
        "name": format!("{account_id} Inc."),
        "tier": tier,
        "region": "emea",
    });
    if let Some(csm) = csm {
        data["csm"] = csm.into();
    }
    cloud_event(
        "salesforce",
        &format!("upsert-{account_id}-{time}"),
        "account.upserted",
        time,
        data,
    )
}

fn survey(
    response_id: &str,
    account_id: &str,
    kind: &str,
    score: u8,
    comment: Option<&str>,
    time: Millis,
) -> Value {
    let mut data = json!({
        "response_id": response_id,
        "account_id": account_id,
        "kind": kind,
        "score": score,
    });
    if let Some(comment) = comment {
        data["comment"] = comment.into();
    }
    cloud_event(
        "delighted",
        &format!("event-{response_id}"),
        "survey.responded",
        time,
        data,
    )
}

/// An NPS response with no comment: uncategorized, so a detractor's key uses `sentiment.detractor`.
fn nps(response_id: &str, account_id: &str, score: u8, time: Millis) -> Value {
    survey(response_id, account_id, "nps", score, None, time)
}

fn detractor_key(account_id: &str) -> String {
    format!("account:{account_id}:sentiment.detractor")
}

fn decoded(event: &Value) -> Event {
    decode::decode_event(event.to_string().as_bytes()).expect("test events decode")
}

/// CoreState has no PartialEq (it is never compared in production), so compare it field by field.
fn assert_same_state(before: &CoreState, after: &CoreState) {
    assert_eq!(before.offset, after.offset, "offset");
    assert_eq!(before.clock, after.clock, "clock");
    assert_eq!(before.accounts, after.accounts, "accounts");
    assert_eq!(before.loops, after.loops, "loops");
    assert_eq!(before.current, after.current, "current generations");
    assert_eq!(before.detectors, after.detectors, "detector state");
    assert_eq!(before.router, after.router, "router state");
}

/// An enterprise account with a detractor loop opened at `START + 1h`; returns the loop's id.
fn enterprise_with_open_detractor_loop(fixture: &mut Fixture) -> String {
    fixture.send(account_upserted(
        "acct-ent",
        "enterprise",
        Some("ana.lima"),
        START,
    ));
    fixture.send(nps("r-1", "acct-ent", 3, START + HOUR));
    fixture.current(&detractor_key("acct-ent")).id.clone()
}

/// The loop of [`enterprise_with_open_detractor_loop`], resolved and then closed with `reason` at
/// `closed_at`.
fn enterprise_with_closed_detractor_loop(
    fixture: &mut Fixture,
    reason: CloseReason,
    closed_at: Millis,
) -> String {
    let id = enterprise_with_open_detractor_loop(fixture);
    let (outcome, _) = fixture.act(&id, Action::Resolve, "ana.lima", None, closed_at - HOUR);
    assert_eq!(
        outcome,
        ActionOutcome::Applied {
            state: LoopState::Verifying
        }
    );
    let (outcome, _) = fixture.act(&id, Action::Close { reason }, "ana.lima", None, closed_at);
    assert_eq!(
        outcome,
        ActionOutcome::Applied {
            state: LoopState::Closed
        }
    );
    assert_eq!(fixture.state.loops[&id].closed_at, Some(closed_at));
    id
}

#[test]
fn a_detractor_for_a_directory_account_opens_a_loop_routed_to_its_csm_with_history_evidence_and_trace(
) {
    let mut fixture = Fixture::new();
    fixture.send(account_upserted(
        "acct-ent",
        "enterprise",
        Some("ana.lima"),
        START,
    ));
    let signal_time = START + HOUR;
    let effects = fixture.send(nps("r-1", "acct-ent", 3, signal_time));

    let key = detractor_key("acct-ent");
    let id = loop_id(&key, 1);
    assert_eq!(effects.loops.keys().collect::<Vec<_>>(), vec![&id]);
    let record = &effects.loops[&id];
    assert_eq!(
        record, &fixture.state.loops[&id],
        "effects mirror the state"
    );
    assert_eq!(fixture.state.current.get(&key), Some(&id));
    assert_eq!(record.key, key);
    assert_eq!(record.generation, 1);
    assert_eq!(record.state, LoopState::Open);
    assert_eq!(record.tag, "sentiment.detractor");
    assert_eq!(record.account_id.as_deref(), Some("acct-ent"));
    // routes.toml: enterprise > enterprise-critical (severity high), queue and CSM owner inherited.
    assert_eq!(record.queue, "cs-enterprise");
    assert_eq!(record.owner, "ana.lima");
    assert_eq!(record.watchers, vec!["cs-enterprise-lead".to_owned()]);
    assert_eq!(record.sla_policy.as_deref(), Some("urgent"));
    assert_eq!(record.ack_due, Some(signal_time + HOUR));
    assert_eq!(record.resolve_due, Some(signal_time + 24 * HOUR));
    // Detractor is high severity (P2), raised one level for the enterprise tier.
    assert_eq!(record.priority, 1);
    assert_eq!(record.severity, Severity::High);
    assert_eq!(record.signal_count, 1);
    assert_eq!(record.recurrence, 0);
    assert_eq!(record.predecessor, None);
    assert_eq!(record.opened_at, signal_time);
    assert_eq!(record.first_signal_at, signal_time);
    assert_eq!(record.last_signal_at, signal_time);
    assert_eq!(record.history_len, 1);
    assert_eq!(record.config_version, fixture.core.config_version());

    assert_eq!(effects.history.len(), 1);
    let opened = &effects.history[0];
    assert_eq!(opened.loop_id, id);
    assert_eq!(opened.seq, 0);
    assert_eq!(opened.at, signal_time);
    assert_eq!(opened.actor, SYSTEM_ACTOR);
    assert_eq!(opened.action, "open");
    assert_eq!(opened.from_state, None);
    assert_eq!(opened.to_state, LoopState::Open);
    assert!(opened
        .reason
        .as_deref()
        .is_some_and(|reason| reason.starts_with("detractor: NPS score 3")));

    assert_eq!(effects.evidence.len(), 1);
    let evidence = &effects.evidence[0];
    assert_eq!(evidence.loop_id, id);
    assert_eq!(evidence.outcome, "open");
    assert_eq!(evidence.detector, "detractor");
    assert_eq!(evidence.event_source, "delighted");
    assert_eq!(evidence.event_id, "event-r-1");
    assert_eq!(evidence.event_type, "survey.responded");
    assert_eq!(evidence.event_time, signal_time);
    assert_eq!(evidence.primary_tag, "uncategorized");
    assert_eq!(
        evidence.reference,
        json!({"source": "delighted", "event_id": "event-r-1", "response_id": "r-1"})
    );

    assert_eq!(effects.signals.len(), 1);
    assert_eq!(effects.signals[0].loop_id, id);
    assert_eq!(effects.signals[0].tag, "sentiment.detractor");

    assert_eq!(effects.traces.len(), 1);
    let (trace_loop, trace_json) = &effects.traces[0];
    assert_eq!(trace_loop, &id);
    let trace: Value = serde_json::from_str(trace_json).expect("traces are JSON");
    assert_eq!(trace["detector"], "detractor");
    assert_eq!(
        trace["route"]["path"],
        json!(["root", "enterprise", "enterprise-critical"])
    );
    assert_eq!(trace["route"]["queue"], "cs-enterprise");
    assert_eq!(trace["route"]["owner"], "ana.lima");
    assert_eq!(trace["priority"], 1);
    assert_eq!(trace["sla"]["policy"], "urgent");
    assert_eq!(trace["event"]["reference"]["response_id"], "r-1");
    assert_eq!(trace["config_version"], fixture.core.config_version());

    assert_eq!(effects.offset, 2);
    assert_eq!(effects.clock, signal_time);
    assert_eq!(
        effects
            .stats
            .loop_changes
            .get(&("cs-enterprise".to_owned(), "opened")),
        Some(&1)
    );
}

#[test]
fn a_second_signal_for_the_same_key_joins_the_loop_and_a_more_severe_one_escalates_it() {
    let mut fixture = Fixture::new();
    fixture.send(account_upserted(
        "acct-mid",
        "mid-market",
        Some("dev.patel"),
        START,
    ));
    // Both comments tag billing.invoice-error, so the low-CSAT and detractor signals share one key.
    let first = fixture.send(survey(
        "r-1",
        "acct-mid",
        "csat",
        1,
        Some("The invoice is wrong."),
        START + HOUR,
    ));
    let key = "account:acct-mid:billing.invoice-error";
    let id = loop_id(key, 1);
    assert_eq!(first.loops[&id].priority, 3, "low-csat is medium: P3");
    assert_eq!(first.loops[&id].queue, "cs-mid-market");
    assert_eq!(first.loops[&id].owner, "dev.patel");

    let second = fixture.send(survey(
        "r-2",
        "acct-mid",
        "nps",
        2,
        Some("The invoice is wrong again."),
        START + 2 * HOUR,
    ));
    assert_eq!(fixture.state.loops.len(), 1, "joining opens no new loop");
    assert!(second.traces.is_empty());
    let record = &fixture.state.loops[&id];
    assert_eq!(record.state, LoopState::Open);
    assert_eq!(record.signal_count, 2);
    assert_eq!(record.priority, 2, "the detractor is high severity: P2");
    assert_eq!(record.last_signal_at, START + 2 * HOUR);
    assert_eq!(record.first_signal_at, START + HOUR);
    assert_eq!(second.loops[&id], *record);
    assert_eq!(second.evidence.len(), 1);
    assert_eq!(second.evidence[0].outcome, "join");
    assert_eq!(second.evidence[0].detector, "detractor");
    assert_eq!(second.evidence[0].reference["response_id"], "r-2");
    assert_eq!(second.history.len(), 1);
    let escalated = &second.history[0];
    assert_eq!(escalated.action, "escalate");
    assert_eq!(escalated.seq, 1);
    assert_eq!(escalated.actor, SYSTEM_ACTOR);
    assert_eq!(escalated.from_state, Some(LoopState::Open));
    assert_eq!(escalated.to_state, LoopState::Open);
    assert!(escalated
        .reason
        .as_deref()
        .is_some_and(|reason| reason.starts_with("priority raised to P2 by detractor")));

    // A less severe signal still joins (evidence grows) but changes no priority, so no history row.
    let third = fixture.send(survey(
        "r-3",
        "acct-mid",
        "csat",
        2,
        Some("The invoice is wrong, still."),
        START + 3 * HOUR,
    ));
    let record = &fixture.state.loops[&id];
    assert_eq!(record.signal_count, 3);
    assert_eq!(record.priority, 2);
    assert_eq!(third.evidence.len(), 1);
    assert_eq!(third.evidence[0].outcome, "join");
    assert!(third.history.is_empty());
}

#[test]
fn a_signal_for_a_resolved_loop_reopens_it_and_counts_one_recurrence() {
    let mut fixture = Fixture::new();
    let id = enterprise_with_open_detractor_loop(&mut fixture);
    let (outcome, _) = fixture.act(&id, Action::Resolve, "ana.lima", None, START + 90 * MINUTE);
    assert_eq!(
        outcome,
        ActionOutcome::Applied {
            state: LoopState::Verifying
        }
    );

    let reopened_at = START + 3 * HOUR;
    let effects = fixture.send(nps("r-2", "acct-ent", 4, reopened_at));
    assert_eq!(fixture.state.loops.len(), 1, "reopening opens no new loop");
    let record = &fixture.state.loops[&id];
    assert_eq!(record.state, LoopState::Reopened);
    assert_eq!(record.generation, 1);
    assert_eq!(record.recurrence, 1);
    assert_eq!(record.resolved_at, None);
    assert_eq!(record.signal_count, 2);
    // SLA deadlines restart from the reopening (urgent: ack 1h, resolve 1 day).
    assert_eq!(record.ack_due, Some(reopened_at + HOUR));
    assert_eq!(record.resolve_due, Some(reopened_at + 24 * HOUR));
    assert_eq!(effects.loops[&id], *record);
    assert_eq!(effects.history.len(), 1);
    let reopen = &effects.history[0];
    assert_eq!(reopen.action, "reopen");
    assert_eq!(reopen.actor, SYSTEM_ACTOR);
    assert_eq!(reopen.from_state, Some(LoopState::Verifying));
    assert_eq!(reopen.to_state, LoopState::Reopened);
    assert_eq!(reopen.at, reopened_at);
    assert_eq!(effects.evidence.len(), 1);
    assert_eq!(effects.evidence[0].outcome, "reopen");
    assert_eq!(
        effects
            .stats
            .loop_changes
            .get(&("cs-enterprise".to_owned(), "reopened")),
        Some(&1)
    );
}

#[test]
fn a_signal_within_the_reopen_window_of_a_loop_closed_as_verified_reopens_it() {
    let mut fixture = Fixture::without_time_detectors();
    let closed_at = START + 2 * MILLIS_PER_DAY;
    let id = enterprise_with_closed_detractor_loop(&mut fixture, CloseReason::Verified, closed_at);

    let effects = fixture.send(nps("r-2", "acct-ent", 5, closed_at + 29 * MILLIS_PER_DAY));
    assert_eq!(fixture.state.loops.len(), 1);
    assert_eq!(fixture.state.current[&detractor_key("acct-ent")], id);
    let record = &fixture.state.loops[&id];
    assert_eq!(record.state, LoopState::Reopened);
    assert_eq!(record.recurrence, 1);
    assert_eq!(record.close_reason, None);
    assert_eq!(record.closed_at, None);
    assert_eq!(effects.history.len(), 1);
    assert_eq!(effects.history[0].action, "reopen");
    assert_eq!(effects.history[0].from_state, Some(LoopState::Closed));
    assert_eq!(effects.history[0].to_state, LoopState::Reopened);
    assert!(effects.traces.is_empty());
}

#[test]
fn a_signal_after_the_reopen_window_of_a_loop_closed_as_verified_opens_the_next_generation() {
    // Exactly 30 days is no longer "less than the reopen window ago".
    for days_later in [30, 31] {
        let mut fixture = Fixture::without_time_detectors();
        let closed_at = START + 2 * MILLIS_PER_DAY;
        let first =
            enterprise_with_closed_detractor_loop(&mut fixture, CloseReason::Verified, closed_at);
        let first_before = fixture.state.loops[&first].clone();

        let signal_time = closed_at + days_later * MILLIS_PER_DAY;
        let effects = fixture.send(nps("r-2", "acct-ent", 5, signal_time));
        let key = detractor_key("acct-ent");
        let second = loop_id(&key, 2);
        assert_ne!(first, second);
        assert_eq!(fixture.state.current[&key], second);
        // The superseded generation is left as it was (it is not among the batch's changes) and
        // the core forgets it: only the newest generation of a key stays in memory.
        assert!(
            !effects.loops.contains_key(&first),
            "the closed generation is left alone"
        );
        assert_eq!(first_before.state, LoopState::Closed);
        assert_eq!(fixture.state.loops.len(), 1, "{days_later} days later");
        assert!(!fixture.state.loops.contains_key(&first));
        let record = &fixture.state.loops[&second];
        assert_eq!(record.generation, 2);
        assert_eq!(record.predecessor.as_deref(), Some(first.as_str()));
        assert_eq!(record.state, LoopState::Open);
        assert_eq!(record.recurrence, 0);
        assert_eq!(record.opened_at, signal_time);
        assert_eq!(effects.history.len(), 1);
        assert_eq!(effects.history[0].loop_id, second);
        assert_eq!(effects.history[0].action, "open");
        assert_eq!(effects.evidence[0].outcome, "open");
        assert_eq!(effects.traces.len(), 1);
        assert_eq!(effects.traces[0].0, second);
    }
}

#[test]
fn a_signal_for_a_loop_closed_as_duplicate_or_wont_fix_opens_the_next_generation_at_once() {
    for reason in [CloseReason::Duplicate, CloseReason::WontFix] {
        let mut fixture = Fixture::new();
        let closed_at = START + 2 * HOUR;
        let first = enterprise_with_closed_detractor_loop(&mut fixture, reason, closed_at);
        let effects = fixture.send(nps("r-2", "acct-ent", 5, closed_at + HOUR));
        let key = detractor_key("acct-ent");
        let second = loop_id(&key, 2);
        let record = &fixture.state.loops[&second];
        assert_eq!(record.generation, 2, "closed as {}", reason.as_str());
        assert_eq!(record.predecessor.as_deref(), Some(first.as_str()));
        assert_eq!(record.state, LoopState::Open);
        assert_eq!(fixture.state.current[&key], second);
        assert!(
            !fixture.state.loops.contains_key(&first),
            "the superseded generation lives only in storage"
        );
        assert_eq!(effects.history.len(), 1);
        assert_eq!(effects.history[0].action, "open");
    }
}

/// One operator action of a scripted sequence and what it should do.
struct ActionStep {
    action: Action,
    actor: &'static str,
    note: Option<&'static str>,
    expected: LoopState,
    /// The history row's action name.
    name: &'static str,
    /// The history row's reason.
    reason: Option<&'static str>,
}

#[test]
fn legal_operator_actions_change_the_state_and_write_history_rows_with_the_actor() {
    let mut fixture = Fixture::new();
    let id = enterprise_with_open_detractor_loop(&mut fixture);
    let steps = vec![
        ActionStep {
            action: Action::Acknowledge,
            actor: "ana.lima",
            note: None,
            expected: LoopState::Acknowledged,
            name: "acknowledge",
            reason: None,
        },
        ActionStep {
            action: Action::Start,
            actor: "ana.lima",
            note: Some("calling them today"),
            expected: LoopState::InProgress,
            name: "start",
            reason: Some("calling them today"),
        },
        ActionStep {
            action: Action::Assign {
                owner: "ben.okafor".to_owned(),
            },
            actor: "team.lead",
            note: Some("ana is away"),
            expected: LoopState::InProgress,
            name: "assign",
            reason: Some("assigned to ben.okafor: ana is away"),
        },
        ActionStep {
            action: Action::Comment,
            actor: "ben.okafor",
            note: Some("left a voicemail"),
            expected: LoopState::InProgress,
            name: "comment",
            reason: Some("left a voicemail"),
        },
        // Resolved, then at once verifying (a second, system row).
        ActionStep {
            action: Action::Resolve,
            actor: "ben.okafor",
            note: None,
            expected: LoopState::Verifying,
            name: "resolve",
            reason: None,
        },
        ActionStep {
            action: Action::Close {
                reason: CloseReason::Verified,
            },
            actor: "ben.okafor",
            note: Some("customer confirmed"),
            expected: LoopState::Closed,
            name: "close",
            reason: Some("closed as verified: customer confirmed"),
        },
        ActionStep {
            action: Action::Reopen,
            actor: "ana.lima",
            note: None,
            expected: LoopState::Reopened,
            name: "reopen",
            reason: None,
        },
    ];
    for (
        step,
        ActionStep {
            action,
            actor,
            note,
            expected,
            name,
            reason,
        },
    ) in steps.into_iter().enumerate()
    {
        let before = fixture.state.loops[&id].state;
        let seq = fixture.state.loops[&id].history_len;
        // Every step before the urgent acknowledge deadline (START + 2h): no breach interferes.
        let time = START + HOUR + (1 + step as Millis) * 5 * MINUTE;
        let (outcome, effects) = fixture.act(&id, action, actor, note, time);
        assert_eq!(
            outcome,
            ActionOutcome::Applied { state: expected },
            "{name}"
        );
        let record = &fixture.state.loops[&id];
        assert_eq!(record.state, expected, "{name}");
        assert_eq!(record.updated_at, time, "{name}");
        assert_eq!(effects.loops[&id], *record, "{name}");
        let resolved = expected == LoopState::Verifying;
        assert_eq!(effects.history.len(), 1 + usize::from(resolved), "{name}");
        let row = &effects.history[0];
        assert_eq!(row.loop_id, id);
        assert_eq!(row.seq, seq, "{name}");
        assert_eq!(row.actor, actor);
        assert_eq!(row.action, name);
        assert_eq!(row.at, time);
        assert_eq!(row.from_state, Some(before));
        let acted = if resolved {
            LoopState::Resolved
        } else {
            expected
        };
        assert_eq!(row.to_state, acted);
        assert_eq!(row.reason.as_deref(), reason, "{name}");
        if resolved {
            let verify = &effects.history[1];
            assert_eq!(
                (verify.action.as_str(), verify.actor.as_str(), verify.seq),
                ("verify", SYSTEM_ACTOR, seq + 1)
            );
            assert_eq!(verify.from_state, Some(LoopState::Resolved));
            assert_eq!(verify.to_state, LoopState::Verifying);
            assert_eq!(
                record.verify_due,
                Some(time + 14 * 24 * HOUR),
                "urgent: 14 days"
            );
        }
        assert!(effects.evidence.is_empty());
        assert_eq!(effects.stats.actions, 1);
    }
    let record = &fixture.state.loops[&id];
    assert_eq!(record.owner, "ben.okafor");
    // A reopened loop waits for a new acknowledgement, with SLA deadlines counted from the reopen.
    assert_eq!(record.acknowledged_at, None);
    assert!(record.ack_due.is_some_and(|due| due > record.updated_at));
    assert_eq!(record.recurrence, 1, "the operator's reopen counts too");
    assert_eq!(record.close_reason, None);
    assert_eq!(record.history_len, 9);
}

#[test]
fn an_illegal_operator_action_is_refused_and_changes_neither_the_loop_nor_the_effects() {
    let mut fixture = Fixture::new();
    let id = enterprise_with_open_detractor_loop(&mut fixture);
    let before = fixture.state.loops[&id].clone();

    // Through the log, as the API appends it.
    // Before the urgent acknowledge deadline (START + 2h), so that no breach changes the loop.
    let (outcome, effects) =
        fixture.act(&id, Action::Reopen, "ana.lima", None, START + 90 * MINUTE);
    assert_eq!(
        outcome,
        ActionOutcome::Illegal {
            message: "cannot reopen a loop that is open".to_owned()
        }
    );
    assert_eq!(fixture.state.loops[&id], before);
    assert!(effects.loops.is_empty());
    assert!(effects.history.is_empty());
    assert!(effects.evidence.is_empty());
    assert!(effects.stats.loop_changes.is_empty());
    assert_eq!(
        effects.offset, fixture.state.offset,
        "the offset still moves past a refused action"
    );

    // And directly: a system action from a state it does not name.
    let mut direct = BatchEffects::default();
    let request = ActionRequest {
        loop_id: id.clone(),
        action: Action::Verified,
        actor: SYSTEM_ACTOR.to_owned(),
        note: None,
        time: START + 3 * HOUR,
    };
    let outcome =
        fixture
            .core
            .apply_action(&mut fixture.state, &request, START + 3 * HOUR, &mut direct);
    assert!(
        matches!(&outcome, ActionOutcome::Illegal { message } if message.contains("open")),
        "{outcome:?}"
    );
    assert_eq!(fixture.state.loops[&id], before);
    assert!(direct.loops.is_empty());
    assert!(direct.history.is_empty());
    assert!(direct.action_outcomes.is_empty());
}

#[test]
fn an_action_on_an_unknown_loop_id_is_not_found_and_changes_nothing() {
    let mut fixture = Fixture::new();
    enterprise_with_open_detractor_loop(&mut fixture);
    let loops_before = fixture.state.loops.clone();
    let (outcome, effects) = fixture.act(
        "lp_does_not_exist",
        Action::Acknowledge,
        "ana.lima",
        None,
        START + 90 * MINUTE,
    );
    assert_eq!(outcome, ActionOutcome::NotFound);
    assert_eq!(fixture.state.loops, loops_before);
    assert!(effects.loops.is_empty());
    assert!(effects.history.is_empty());
}

/// The generator's events as log entries, seq 1.., with a few operator actions appended so that the
/// replay covers actions too.
fn generated_log() -> Vec<LogEntry> {
    let options = GenOptions {
        accounts: 20,
        events: 400,
        seed: 3,
        ..Default::default()
    };
    let mut fixture = Fixture::new();
    let mut entries: Vec<LogEntry> = generate(&options)
        .map(|line| {
            let event: Value = serde_json::from_str(&line).expect("the generator writes JSON");
            fixture.event_entry(&event)
        })
        .collect();
    // Find some loops to act on from a first pass over the events.
    fixture.process(&entries);
    let mut loop_ids: Vec<String> = fixture.state.loops.keys().cloned().collect();
    loop_ids.sort();
    let last_time = fixture.state.clock;
    let actions = [
        Action::Acknowledge,
        Action::Resolve,
        Action::Close {
            reason: CloseReason::Duplicate,
        },
        // Illegal from open: recorded as refused, replayed as refused.
        Action::Verified,
    ];
    for (index, (loop_id, action)) in loop_ids.iter().zip(actions).enumerate() {
        let request = ActionRequest {
            loop_id: loop_id.clone(),
            action,
            actor: "replayer".to_owned(),
            note: Some(format!("action {index}")),
            time: last_time + (index as Millis + 1) * HOUR,
        };
        entries.push(fixture.action_entry(&request));
    }
    entries
}

/// The final loops (sorted by id), and all history and evidence rows, as JSON text.
fn replay(entries: &[LogEntry], batch_size: usize) -> (String, String, String, CoreState) {
    let mut fixture = Fixture::new();
    let mut history = Vec::new();
    let mut evidence = Vec::new();
    for batch in entries.chunks(batch_size) {
        let effects = fixture.process(batch);
        assert!(effects.failed.is_empty(), "generated events all decode");
        history.extend(effects.history);
        evidence.extend(effects.evidence);
    }
    let loops: BTreeMap<&String, &LoopRecord> = fixture.state.loops.iter().collect();
    (
        serde_json::to_string(&loops).expect("loops serialize"),
        serde_json::to_string(&history).expect("history serializes"),
        serde_json::to_string(&evidence).expect("evidence serializes"),
        fixture.state,
    )
}

#[test]
fn one_batch_of_n_and_n_batches_of_one_give_identical_loops_history_and_evidence() {
    let entries = generated_log();
    assert_eq!(entries.len(), 20 + 400 + 4);
    let (loops_one_batch, history_one_batch, evidence_one_batch, state_one_batch) =
        replay(&entries, entries.len());
    let (loops_many_batches, history_many_batches, evidence_many_batches, state_many_batches) =
        replay(&entries, 1);

    // The input must exercise the core for the comparison to mean anything.
    assert!(
        state_one_batch.loops.len() >= 4,
        "loops: {}",
        state_one_batch.loops.len()
    );
    assert!(state_one_batch
        .loops
        .values()
        .any(|record| record.signal_count > 1));
    assert!(state_one_batch
        .loops
        .values()
        .any(|record| record.state == LoopState::Closed));

    assert_eq!(loops_one_batch, loops_many_batches);
    assert_eq!(history_one_batch, history_many_batches);
    assert_eq!(evidence_one_batch, evidence_many_batches);
    assert_same_state(&state_one_batch, &state_many_batches);
}

#[test]
fn smb_accounts_get_consecutive_members_of_cs_digital_and_the_cursor_is_in_the_effects() {
    let mut fixture = Fixture::new();
    let accounts = ["acct-smb-1", "acct-smb-2", "acct-smb-3", "acct-smb-4"];
    let upserts: Vec<LogEntry> = accounts
        .iter()
        .map(|account| fixture.event_entry(&account_upserted(account, "smb", None, START)))
        .collect();
    fixture.process(&upserts);

    let mut owners = Vec::new();
    for (index, account) in accounts.iter().enumerate() {
        let response = format!("r-{index}");
        let effects = fixture.send(nps(&response, account, 2, START + HOUR));
        let record = fixture.current(&detractor_key(account));
        assert_eq!(record.queue, "cs-digital");
        assert_eq!(record.sla_policy.as_deref(), Some("low-touch"));
        assert_eq!(record.priority, 2, "smb is not a raised tier");
        owners.push(record.owner.clone());
        let cursor = index as u64 + 1;
        assert_eq!(
            effects.round_robin,
            BTreeMap::from([("cs-digital".to_owned(), cursor)])
        );
        assert_eq!(fixture.state.router.round_robin["cs-digital"], cursor);
        let trace: Value = serde_json::from_str(&effects.traces[0].1).unwrap();
        assert_eq!(trace["route"]["path"], json!(["root", "smb"]));
    }
    assert_eq!(
        owners,
        vec!["hugo.silva", "ines.moreau", "jonas.berg", "hugo.silva"]
    );

    // A signal that joins an open loop does not move the cursor.
    let joined = fixture.send(nps("r-join", "acct-smb-1", 1, START + 2 * HOUR));
    assert_eq!(joined.evidence[0].outcome, "join");
    assert!(joined.round_robin.is_empty());
    assert_eq!(fixture.state.router.round_robin["cs-digital"], 4);
}

#[test]
fn round_robin_cursors_of_one_batch_are_in_its_effects() {
    let mut fixture = Fixture::new();
    let mut entries = Vec::new();
    for account in ["acct-smb-1", "acct-smb-2", "acct-smb-3"] {
        entries.push(fixture.event_entry(&account_upserted(account, "smb", None, START)));
    }
    for (index, account) in ["acct-smb-1", "acct-smb-2", "acct-smb-3"]
        .into_iter()
        .enumerate()
    {
        entries.push(fixture.event_entry(&nps(&format!("r-{index}"), account, 0, START + HOUR)));
    }
    let effects = fixture.process(&entries);
    let owners: Vec<&str> = ["acct-smb-1", "acct-smb-2", "acct-smb-3"]
        .iter()
        .map(|account| {
            effects.loops[&loop_id(&detractor_key(account), 1)]
                .owner
                .as_str()
        })
        .collect();
    assert_eq!(owners, vec!["hugo.silva", "ines.moreau", "jonas.berg"]);
    assert_eq!(effects.round_robin.get("cs-digital"), Some(&3));
}

#[test]
fn explain_changes_nothing_and_reports_open_for_a_fresh_key_and_join_for_an_open_loop() {
    let mut fixture = Fixture::new();
    fixture.send(account_upserted("acct-smb", "smb", None, START));

    let detractor = nps("r-1", "acct-smb", 2, START + HOUR);
    let before = fixture.state.clone();
    let explanation = fixture
        .core
        .explain(&fixture.state, &decoded(&detractor), START + HOUR);
    assert_same_state(&before, &fixture.state);
    assert_eq!(explanation.signals.len(), 1);
    let fresh = &explanation.signals[0];
    assert_eq!(fresh.outcome, "open");
    assert_eq!(fresh.loop_key, detractor_key("acct-smb"));
    assert_eq!(fresh.loop_id, loop_id(&detractor_key("acct-smb"), 1));
    assert_eq!(fresh.queue, "cs-digital");
    assert_eq!(fresh.owner, "hugo.silva");
    assert_eq!(fresh.priority, "P2");
    assert_eq!(
        fresh.route.as_ref().map(|route| route.path.clone()),
        Some(vec!["root".to_owned(), "smb".to_owned()])
    );
    assert_eq!(explanation.config_version, fixture.core.config_version());

    // Explaining did not take the first member: processing the event still gives it to hugo.silva.
    fixture.send(detractor);
    assert_eq!(
        fixture.current(&detractor_key("acct-smb")).owner,
        "hugo.silva"
    );

    let again = nps("r-2", "acct-smb", 1, START + 2 * HOUR);
    let before = fixture.state.clone();
    let explanation = fixture
        .core
        .explain(&fixture.state, &decoded(&again), START + 2 * HOUR);
    assert_same_state(&before, &fixture.state);
    let joining = &explanation.signals[0];
    assert_eq!(joining.outcome, "join");
    assert_eq!(joining.loop_id, loop_id(&detractor_key("acct-smb"), 1));
    assert_eq!(joining.owner, "hugo.silva");
    assert!(joining.route.is_none());

    // A tagged ticket would update the repeat-ticket window if processed; explaining it does not.
    let ticket = cloud_event(
        "zendesk",
        "ticket-event-1",
        "ticket.opened",
        START + 3 * HOUR,
        json!({
            "ticket_id": "t-1",
            "account_id": "acct-smb",
            "subject": "The invoice is wrong",
            "priority": "urgent",
        }),
    );
    let before = fixture.state.clone();
    let explanation = fixture
        .core
        .explain(&fixture.state, &decoded(&ticket), START + 3 * HOUR);
    assert_same_state(&before, &fixture.state);
    assert_eq!(explanation.tags.primary, "billing.invoice-error");
    assert_eq!(explanation.signals.len(), 1);
    assert_eq!(explanation.signals[0].signal.detector, "urgent-ticket");
    assert_eq!(explanation.signals[0].outcome, "open");
    assert_eq!(
        explanation.signals[0].owner, "ines.moreau",
        "the next member, since the cursor is committed at 1"
    );
}

#[test]
fn an_entry_that_no_longer_decodes_becomes_a_failed_entry_and_the_offset_moves_past_it() {
    let mut fixture = Fixture::new();
    let upsert = fixture.event_entry(&account_upserted(
        "acct-ent",
        "enterprise",
        Some("ana.lima"),
        START,
    ));
    let broken = LogEntry {
        seq: fixture.take_seq(),
        kind: EntryKind::Event,
        source: "delighted".to_owned(),
        id: "event-broken".to_owned(),
        payload: r#"{"specversion": "1.0", "id": "event-broken", "#.to_owned(),
    };
    let broken_action = LogEntry {
        seq: fixture.take_seq(),
        kind: EntryKind::Action,
        source: "api".to_owned(),
        id: "action-broken".to_owned(),
        payload: r#"{"loop_id": 7}"#.to_owned(),
    };
    let detractor = fixture.event_entry(&nps("r-1", "acct-ent", 3, START + HOUR));
    let effects = fixture.process(&[upsert, broken.clone(), broken_action.clone(), detractor]);

    assert_eq!(effects.failed.len(), 2);
    let failed_event = &effects.failed[0];
    assert_eq!(failed_event.seq, broken.seq);
    assert_eq!(failed_event.source, "delighted");
    assert_eq!(failed_event.id, "event-broken");
    assert_eq!(failed_event.payload, broken.payload);
    assert_eq!(failed_event.rejection.code, RejectionCode::InvalidJson);
    let failed_action = &effects.failed[1];
    assert_eq!(failed_action.seq, broken_action.seq);
    assert_eq!(failed_action.rejection.code, RejectionCode::InvalidJson);
    assert_eq!(failed_action.rejection.id.as_deref(), Some("action-broken"));

    // The entries around the bad ones were processed, and the offset is past all of them.
    assert_eq!(effects.stats.events, 2);
    assert_eq!(effects.stats.actions, 0);
    assert!(effects
        .loops
        .contains_key(&loop_id(&detractor_key("acct-ent"), 1)));
    assert_eq!(effects.offset, 4);
    assert_eq!(fixture.state.offset, 4);

    // A batch holding only a bad entry still moves the offset.
    let alone = LogEntry {
        seq: fixture.take_seq(),
        kind: EntryKind::Event,
        source: "delighted".to_owned(),
        id: "event-not-json".to_owned(),
        payload: "not json at all".to_owned(),
    };
    let effects = fixture.process(&[alone]);
    assert_eq!(effects.failed.len(), 1);
    assert_eq!(effects.offset, 5);
    assert_eq!(fixture.state.offset, 5);
    assert!(effects.loops.is_empty());
}

#[test]
fn an_account_update_keeps_the_fields_it_leaves_out() {
    let mut fixture = Fixture::new();
    fixture.send(cloud_event(
        "salesforce",
        "upsert-1",
        "account.upserted",
        START,
        json!({
            "account_id": "acct-1",
            "name": "Acme",
            "tier": "mid-market",
            "arr": 120000.0,
            "region": "emea",
            "segment": "manufacturing",
            "csm": "dev.patel",
            "lifecycle_stage": "adoption",
            "started_at": format_millis(START - 90 * MILLIS_PER_DAY),
        }),
    ));
    // Another system knows only the tier and the lifecycle stage.
    let effects = fixture.send(cloud_event(
        "billing-system",
        "upsert-2",
        "account.upserted",
        START + HOUR,
        json!({"account_id": "acct-1", "tier": "enterprise", "lifecycle_stage": "renewal"}),
    ));
    let account_id = AccountId::parse("acct-1").unwrap();
    let merged = &fixture.state.accounts[&account_id];
    assert_eq!(effects.accounts[&account_id], *merged);
    assert_eq!(merged.tier.as_deref(), Some("enterprise"));
    assert_eq!(merged.lifecycle_stage.as_deref(), Some("renewal"));
    assert_eq!(merged.name.as_deref(), Some("Acme"));
    assert_eq!(merged.arr, Some(120000.0));
    assert_eq!(merged.region.as_deref(), Some("emea"));
    assert_eq!(merged.segment.as_deref(), Some("manufacturing"));
    assert_eq!(merged.csm.as_deref(), Some("dev.patel"));
    assert_eq!(merged.started_at, Some(START - 90 * MILLIS_PER_DAY));

    // merge_account itself: with nothing known the update is the account, as it came.
    let update = AccountUpserted {
        account_id: account_id.clone(),
        name: None,
        tier: Some("smb".to_owned()),
        arr: None,
        region: None,
        segment: None,
        csm: None,
        lifecycle_stage: None,
        started_at: None,
    };
    assert_eq!(merge_account(None, &update), update);
    let remerged = merge_account(Some(merged), &update);
    assert_eq!(remerged.tier.as_deref(), Some("smb"));
    assert_eq!(remerged.csm.as_deref(), Some("dev.patel"));
    assert_eq!(remerged.arr, Some(120000.0));
}

#[test]
fn a_critical_signal_for_a_key_tier_is_p1_and_its_priority_reason_claims_no_raise_from_p2() {
    let mut fixture = Fixture::new();
    fixture.send(account_upserted(
        "acct-ent",
        "enterprise",
        Some("ana.lima"),
        START,
    ));
    let effects = fixture.send(cloud_event(
        "zendesk",
        "ticket-event-1",
        "ticket.opened",
        START + HOUR,
        json!({
            "ticket_id": "t-1",
            "account_id": "acct-ent",
            "subject": "We will cancel our subscription at the end of the term",
        }),
    ));
    let id = loop_id("account:acct-ent:churn.cancellation", 1);
    assert_eq!(effects.loops[&id].priority, 1);
    let trace: Value = serde_json::from_str(
        &effects
            .traces
            .iter()
            .find(|(trace_loop, _)| trace_loop == &id)
            .expect("the churn loop has a trace")
            .1,
    )
    .unwrap();
    assert_eq!(trace["detector"], "churn-intent");
    assert_eq!(trace["priority"], 1);
    let reason = trace["priority_reason"].as_str().unwrap();
    // Critical is P1 before any raise; P1 cannot be raised, so the reason must not say it was P2.
    assert!(
        reason.starts_with("severity critical gives P1"),
        "priority_reason: {reason}"
    );
    assert!(!reason.contains("P2"), "priority_reason: {reason}");
}

#[test]
fn an_empty_batch_on_the_live_clock_fires_the_deadlines_that_passed_and_no_others() {
    let mut fixture = Fixture::new();
    let id = enterprise_with_open_detractor_loop(&mut fixture);
    let ack_due = fixture.state.loops[&id]
        .ack_due
        .expect("urgent has an ack deadline");
    assert_eq!(fixture.core.next_timer(&fixture.state), Some(ack_due));

    let early = fixture
        .core
        .process_batch(&mut fixture.state, &[], BatchClock::Live(ack_due - 1));
    assert!(early.history.is_empty() && early.loops.is_empty());
    assert_eq!(
        early.offset, fixture.state.offset,
        "no entry, no new offset"
    );

    let due =
        fixture
            .core
            .process_batch(&mut fixture.state, &[], BatchClock::Live(ack_due + MINUTE));
    assert_eq!(due.history.len(), 1);
    assert_eq!(due.history[0].action, "breach");
    assert_eq!(
        due.history[0].at, ack_due,
        "as of the deadline, not of the tick"
    );
    assert_eq!(due.stats.sla_breaches["cs-enterprise"], 1);
    let record = &fixture.state.loops[&id];
    assert_eq!(record.ack_breached_at, Some(ack_due));
    assert_eq!(record.queue, "cs-escalations");
    assert_eq!(due.loops[&id], *record);
    // The resolve deadline is the next one.
    assert_eq!(fixture.core.next_timer(&fixture.state), record.resolve_due);

    let again =
        fixture
            .core
            .process_batch(&mut fixture.state, &[], BatchClock::Live(ack_due + HOUR));
    assert!(again.history.is_empty(), "a deadline fires once");
}
