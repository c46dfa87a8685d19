//! `GET /v1/kpis` and the `sigloop_loop_*` gauges of `/metrics`, against the real application on port
//! 0 with a fresh SQLite database per test.
//!
//! The server runs with `clock.mode = "event_time"`, where an operator action is dated no earlier than
//! the clock (the largest event time processed so far), and the events lie in the year 2100, after any
//! wall clock these tests run on: an action taken after the events of minute `m` happens at minute
//! `m`, so the plan's durations are exact. They are still read back from the loop records, and checked
//! against the plan, before the KPI figures are compared with them. The events span under an hour, so
//! no SLA deadline passes: no loop breaches or moves to an escalation queue.

mod common;

use std::collections::BTreeMap;

use common::TestApp;
use serde_json::{json, Value};

const EVENT_TIME: &[(&str, &str)] = &[("SIGLOOP__CLOCK__MODE", "event_time")];

/// 2100-03-01T09:00:00Z plus `minutes`.
fn time(minutes: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2100-03-01T09:00:00Z").unwrap();
    (base + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn event(event_type: &str, id: &str, minutes: i64, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "kpi-tests",
        "type": event_type,
        "time": time(minutes),
        "data": data,
    })
}

fn account(account_id: &str, tier: &str) -> Value {
    event(
        "account.upserted",
        &format!("account-{account_id}"),
        0,
        json!({"account_id": account_id, "name": account_id, "tier": tier, "csm": "ana.lima"}),
    )
}

/// An NPS detractor: opens a `sentiment.detractor` loop, on `cs-enterprise` for an enterprise account
/// and on `cs-mid-market` for a mid-market one.
fn detractor(account_id: &str, minutes: i64) -> Value {
    event(
        "survey.responded",
        &format!("nps-{account_id}-{minutes}"),
        minutes,
        json!({"response_id": format!("r-{account_id}-{minutes}"), "account_id": account_id, "kind": "nps", "score": 2}),
    )
}

/// A ticket that says the account is leaving: opens a churn loop on `cs-retention`, whatever the tier.
fn churn(account_id: &str, minutes: i64) -> Value {
    event(
        "ticket.opened",
        &format!("churn-{account_id}-{minutes}"),
        minutes,
        json!({"ticket_id": format!("T-{account_id}"), "account_id": account_id, "subject": "We are not renewing", "body": "We will not renew our contract.", "priority": "normal", "channel": "email"}),
    )
}

/// The one loop of an account.
async fn loop_id(app: &TestApp, account_id: &str) -> String {
    let loops = app.loops(&format!("account_id={account_id}")).await;
    assert_eq!(loops.len(), 1, "{account_id}: {loops:?}");
    loops[0]["id"].as_str().unwrap().to_owned()
}

async fn act(app: &TestApp, id: &str, body: Value) {
    let (status, answer) = app.action(id, body).await;
    assert_eq!(status, 200, "{answer}");
}

fn acknowledge() -> Value {
    json!({"action": "acknowledge", "actor": "ana.lima"})
}

fn close(reason: &str) -> Value {
    json!({"action": "close", "reason": reason, "actor": "ana.lima"})
}

fn millis(record: &Value, field: &str) -> Option<i64> {
    record[field].as_str().map(|text| {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    })
}

/// Seconds from `opened_at` to `field` of the loop record, when `field` is set.
fn seconds_to(record: &Value, field: &str) -> Option<f64> {
    let opened_at = millis(record, "opened_at").expect("a loop has opened_at");
    millis(record, field).map(|at| (at - opened_at) as f64 / 1000.0)
}

/// The nearest-rank percentile (the value at rank ceil(p/100 x n)), as the figures promise it.
fn nearest_rank(mut values: Vec<f64>, percent: usize) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_by(f64::total_cmp);
    json!(values[(percent * values.len()).div_ceil(100) - 1])
}

