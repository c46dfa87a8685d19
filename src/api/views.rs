//! JSON views of stored records: times as RFC 3339, priorities as `P1`..`P4`. The API and
//! `sigloop export` share them, so the canonical export is what the API shows.

use serde_json::{json, Value};

use crate::config::routes::SignalKind;
use crate::config::signals::Window;
use crate::domain::{format_millis, Millis};
use crate::kpi::{DurationQuantiles, KpiReport, LoopKpis};
use crate::loops::{EvidenceRow, HistoryRow, LoopRecord};
use crate::pipeline::core::SignalRow;
use crate::route::Account;
use crate::storage::{DeadLetterRow, JourneyGroup, LinkedLoop, LoopDetail, StageSignals};

fn time(millis: Option<Millis>) -> Value {
    millis.map_or(Value::Null, |millis| Value::String(format_millis(millis)))
}

pub fn loop_view(record: &LoopRecord) -> Value {
    json!({
        "id": record.id,
        "key": record.key,
        "generation": record.generation,
        "kind": record.kind,
        "account_id": record.account_id,
        "tag": record.tag,
        "state": record.state,
        "close_reason": record.close_reason,
        "queue": record.queue,
        "owner": record.owner,
        "priority": format!("P{}", record.priority),
        "severity": record.severity,
        "sla_policy": record.sla_policy,
        "ack_due": time(record.ack_due),
        "resolve_due": time(record.resolve_due),
        "breached": record.breached,
        "ack_breached_at": time(record.ack_breached_at),
        "resolve_breached_at": time(record.resolve_breached_at),
        "verify_due": time(record.verify_due),
        "verify_confirmed_at": time(record.verify_confirmed_at),
        "opened_at": time(Some(record.opened_at)),
        "updated_at": time(Some(record.updated_at)),
        "acknowledged_at": time(record.acknowledged_at),
        "resolved_at": time(record.resolved_at),
        "closed_at": time(record.closed_at),
        "recurrence": record.recurrence,
        "signal_count": record.signal_count,
        "first_signal_at": time(Some(record.first_signal_at)),
        "last_signal_at": time(Some(record.last_signal_at)),
        "predecessor": record.predecessor,
        "watchers": record.watchers,
        "stage": record.stage,
        "journey_loop": record.journey_loop,
        "tasks": record.tasks.iter().map(|task| json!({
            "kind": task.kind,
            "owner": task.owner,
            "created_at": time(Some(task.created_at)),
            "journey_loop": task.journey_loop,
            "note": task.note,
        })).collect::<Vec<_>>(),
        "config_version": record.config_version,
    })
}

/// A journey link: `journey` from an account loop to its journey loop, `account` from a journey loop
/// to an account loop it explains; with the other loop's current state.
pub fn link_view(link: &LinkedLoop) -> Value {
    json!({
        "relation": match link.kind {
            SignalKind::Journey => "journey",
            SignalKind::Account => "account",
        },
        "id": link.loop_id,
        "key": link.key,
        "account_id": link.account_id,
        "state": link.state,
        "queue": link.queue,
        "owner": link.owner,
        "linked_at": time(Some(link.linked_at)),
    })
}

pub fn history_view(row: &HistoryRow) -> Value {
    json!({
        "seq": row.seq,
        "at": time(Some(row.at)),
        "actor": row.actor,
        "action": row.action,
        "from_state": row.from_state,
        "to_state": row.to_state,
        "reason": row.reason,
    })
}

pub fn evidence_view(row: &EvidenceRow) -> Value {
    json!({
        "at": time(Some(row.at)),
        "event_time": time(Some(row.event_time)),
        "event_source": row.event_source,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "detector": row.detector,
        "severity": row.severity,
        "reason": row.reason,
        "primary_tag": row.primary_tag,
        "outcome": row.outcome,
        "reference": row.reference,
        "tags": row.tags,
        "journey": row.journey,
    })
}

/// A loop with its trace, history and evidence: the canonical export line, and most of
/// `GET /v1/loops/{id}`.
pub fn loop_detail_view(detail: &LoopDetail) -> Value {
    let mut view = loop_view(&detail.record);
    let object = view.as_object_mut().expect("loop views are objects");
    object.insert(
        "trace".to_owned(),
        detail.trace.clone().unwrap_or(Value::Null),
    );
    object.insert(
        "history".to_owned(),
        detail.history.iter().map(history_view).collect(),
    );
    object.insert(
        "evidence".to_owned(),
        detail.evidence.iter().map(evidence_view).collect(),
    );
    object.insert(
        "links".to_owned(),
        detail.links.iter().map(link_view).collect(),
    );
    view
}

pub fn account_view(account: &Account) -> Value {
    json!({
        "account_id": account.account_id,
        "name": account.name,
        "tier": account.tier,
        "arr": account.arr,
        "region": account.region,
        "segment": account.segment,
        "csm": account.csm,
        "lifecycle_stage": account.lifecycle_stage,
        "started_at": time(account.started_at),
    })
}

