//! Loop events for the outbox: what a batch did to loops, as the messages the loops topic and
//! webhooks carry. Derived from the batch's history and evidence rows, so every state change is
//! published exactly when it is committed, and a loop's events keep the order they happened in.

use serde_json::json;

use super::{BatchEffects, OutboxEvent};
use crate::loops::{HistoryRow, LoopState};

/// Names an event after its history row: the action for the ones that have their own event, the
/// state change for the rest.
fn event_name(row: &HistoryRow) -> &'static str {
    match row.action.as_str() {
        "open" => "opened",
        "reopen" => "reopened",
        "breach" => "breached",
        "link" => "linked",
        "comment" => "commented",
        _ if row.to_state == LoopState::Closed => "closed",
        _ => "state_changed",
    }
}

/// The batch's loop events (history rows, then signals that joined an open loop) and its dead
/// letters, in the order the core wrote them per loop.
pub fn events(effects: &BatchEffects) -> Vec<OutboxEvent> {
    let mut events = Vec::with_capacity(effects.history.len() + effects.failed.len());
    let mut rows: Vec<(usize, &str, i64, u8)> = Vec::new();
    for (index, row) in effects.history.iter().enumerate() {
        rows.push((index, row.loop_id.as_str(), row.at, 0));
    }
    for (index, row) in effects.evidence.iter().enumerate() {
        if row.outcome == "join" {
            rows.push((index, row.loop_id.as_str(), row.at, 1));
        }
    }
    // Per loop in time order; a history row before a signal that joined at the same instant. The
    // sort is stable, so rows of one kind keep the order the core wrote them in.
    rows.sort_by(|a, b| (a.1, a.2, a.3).cmp(&(b.1, b.2, b.3)));
    for (index, loop_id, _, kind) in rows {
        let Some(record) = effects.loops.get(loop_id) else {
            continue;
        };
        let (event, at, detail) = if kind == 0 {
            let row = &effects.history[index];
            (
                event_name(row),
                row.at,
                json!({
                    "action": row.action,
                    "actor": row.actor,
                    "from_state": row.from_state.map(LoopState::as_str),
                    "to_state": row.to_state.as_str(),
                    "reason": row.reason,
                    "history_seq": row.seq,
                }),
            )
        } else {
            let row = &effects.evidence[index];
            (
                "joined",
                row.at,
                json!({
                    "event_source": row.event_source,
                    "event_id": row.event_id,
                    "event_type": row.event_type,
                    "detector": row.detector,
                    "primary_tag": row.primary_tag,
                }),
            )
        };
        let payload = json!({
            "event": event,
            "at": at,
            "loop_id": record.id,
            "loop_key": record.key,
            "kind": record.kind,
            "account_id": record.account_id,
            "tag": record.tag,
            "queue": record.queue,
            "owner": record.owner,
            "priority": record.priority,
            "severity": record.severity,
            "state": record.state.as_str(),
            "detail": detail,
        });
        events.push(OutboxEvent {
            loop_id: record.id.clone(),
            loop_key: record.key.clone(),
            account_id: record.account_id.clone(),
            event: event.to_owned(),
            at,
            payload: payload.to_string(),
        });
    }
    for failed in &effects.failed {
        events.push(OutboxEvent {
            loop_id: String::new(),
            loop_key: String::new(),
            account_id: None,
            event: DEAD_LETTER.to_owned(),
            at: effects.clock,
            payload: json!({
                "source": failed.source,
                "id": failed.id,
                "code": failed.rejection.code.as_str(),
                "message": failed.rejection.message,
                "value": failed.payload,
            })
            .to_string(),
        });
    }
    events
}

/// The outbox event of a rejected message, relayed to the dead-letter topic.
pub const DEAD_LETTER: &str = "dead_letter";