fn quantiles(values: Vec<f64>) -> Value {
    json!({"median_seconds": nearest_rank(values.clone(), 50), "p90_seconds": nearest_rank(values, 90)})
}

/// The loops of the plan, by account:
///
/// | account | queue | opened | acknowledged | closed |
/// | --- | --- | --- | --- | --- |
/// | ent-1 | cs-enterprise | 0 | 5 | 15 as verified |
/// | ent-2 | cs-enterprise | 5 | 15 | 20 as duplicate |
/// | ent-3 | cs-enterprise | 10 | | 20 as verified, reopened at 25 |
/// | ret-1 | cs-retention | 15 | 20 | 25 as verified |
/// | ret-2 | cs-retention | 20 | | |
/// | mid-1 | cs-mid-market | 25 | | |
///
/// Times in minutes. cs-enterprise and cs-retention are both the cs-enterprise team's queues.
async fn planned_loops(app: &TestApp) -> BTreeMap<&'static str, Value> {
    app.ingest(&[
        account("ent-1", "enterprise"),
        account("ent-2", "enterprise"),
        account("ent-3", "enterprise"),
        account("ret-1", "mid-market"),
        account("ret-2", "enterprise"),
        account("mid-1", "mid-market"),
        detractor("ent-1", 0),
        detractor("ent-2", 5),
    ])
    .await;
    let ent_1 = loop_id(app, "ent-1").await;
    let ent_2 = loop_id(app, "ent-2").await;
    act(app, &ent_1, acknowledge()).await;
    app.ingest(&[detractor("ent-3", 10), churn("ret-1", 15)])
        .await;
    let ret_1 = loop_id(app, "ret-1").await;
    let ent_3 = loop_id(app, "ent-3").await;
    act(app, &ent_2, acknowledge()).await;
    act(app, &ent_1, close("verified")).await;
    app.ingest(&[churn("ret-2", 20)]).await;
    act(app, &ret_1, acknowledge()).await;
    act(app, &ent_2, close("duplicate")).await;
    act(app, &ent_3, close("verified")).await;
    app.ingest(&[detractor("mid-1", 25)]).await;
    act(app, &ret_1, close("verified")).await;
    act(
        app,
        &ent_3,
        json!({"action": "reopen", "actor": "ana.lima"}),
    )
    .await;

    let mut records = BTreeMap::new();
    for account_id in ["ent-1", "ent-2", "ent-3", "ret-1", "ret-2", "mid-1"] {
        let id = loop_id(app, account_id).await;
        let (status, record) = app.get(&format!("/v1/loops/{id}")).await;
        assert_eq!(status, 200, "{record}");
        records.insert(account_id, record);
    }
    // The plan holds: the queues, and the durations in seconds that the clock gives the actions.
    let planned = [
        ("ent-1", "cs-enterprise", Some(300.0), Some(900.0)),
        ("ent-2", "cs-enterprise", Some(600.0), Some(900.0)),
        ("ent-3", "cs-enterprise", None, None),
        ("ret-1", "cs-retention", Some(300.0), Some(600.0)),
        ("ret-2", "cs-retention", None, None),
        ("mid-1", "cs-mid-market", None, None),
    ];
    for (account_id, queue, to_acknowledge, to_close) in planned {
        let record = &records[account_id];
        assert_eq!(record["queue"], queue, "{record}");
        assert_eq!(record["breached"], false, "{record}");
        assert_eq!(
            seconds_to(record, "acknowledged_at"),
            to_acknowledge,
            "{record}"
        );
        assert_eq!(seconds_to(record, "closed_at"), to_close, "{record}");
    }
    assert_eq!(records["ent-3"]["state"], "reopened");
    assert_eq!(records["ent-3"]["recurrence"], 1);
    records
}

/// The duration figures of a group of loops, computed from their records.
fn durations_of(records: &BTreeMap<&str, Value>, accounts: &[&str]) -> (Value, Value) {
    let collect = |field: &str| -> Vec<f64> {
        accounts
            .iter()
            .filter_map(|account_id| seconds_to(&records[account_id], field))
            .collect()
    };
    (
        quantiles(collect("acknowledged_at")),
        quantiles(collect("closed_at")),
    )
}