pub fn signal_view(signal: &SignalRow) -> Value {
    json!({
        "time": time(Some(signal.time)),
        "detector": signal.detector,
        "severity": signal.severity,
        "tag": signal.tag,
        "loop_id": signal.loop_id,
        "event_source": signal.event_source,
        "event_id": signal.event_id,
        "reason": signal.reason,
        "stage": signal.stage,
    })
}

pub fn stage_signals_view(stage: &StageSignals) -> Value {
    json!({
        "stage": stage.stage,
        "signals": stage.signals,
        "tags": stage.tags,
        "first_signal_at": time(Some(stage.first_signal_at)),
        "last_signal_at": time(Some(stage.last_signal_at)),
    })
}

/// One group of `GET /v1/journeys`: the grouped dimensions, then the figures. A kind of response
/// with no responses in the group shows null figures, not zero.
pub fn journey_group_view(group: &JourneyGroup, window: Window) -> Value {
    let figures = &group.figures;
    let mut view = serde_json::Map::new();
    if let Some(stage) = &group.stage {
        view.insert("stage".to_owned(), json!(stage));
    }
    if let Some(tag) = &group.tag {
        view.insert("tag".to_owned(), json!(tag));
    }
    if let Some(touchpoint) = &group.touchpoint {
        view.insert("touchpoint".to_owned(), json!(touchpoint));
    }
    if let Some(start) = group.window_start {
        view.insert(
            "window".to_owned(),
            json!({"start": format_millis(start), "end": format_millis(start + window.length())}),
        );
    }
    let rest = json!({
        "events": figures.events,
        "tickets": figures.tickets,
        "accounts": group.accounts,
        "responses": {
            "nps": figures.nps_responses,
            "csat": figures.csat_responses,
            "ces": figures.ces_responses,
        },
        "promoters": figures.promoters,
        "passives": figures.passives,
        "detractors": figures.detractors,
        "nps": figures.nps(),
        "csat_avg": figures.csat_avg(),
        "ces_avg": figures.ces_avg(),
    });
    if let Value::Object(rest) = rest {
        view.extend(rest);
    }
    Value::Object(view)
}

pub fn dead_letter_view(row: &DeadLetterRow) -> Value {
    json!({
        "id": row.id,
        "received_at": time(Some(row.received_at)),
        "origin": row.dead_letter.origin,
        "index": row.dead_letter.request_index,
        "event_source": row.dead_letter.event_source,
        "event_id": row.dead_letter.event_id,
        "code": row.dead_letter.code,
        "message": row.dead_letter.message,
        "payload": row.dead_letter.payload,
    })
}

fn duration_quantiles_view(quantiles: &DurationQuantiles) -> Value {
    json!({
        "median_seconds": quantiles.median_seconds,
        "p90_seconds": quantiles.p90_seconds,
    })
}

/// The figures of one queue or team, after its name fields.
fn loop_kpis_fields(view: &mut serde_json::Map<String, Value>, kpis: &LoopKpis) {
    let figures = json!({
        "loops": kpis.loops,
        "acknowledged": kpis.acknowledged,
        "closed": kpis.closed,
        "closed_verified": kpis.closed_verified,
        "breached": kpis.breached,
        "reopened": kpis.reopened,
        "with_sla": kpis.with_sla,
        "time_to_acknowledge": duration_quantiles_view(&kpis.time_to_acknowledge),
        "time_to_close": duration_quantiles_view(&kpis.time_to_close),
        "sla_attainment": kpis.sla_attainment,
        "closed_loop_rate": kpis.closed_loop_rate,
        "reopen_rate": kpis.reopen_rate,
    });
    if let Value::Object(figures) = figures {
        view.extend(figures);
    }
}

/// `GET /v1/kpis`: the period, then the queues and the teams, each sorted by name. Figures that no
/// loop qualifies for are null.
pub fn kpi_report_view(report: &KpiReport, from: Option<Millis>, to: Option<Millis>) -> Value {
    let queues: Vec<Value> = report
        .queues
        .iter()
        .map(|queue| {
            let mut view = serde_json::Map::new();
            view.insert("queue".to_owned(), json!(queue.queue));
            view.insert("team".to_owned(), json!(queue.team));
            loop_kpis_fields(&mut view, &queue.kpis);
            Value::Object(view)
        })
        .collect();
    let teams: Vec<Value> = report
        .teams
        .iter()
        .map(|team| {
            let mut view = serde_json::Map::new();
            view.insert("team".to_owned(), json!(team.team));
            view.insert("queues".to_owned(), json!(team.queues));
            loop_kpis_fields(&mut view, &team.kpis);
            Value::Object(view)
        })
        .collect();
    json!({
        "from": time(from),
        "to": time(to),
        "queues": queues,
        "teams": teams,
    })
}