async fn kpis(app: &TestApp, query: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/kpis{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn named<'a>(list: &'a Value, field: &str, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|item| item[field] == name)
        .unwrap_or_else(|| panic!("no {field} {name} in {list}"))
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap().to_owned())
        .collect()
}

/// The counts of a queue or team, in the order loops, acknowledged, closed, closed_verified, breached,
/// reopened, with_sla.
fn counts(group: &Value) -> [u64; 7] {
    [
        "loops",
        "acknowledged",
        "closed",
        "closed_verified",
        "breached",
        "reopened",
        "with_sla",
    ]
    .map(|field| {
        group[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {group}"))
    })
}

#[tokio::test]
async fn each_queue_gets_its_loop_counts_rates_and_nearest_rank_durations() {
    let app = TestApp::spawn_with(EVENT_TIME).await;
    let records = planned_loops(&app).await;
    let body = kpis(&app, "").await;
    assert_eq!(body["from"], Value::Null);
    assert_eq!(body["to"], Value::Null);
    let queue_names = names(&body["queues"], "queue");
    let mut sorted = queue_names.clone();
    sorted.sort();
    assert_eq!(queue_names, sorted, "queues are sorted by name");
    for configured in ["cs-digital", "cx-journeys", "unowned"] {
        assert!(
            queue_names.iter().any(|name| name == configured),
            "every configured queue is listed, with or without loops: {queue_names:?}"
        );
    }

    let enterprise = named(&body["queues"], "queue", "cs-enterprise");
    assert_eq!(enterprise["team"], "cs-enterprise");
    assert_eq!(counts(enterprise), [3, 2, 2, 1, 0, 1, 3]);
    let (to_acknowledge, to_close) = durations_of(&records, &["ent-1", "ent-2", "ent-3"]);
    assert_eq!(enterprise["time_to_acknowledge"], to_acknowledge);
    assert_eq!(enterprise["time_to_close"], to_close);
    // 300 s and 600 s: the median is the lower one (rank ceil(1.0) = 1), p90 the upper one.
    assert_eq!(
        enterprise["time_to_acknowledge"],
        json!({"median_seconds": 300.0, "p90_seconds": 600.0})
    );
    assert_eq!(enterprise["sla_attainment"], 1.0);
    assert_eq!(
        enterprise["closed_loop_rate"], 0.5,
        "ent-1 closed as verified, ent-2 as a duplicate; ent-3 was reopened and is not closed"
    );
    assert_eq!(enterprise["reopen_rate"], 0.3333);

    let retention = named(&body["queues"], "queue", "cs-retention");
    assert_eq!(retention["team"], "cs-enterprise");
    assert_eq!(counts(retention), [2, 1, 1, 1, 0, 0, 2]);
    let (to_acknowledge, to_close) = durations_of(&records, &["ret-1", "ret-2"]);
    assert_eq!(retention["time_to_acknowledge"], to_acknowledge);
    assert_eq!(retention["time_to_close"], to_close);
    assert_eq!(retention["closed_loop_rate"], 1.0);
    assert_eq!(retention["reopen_rate"], 0.0);

    let mid_market = named(&body["queues"], "queue", "cs-mid-market");
    assert_eq!(counts(mid_market), [1, 0, 0, 0, 0, 0, 1]);
    let nothing = json!({"median_seconds": null, "p90_seconds": null});
    assert_eq!(mid_market["time_to_acknowledge"], nothing);
    assert_eq!(mid_market["time_to_close"], nothing);
    assert_eq!(mid_market["closed_loop_rate"], Value::Null);
    assert_eq!(mid_market["sla_attainment"], 1.0);

    let digital = named(&body["queues"], "queue", "cs-digital");
    assert_eq!(counts(digital), [0; 7]);
    for figure in ["sla_attainment", "closed_loop_rate", "reopen_rate"] {
        assert_eq!(digital[figure], Value::Null, "{figure} of an idle queue");
    }
}

#[tokio::test]
async fn a_team_pools_the_loops_of_its_queues_and_its_percentiles_are_over_the_union() {
    let app = TestApp::spawn_with(EVENT_TIME).await;
    let records = planned_loops(&app).await;
    let body = kpis(&app, "").await;
    let team_names = names(&body["teams"], "team");
    let mut sorted = team_names.clone();
    sorted.sort();
    assert_eq!(team_names, sorted, "teams are sorted by name");

    let team = named(&body["teams"], "team", "cs-enterprise");
    assert_eq!(team["queues"], json!(["cs-enterprise", "cs-retention"]));
    assert_eq!(counts(team), [5, 3, 3, 2, 0, 1, 5]);
    let (to_acknowledge, to_close) =
        durations_of(&records, &["ent-1", "ent-2", "ent-3", "ret-1", "ret-2"]);
    assert_eq!(team["time_to_acknowledge"], to_acknowledge);
    assert_eq!(team["time_to_close"], to_close);
    // Closed after 900 s and 900 s (cs-enterprise) and 600 s (cs-retention): the pooled median is
    // 900 s, not the 750 s that averaging the two queue medians would give.
    assert_eq!(
        team["time_to_close"],
        json!({"median_seconds": 900.0, "p90_seconds": 900.0})
    );
    assert_eq!(
        team["time_to_acknowledge"],
        json!({"median_seconds": 300.0, "p90_seconds": 600.0})
    );
    assert_eq!(team["closed_loop_rate"], 0.6667);
    assert_eq!(team["reopen_rate"], 0.2);
    assert_eq!(team["sla_attainment"], 1.0);

    let growth = named(&body["teams"], "team", "cs-growth");
    assert_eq!(growth["queues"], json!(["cs-mid-market"]));
    assert_eq!(counts(growth), [1, 0, 0, 0, 0, 0, 1]);

    // `team` keeps the team and its queues; `queue` keeps the queue and the whole team watching it.
    let body = kpis(&app, "?team=cs-enterprise").await;
    assert_eq!(
        names(&body["queues"], "queue"),
        ["cs-enterprise", "cs-retention"]
    );
    assert_eq!(names(&body["teams"], "team"), ["cs-enterprise"]);
    let body = kpis(&app, "?queue=cs-retention").await;
    assert_eq!(names(&body["queues"], "queue"), ["cs-retention"]);
    assert_eq!(names(&body["teams"], "team"), ["cs-enterprise"]);
    assert_eq!(
        body["teams"][0]["loops"], 5,
        "the team's figures stay whole"
    );
    let body = kpis(&app, "?queue=cs-retention&team=cs-growth").await;
    assert_eq!(body["queues"], json!([]));
    assert_eq!(body["teams"], json!([]));
}

#[tokio::test]
async fn from_and_to_keep_the_loops_opened_from_the_start_inclusive_to_the_end_exclusive() {
    let app = TestApp::spawn_with(EVENT_TIME).await;
    let records = planned_loops(&app).await;
    // Minutes 10 to 25: ent-3, ret-1 and ret-2; mid-1 opened at 25 exactly and is left out.
    let query = format!("?from={}&to={}", time(10), time(25));
    let body = kpis(&app, &query).await;
    assert_eq!(body["from"], "2100-03-01T09:10:00.000Z");
    assert_eq!(body["to"], "2100-03-01T09:25:00.000Z");
    let enterprise = named(&body["queues"], "queue", "cs-enterprise");
    assert_eq!(counts(enterprise), [1, 0, 0, 0, 0, 1, 1]);
    assert_eq!(enterprise["reopen_rate"], 1.0);
    let retention = named(&body["queues"], "queue", "cs-retention");
    assert_eq!(counts(retention), [2, 1, 1, 1, 0, 0, 2]);
    assert_eq!(named(&body["queues"], "queue", "cs-mid-market")["loops"], 0);
    let team = named(&body["teams"], "team", "cs-enterprise");
    assert_eq!(counts(team), [3, 1, 1, 1, 0, 1, 3]);
    let (to_acknowledge, to_close) = durations_of(&records, &["ent-3", "ret-1", "ret-2"]);
    assert_eq!(team["time_to_acknowledge"], to_acknowledge);
    assert_eq!(team["time_to_close"], to_close);

    // Dates are midnight UTC: the whole day holds every loop, the day before none.
    let body = kpis(&app, "?from=2100-03-01&to=2100-03-02").await;
    assert_eq!(named(&body["teams"], "team", "cs-enterprise")["loops"], 5);
    let body = kpis(&app, "?to=2100-03-01").await;
    assert_eq!(named(&body["teams"], "team", "cs-enterprise")["loops"], 0);
    assert_eq!(
        named(&body["teams"], "team", "cs-enterprise")["reopen_rate"],
        Value::Null
    );
}

#[tokio::test]
async fn bad_kpi_parameters_answer_400_invalid_parameter() {
    let app = TestApp::spawn().await;
    for query in [
        "colour=blue",
        "from=yesterday",
        "to=2100-13-01",
        "from=03/01/2100",
        "from=2100-03-02&to=2100-03-01",
        "from=2100-03-01&to=2100-03-01",
        "queue=no-such-queue",
        "team=no-such-team",
    ] {
        app.assert_invalid_parameter(&format!("/v1/kpis?{query}"))
            .await;
    }
}

#[tokio::test]
async fn metrics_expose_the_loop_kpis_of_each_queue_over_all_loops() {
    let app = TestApp::spawn_with(EVENT_TIME).await;
    let records = planned_loops(&app).await;
    let (status, metrics) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    let (to_acknowledge, to_close) = durations_of(&records, &["ent-1", "ent-2", "ent-3"]);
    let expected = [
        (
            "sigloop_loop_sla_attainment{queue=\"cs-enterprise\"}".to_owned(),
            json!(1.0),
        ),
        (
            "sigloop_loop_closed_loop_ratio{queue=\"cs-enterprise\"}".to_owned(),
            json!(0.5),
        ),
        (
            "sigloop_loop_reopen_ratio{queue=\"cs-enterprise\"}".to_owned(),
            json!(0.3333),
        ),
        (
            "sigloop_loop_time_to_acknowledge_seconds{quantile=\"0.5\",queue=\"cs-enterprise\"}"
                .to_owned(),
            to_acknowledge["median_seconds"].clone(),
        ),
        (
            "sigloop_loop_time_to_acknowledge_seconds{quantile=\"0.9\",queue=\"cs-enterprise\"}"
                .to_owned(),
            to_acknowledge["p90_seconds"].clone(),
        ),
        (
            "sigloop_loop_time_to_close_seconds{quantile=\"0.5\",queue=\"cs-enterprise\"}"
                .to_owned(),
            to_close["median_seconds"].clone(),
        ),
        (
            "sigloop_loop_time_to_close_seconds{quantile=\"0.9\",queue=\"cs-enterprise\"}"
                .to_owned(),
            to_close["p90_seconds"].clone(),
        ),
    ];
    for (series, value) in expected {
        let line = metrics
            .lines()
            .find(|line| line.starts_with(&format!("{series} ")))
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
        let shown: f64 = line[series.len() + 1..].parse().unwrap();
        assert_eq!(shown, value.as_f64().unwrap(), "{line}");
    }
    // A figure no loop qualifies for has no series: cs-mid-market has no acknowledged loop.
    assert!(
        !metrics.contains(
            "sigloop_loop_time_to_acknowledge_seconds{quantile=\"0.5\",queue=\"cs-mid-market\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("sigloop_loop_reopen_ratio{queue=\"cs-mid-market\"} 0"),
        "{metrics}"
    );
}
