//! Journeys for CX over HTTP, against the real application: the figures of `GET /v1/journeys`, the
//! journey detectors of signals.toml at their thresholds, the links between journey loops and account
//! loops, what resolving a journey loop does to them, and the journey in the account view and in
//! `POST /v1/explain`.
//!
//! Times: `time(0)` is Monday 2 March 2026, 09:00 UTC, so minutes 0 to 6 days 15 hours stay in the ISO
//! week of 2 March; `-WEEK` is the same hour of the week before, `WEEK` of the week after.

mod common;

use std::collections::BTreeSet;

use common::{account, event, ticket, time, TestApp};
use serde_json::{json, Value};

const DAY: i64 = 24 * 60;
const WEEK: i64 = 7 * DAY;

/// Tagged `onboarding.stalled`: a leaf phrase (weight 3) beats the parent's keyword (weight 1).
const STALLED: &str = "We are stuck in onboarding";
/// Tagged `billing.invoice-error`.
const INVOICE: &str = "Our invoice has the wrong amount";
/// Tagged `sentiment.detractor`.
const WOULD_NOT_RECOMMEND: &str = "I would not recommend you";

const THIS_WEEK: &str = "2026-03-02T00:00:00.000Z";
const LAST_WEEK: &str = "2026-02-23T00:00:00.000Z";
const NEXT_WEEK: &str = "2026-03-09T00:00:00.000Z";

// ------------------------------------------------------------------------------------------------
// Event builders
// ------------------------------------------------------------------------------------------------

/// `event` with extra `data` fields.
fn with(mut event: Value, fields: &[(&str, Value)]) -> Value {
    for (name, value) in fields {
        event["data"][*name] = value.clone();
    }
    event
}

/// `event` at the journey stage `stage` (its own `journey_stage`).
fn staged(event: Value, stage: &str) -> Value {
    with(event, &[("journey_stage", json!(stage))])
}

fn commented(event: Value, comment: &str) -> Value {
    with(event, &[("comment", json!(comment))])
}

fn at_touchpoint(event: Value, touchpoint: &str) -> Value {
    with(event, &[("touchpoint", json!(touchpoint))])
}

/// A survey response of any kind; `score` is not checked here, so the server can reject it.
fn survey(id: &str, account_id: &str, kind: &str, score: i64, minutes: i64) -> Value {
    event(
        "survey.responded",
        id,
        minutes,
        json!({"response_id": format!("r-{id}"), "account_id": account_id, "kind": kind, "score": score}),
    )
}

/// A survey response with no score at all.
fn unscored(id: &str, account_id: &str, kind: &str, minutes: i64) -> Value {
    let mut response = survey(id, account_id, kind, 0, minutes);
    response["data"]
        .as_object_mut()
        .expect("data is an object")
        .remove("score");
    response
}

/// An enterprise account whose CSM is `csm`, at lifecycle stage `adoption` (the common builder's).
fn enterprise(account_id: &str, csm: &str) -> Value {
    account(account_id, "enterprise", Some(csm))
}

/// An NPS response saying onboarding is stuck, at the journey stage `onboarding`.
fn stalled(id: &str, account_id: &str, score: i64, minutes: i64) -> Value {
    staged(
        commented(survey(id, account_id, "nps", score, minutes), STALLED),
        "onboarding",
    )
}

/// NPS responses without a comment (`uncategorized`) at `stage`, one a minute from `minutes`, each
/// from its own account `acct-{prefix}-{i}`.
fn responses(prefix: &str, stage: &str, scores: &[i64], minutes: i64) -> Vec<Value> {
    scores
        .iter()
        .zip(0..)
        .map(|(score, i)| {
            staged(
                survey(
                    &format!("{prefix}-{i}"),
                    &format!("acct-{prefix}-{i}"),
                    "nps",
                    *score,
                    minutes + i,
                ),
                stage,
            )
        })
        .collect()
}

/// `count` invoice tickets at stage `renewal`, one a minute from `minutes`, from accounts
/// `acct-00`, `acct-01`, ... (two weeks of tickets reuse the accounts, below the repeat-tickets
/// threshold of three).
fn invoice_tickets(prefix: &str, count: i64, minutes: i64) -> Vec<Value> {
    (0..count)
        .map(|i| {
            staged(
                ticket(
                    &format!("{prefix}-{i}"),
                    &format!("acct-{i:02}"),
                    minutes + i,
                    INVOICE,
                    "normal",
                ),
                "renewal",
            )
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Expected values
// ------------------------------------------------------------------------------------------------

/// `time(minutes)` as the API shows times: RFC 3339 with milliseconds.
fn shown(minutes: i64) -> String {
    chrono::DateTime::parse_from_rfc3339(&time(minutes))
        .expect("time() is RFC 3339")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The figures of a journey group: counts, responses `[nps, csat, ces]`, the NPS split
/// `[promoters, passives, detractors]` and `[nps, csat_avg, ces_avg]`.
fn figures(
    events: u64,
    tickets: u64,
    accounts: u64,
    responses: [u64; 3],
    split: [u64; 3],
    scores: [Option<f64>; 3],
) -> Value {
    json!({
        "events": events,
        "tickets": tickets,
        "accounts": accounts,
        "responses": {"nps": responses[0], "csat": responses[1], "ces": responses[2]},
        "promoters": split[0],
        "passives": split[1],
        "detractors": split[2],
        "nps": scores[0],
        "csat_avg": scores[1],
        "ces_avg": scores[2],
    })
}

/// A journey group: its dimensions, then its figures.
fn group(dimensions: Value, figures: Value) -> Value {
    let mut group = dimensions;
    let object = group.as_object_mut().expect("dimensions are an object");
    for (name, value) in figures.as_object().expect("figures are an object") {
        object.insert(name.clone(), value.clone());
    }
    group
}

/// The `window` dimension of a group.
fn window(start: &str, end: &str) -> Value {
    json!({"start": start, "end": end})
}

/// A journey signal's summary of one window, as in a trace's `figures`.
fn summary(start: &str, counts: [u64; 3], split: [u64; 3], nps: Option<f64>) -> Value {
    let [events, tickets, accounts] = counts;
    json!({
        "start": start,
        "events": events,
        "tickets": tickets,
        "accounts": accounts,
        "nps_responses": split[0] + split[1] + split[2],
        "promoters": split[0],
        "passives": split[1],
        "detractors": split[2],
        "nps": nps,
    })
}

// ------------------------------------------------------------------------------------------------
// HTTP helpers
// ------------------------------------------------------------------------------------------------

async fn journeys(app: &TestApp, query: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/journeys?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

async fn groups(app: &TestApp, query: &str) -> Vec<Value> {
    journeys(app, query).await["groups"]
        .as_array()
        .expect("groups array")
        .clone()
}

/// The sum of a numeric field (a dotted path such as `responses.nps`) over `groups`.
fn total(groups: &[Value], path: &str) -> u64 {
    groups
        .iter()
        .map(|group| {
            path.split('.')
                .fold(group, |value, name| &value[name])
                .as_u64()
                .unwrap_or_else(|| panic!("{path} is a count in {group}"))
        })
        .sum()
}

async fn detail(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/loops/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The one journey loop, in detail.
async fn only_journey_loop(app: &TestApp) -> Value {
    let loops = app.loops("kind=journey").await;
    assert_eq!(loops.len(), 1, "{loops:?}");
    detail(app, loops[0]["id"].as_str().expect("loop id")).await
}

/// The id of the one loop of `account_id`.
async fn account_loop_id(app: &TestApp, account_id: &str) -> String {
    let loops = app.loops(&format!("account_id={account_id}")).await;
    assert_eq!(loops.len(), 1, "{account_id}: {loops:?}");
    loops[0]["id"].as_str().expect("loop id").to_owned()
}

/// The links of a loop detail with `relation`, as (id, state) pairs.
fn links(detail: &Value, relation: &str) -> BTreeSet<(String, String)> {
    detail["links"]
        .as_array()
        .expect("links array")
        .iter()
        .filter(|link| link["relation"] == relation)
        .map(|link| {
            (
                link["id"].as_str().expect("link id").to_owned(),
                link["state"].as_str().expect("link state").to_owned(),
            )
        })
        .collect()
}

fn pairs(rows: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    rows.iter()
        .map(|(id, state)| ((*id).to_owned(), (*state).to_owned()))
        .collect()
}

/// The `(action, actor)` of each history row.
fn history(detail: &Value) -> Vec<(String, String)> {
    detail["history"]
        .as_array()
        .expect("history array")
        .iter()
        .map(|row| {
            (
                row["action"].as_str().expect("action").to_owned(),
                row["actor"].as_str().expect("actor").to_owned(),
            )
        })
        .collect()
}

async fn act(app: &TestApp, id: &str, body: Value) -> Value {
    let (status, answer) = app.action(id, body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The explained signal of `detector`, from `POST /v1/explain`.
fn explained<'a>(explanation: &'a Value, detector: &str) -> Option<&'a Value> {
    explanation["signals"]
        .as_array()
        .expect("signals array")
        .iter()
        .find(|signal| signal["signal"]["detector"] == detector)
}

// ------------------------------------------------------------------------------------------------
// 1. Exact figures
// ------------------------------------------------------------------------------------------------

/// Fifteen accepted events and seven rejected responses over three stages, five touchpoints, three
/// days and two weeks. Hand-computed:
///
/// | id  | day      | account | stage (from)       | tag                   | touchpoint | figure |
/// |-----|----------|---------|--------------------|-----------------------|------------|--------|
/// | e1  | Mon 2    | acct-c  | onboarding (event) | onboarding.stalled    | in-app     | NPS 0  |
/// | e2  | Mon 2    | acct-a  | onboarding (event) | uncategorized         | in-app     | NPS 10 |
/// | e3  | Mon 2    | acct-c  | onboarding (event) | onboarding.stalled    | email      | NPS 9  |
/// | e4  | Mon 2    | acct-c  | onboarding (event) | onboarding.stalled    | chat       | ticket |
/// | e5  | Tue 3    | acct-a  | adoption (account) | uncategorized         | email      | NPS 6  |
/// | e6  | Tue 3    | acct-a  | adoption (account) | billing.invoice-error | email      | NPS 7  |
/// | e7  | Tue 3    | acct-a  | adoption (account) | uncategorized         | unknown    | NPS 8  |
/// | e8  | Tue 3    | acct-a  | adoption (account) | uncategorized         | email      | CSAT 5 |
/// | e9  | Tue 3    | acct-a  | adoption (account) | billing.invoice-error | email      | CSAT 4 |
/// | e10 | Tue 3    | acct-a  | adoption (account) | uncategorized         | email      | CSAT 4 |
/// | e11 | Tue 3    | acct-a  | adoption (account) | billing.invoice-error | email      | ticket |
/// | e12 | Mon 9    | acct-c  | unknown            | uncategorized         | unknown    | NPS 3  |
/// | e13 | Mon 9    | acct-c  | unknown            | uncategorized         | phone      | CES 1  |
/// | e14 | Mon 9    | acct-c  | unknown            | uncategorized         | phone      | CES 2  |
/// | e15 | Mon 9    | acct-c  | unknown            | uncategorized         | phone      | CES 2  |
fn fixture() -> Vec<Value> {
    let onboarding = |event: Value| staged(event, "onboarding");
    vec![
        account("acct-a", "smb", None),
        onboarding(at_touchpoint(
            commented(survey("e1", "acct-c", "nps", 0, 0), STALLED),
            "in-app",
        )),
        // acct-a is at lifecycle stage adoption, but the event names its own stage.
        onboarding(at_touchpoint(
            survey("e2", "acct-a", "nps", 10, 10),
            "in-app",
        )),
        onboarding(at_touchpoint(
            commented(survey("e3", "acct-c", "nps", 9, 20), STALLED),
            "email",
        )),
        onboarding(with(
            ticket("e4", "acct-c", 30, STALLED, "normal"),
            &[("channel", json!("chat"))],
        )),
        // Rejected: none of these counts anywhere.
        onboarding(unscored("x-nps-unscored", "acct-c", "nps", 31)),
        onboarding(unscored("x-csat-unscored", "acct-c", "csat", 32)),
        onboarding(survey("x-nps-11", "acct-c", "nps", 11, 33)),
        onboarding(survey("x-csat-0", "acct-c", "csat", 0, 34)),
        onboarding(survey("x-csat-6", "acct-c", "csat", 6, 35)),
        onboarding(survey("x-ces-0", "acct-c", "ces", 0, 36)),
        onboarding(survey("x-ces-8", "acct-c", "ces", 8, 37)),
        at_touchpoint(survey("e5", "acct-a", "nps", 6, DAY), "email"),
        at_touchpoint(
            commented(survey("e6", "acct-a", "nps", 7, DAY + 10), INVOICE),
            "email",
        ),
        survey("e7", "acct-a", "nps", 8, DAY + 20),
        at_touchpoint(survey("e8", "acct-a", "csat", 5, DAY + 30), "email"),
        at_touchpoint(
            commented(survey("e9", "acct-a", "csat", 4, DAY + 40), INVOICE),
            "email",
        ),
        at_touchpoint(survey("e10", "acct-a", "csat", 4, DAY + 50), "email"),
        ticket("e11", "acct-a", DAY + 60, INVOICE, "normal"),
        survey("e12", "acct-c", "nps", 3, WEEK),
        at_touchpoint(survey("e13", "acct-c", "ces", 1, WEEK + 10), "phone"),
        at_touchpoint(survey("e14", "acct-c", "ces", 2, WEEK + 20), "phone"),
        at_touchpoint(survey("e15", "acct-c", "ces", 2, WEEK + 30), "phone"),
    ]
}

/// adoption: NPS 6, 7, 8 (-33.33), CSAT 5, 4, 4 (4.33).
fn adoption_figures() -> Value {
    figures(
        7,
        1,
        1,
        [3, 3, 0],
        [0, 2, 1],
        [Some(-33.33), Some(4.33), None],
    )
}

/// onboarding: NPS 0, 10, 9 (33.33), no CSAT or CES.
fn onboarding_figures() -> Value {
    figures(4, 1, 2, [3, 0, 0], [2, 0, 1], [Some(33.33), None, None])
}

/// unknown: NPS 3 (-100), CES 1, 2, 2 (1.67).
fn unknown_figures() -> Value {
    figures(
        4,
        0,
        1,
        [1, 0, 3],
        [0, 0, 1],
        [Some(-100.0), None, Some(1.67)],
    )
}

#[tokio::test]
async fn unscored_and_out_of_range_responses_are_rejected_with_their_codes() {
    let app = TestApp::spawn().await;
    let answer = app.ingest(&fixture()).await;
    assert_eq!(
        answer["accepted"], 16,
        "an account and fifteen events: {answer}"
    );
    let rejected: BTreeSet<(String, String)> = answer["rejected"]
        .as_array()
        .expect("rejected array")
        .iter()
        .map(|row| {
            (
                row["id"].as_str().expect("id").to_owned(),
                row["code"].as_str().expect("code").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        pairs(&[
            ("x-nps-unscored", "missing_field"),
            ("x-csat-unscored", "missing_field"),
            ("x-nps-11", "out_of_range"),
            ("x-csat-0", "out_of_range"),
            ("x-csat-6", "out_of_range"),
            ("x-ces-0", "out_of_range"),
            ("x-ces-8", "out_of_range"),
        ])
    );
}

#[tokio::test]
async fn journey_figures_by_stage_are_exact_with_null_averages_where_there_are_no_responses() {
    let app = TestApp::spawn().await;
    app.ingest(&fixture()).await;
    let body = journeys(&app, "").await;
    assert_eq!(body["kind"], "day", "{body}");
    assert_eq!(body["group_by"], json!(["stage"]));
    assert_eq!(body["from"], Value::Null);
    assert_eq!(body["to"], Value::Null);
    assert_eq!(
        body["groups"],
        json!([
            group(json!({"stage": "adoption"}), adoption_figures()),
            group(json!({"stage": "onboarding"}), onboarding_figures()),
            group(json!({"stage": "unknown"}), unknown_figures()),
        ])
    );
}

#[tokio::test]
async fn journey_figures_by_stage_and_tag_are_exact() {
    let app = TestApp::spawn().await;
    app.ingest(&fixture()).await;
    assert_eq!(
        groups(&app, "group_by=stage,tag").await,
        vec![
            group(
                json!({"stage": "adoption", "tag": "billing.invoice-error"}),
                figures(3, 1, 1, [1, 1, 0], [0, 1, 0], [Some(0.0), Some(4.0), None]),
            ),
            group(
                json!({"stage": "adoption", "tag": "uncategorized"}),
                figures(
                    4,
                    0,
                    1,
                    [2, 2, 0],
                    [0, 1, 1],
                    [Some(-50.0), Some(4.5), None]
                ),
            ),
            group(
                json!({"stage": "onboarding", "tag": "onboarding.stalled"}),
                figures(3, 1, 1, [2, 0, 0], [1, 0, 1], [Some(0.0), None, None]),
            ),
            group(
                json!({"stage": "onboarding", "tag": "uncategorized"}),
                figures(1, 0, 1, [1, 0, 0], [1, 0, 0], [Some(100.0), None, None]),
            ),
            group(
                json!({"stage": "unknown", "tag": "uncategorized"}),
                unknown_figures(),
            ),
        ]
    );
}

#[tokio::test]
async fn journey_figures_by_touchpoint_are_exact() {
    let app = TestApp::spawn().await;
    app.ingest(&fixture()).await;
    assert_eq!(
        groups(&app, "group_by=touchpoint").await,
        vec![
            group(
                json!({"touchpoint": "chat"}),
                figures(1, 1, 1, [0, 0, 0], [0, 0, 0], [None, None, None]),
            ),
            group(
                json!({"touchpoint": "email"}),
                figures(7, 1, 2, [3, 3, 0], [1, 1, 1], [Some(0.0), Some(4.33), None]),
            ),
            group(
                json!({"touchpoint": "in-app"}),
                figures(2, 0, 2, [2, 0, 0], [1, 0, 1], [Some(0.0), None, None]),
            ),
            group(
                json!({"touchpoint": "phone"}),
                figures(3, 0, 1, [0, 0, 3], [0, 0, 0], [None, None, Some(1.67)]),
            ),
            group(
                json!({"touchpoint": "unknown"}),
                figures(2, 0, 2, [2, 0, 0], [0, 1, 1], [Some(-50.0), None, None]),
            ),
        ]
    );
}

#[tokio::test]
async fn journey_figures_by_week_and_by_day_are_exact() {
    let app = TestApp::spawn().await;
    app.ingest(&fixture()).await;
    let body = journeys(&app, "group_by=window&kind=week").await;
    assert_eq!(body["kind"], "week");
    assert_eq!(body["group_by"], json!(["window"]));
    assert_eq!(
        body["groups"],
        json!([
            group(
                json!({"window": window(THIS_WEEK, NEXT_WEEK)}),
                // NPS 0, 10, 9, 6, 7, 8: two promoters, two passives, two detractors.
                figures(
                    11,
                    2,
                    2,
                    [6, 3, 0],
                    [2, 2, 2],
                    [Some(0.0), Some(4.33), None]
                ),
            ),
            group(
                json!({"window": window(NEXT_WEEK, "2026-03-16T00:00:00.000Z")}),
                unknown_figures(),
            ),
        ])
    );
    assert_eq!(
        groups(&app, "group_by=window").await,
        vec![
            group(
                json!({"window": window(THIS_WEEK, "2026-03-03T00:00:00.000Z")}),
                onboarding_figures(),
            ),
            group(
                json!({"window": window("2026-03-03T00:00:00.000Z", "2026-03-04T00:00:00.000Z")}),
                adoption_figures(),
            ),
            group(
                json!({"window": window(NEXT_WEEK, "2026-03-10T00:00:00.000Z")}),
                unknown_figures(),
            ),
        ]
    );
}

#[tokio::test]
async fn every_accepted_response_counts_exactly_once_in_every_grouping() {
    let app = TestApp::spawn().await;
    app.ingest(&fixture()).await;
    for (query, count) in [
        ("group_by=stage", 3),
        ("group_by=tag", 3),
        ("group_by=touchpoint", 5),
        ("group_by=window", 3),
        ("group_by=window&kind=week", 2),
        ("group_by=stage,tag", 5),
        ("group_by=tag,touchpoint", 8),
        ("group_by=touchpoint,stage,window", 7),
        ("group_by=stage,tag,touchpoint,window&kind=week", 9),
    ] {
        let groups = groups(&app, query).await;
        assert_eq!(groups.len(), count, "{query}: {groups:?}");
        assert_eq!(total(&groups, "responses.nps"), 7, "{query}");
        assert_eq!(total(&groups, "responses.csat"), 3, "{query}");
        assert_eq!(total(&groups, "responses.ces"), 3, "{query}");
        assert_eq!(
            total(&groups, "promoters") + total(&groups, "passives") + total(&groups, "detractors"),
            7,
            "{query}"
        );
        assert_eq!(total(&groups, "events"), 15, "{query}");
        assert_eq!(total(&groups, "tickets"), 2, "{query}");
    }
}

#[tokio::test]
async fn journey_filters_and_from_to_round_out_to_whole_windows() {
    let app = TestApp::spawn().await;
    app.ingest(&fixture()).await;
    assert_eq!(
        groups(
            &app,
            "group_by=stage,tag,touchpoint&stage=adoption&tag=billing&touchpoint=email"
        )
        .await,
        vec![group(
            json!({"stage": "adoption", "tag": "billing.invoice-error", "touchpoint": "email"}),
            figures(3, 1, 1, [1, 1, 0], [0, 1, 0], [Some(0.0), Some(4.0), None]),
        )],
        "a tag filter takes the tag's descendants"
    );
    assert_eq!(
        groups(&app, "group_by=tag&tag=onboarding.stalled").await,
        vec![group(
            json!({"tag": "onboarding.stalled"}),
            figures(3, 1, 1, [2, 0, 0], [1, 0, 1], [Some(0.0), None, None]),
        )]
    );
    assert!(
        groups(&app, "tag=onboard").await.is_empty(),
        "tag filters stop at dots"
    );
    // Tuesday noon to Tuesday evening is the whole of Tuesday.
    let body = journeys(
        &app,
        "group_by=stage&from=2026-03-03T12:00:00Z&to=2026-03-03T18:00:00Z",
    )
    .await;
    assert_eq!(body["from"], "2026-03-03T00:00:00.000Z", "{body}");
    assert_eq!(body["to"], "2026-03-04T00:00:00.000Z", "{body}");
    assert_eq!(
        body["groups"],
        json!([group(json!({"stage": "adoption"}), adoption_figures())])
    );
    // A Wednesday and a Thursday are the whole week of 2 March.
    let body = journeys(&app, "kind=week&from=2026-03-04&to=2026-03-05").await;
    assert_eq!(body["from"], THIS_WEEK, "{body}");
    assert_eq!(body["to"], NEXT_WEEK, "{body}");
    assert_eq!(
        body["groups"],
        json!([
            group(json!({"stage": "adoption"}), adoption_figures()),
            group(json!({"stage": "onboarding"}), onboarding_figures()),
        ])
    );
    // From alone, as a date: the week of 9 March onwards.
    assert_eq!(
        groups(&app, "from=2026-03-09").await,
        vec![group(json!({"stage": "unknown"}), unknown_figures())]
    );
}

#[tokio::test]
async fn every_event_but_account_upserted_feeds_the_journey_and_only_opened_tickets_count_as_tickets(
) {
    let app = TestApp::spawn().await;
    app.ingest(&[
        account("acct-1", "mid-market", Some("dev.patel")),
        staged(ticket("t-1", "acct-1", 1, INVOICE, "normal"), "billing"),
        event(
            "ticket.updated",
            "t-2",
            2,
            json!({"ticket_id": "T-t-1", "account_id": "acct-1", "status": "pending", "comment": "Any update?"}),
        ),
        event(
            "ticket.solved",
            "t-3",
            3,
            json!({"ticket_id": "T-t-1", "account_id": "acct-1", "resolution": "Credit note issued"}),
        ),
        event(
            "ticket.reopened",
            "t-4",
            4,
            json!({"ticket_id": "T-t-1", "account_id": "acct-1"}),
        ),
        event(
            "usage.metric",
            "u-1",
            5,
            json!({"account_id": "acct-1", "metric": "active_users", "value": 42.5}),
        ),
        event(
            "usage.milestone",
            "u-2",
            6,
            json!({"account_id": "acct-1", "milestone": "onboarding.first_integration"}),
        ),
        at_touchpoint(
            staged(survey("s-1", "acct-1", "csat", 4, 7), "support"),
            "email",
        ),
    ])
    .await;
    assert_eq!(
        groups(&app, "group_by=stage,touchpoint").await,
        vec![
            group(
                json!({"stage": "adoption", "touchpoint": "unknown"}),
                figures(5, 0, 1, [0, 0, 0], [0, 0, 0], [None, None, None]),
            ),
            group(
                json!({"stage": "billing", "touchpoint": "email"}),
                figures(1, 1, 1, [0, 0, 0], [0, 0, 0], [None, None, None]),
            ),
            group(
                json!({"stage": "support", "touchpoint": "email"}),
                figures(1, 0, 1, [0, 1, 0], [0, 0, 0], [None, Some(4.0), None]),
            ),
        ]
    );
}

#[tokio::test]
async fn a_week_runs_from_monday_midnight_utc_whatever_the_offset_of_the_event_time() {
    let app = TestApp::spawn().await;
    let at = |id: &str, instant: &str| {
        let mut response = survey(id, "acct-t", "nps", 9, 0);
        response["time"] = json!(instant);
        response
    };
    app.ingest(&[
        at("sunday-last-second", "2026-03-08T23:59:59Z"),
        // 23:00 UTC on Sunday.
        at("sunday-east", "2026-03-09T01:00:00+02:00"),
        at("monday-first-second", "2026-03-09T00:00:00Z"),
        // 01:30 UTC on Monday.
        at("monday-west", "2026-03-08T23:30:00-02:00"),
    ])
    .await;
    let two = || figures(2, 0, 1, [2, 0, 0], [2, 0, 0], [Some(100.0), None, None]);
    assert_eq!(
        groups(&app, "group_by=window&kind=week").await,
        vec![
            group(json!({"window": window(THIS_WEEK, NEXT_WEEK)}), two()),
            group(
                json!({"window": window(NEXT_WEEK, "2026-03-16T00:00:00.000Z")}),
                two()
            ),
        ]
    );
    assert_eq!(
        groups(&app, "group_by=window").await,
        vec![
            group(
                json!({"window": window("2026-03-08T00:00:00.000Z", NEXT_WEEK)}),
                two()
            ),
            group(
                json!({"window": window(NEXT_WEEK, "2026-03-10T00:00:00.000Z")}),
                two()
            ),
        ]
    );
}

#[tokio::test]
async fn nps_and_averages_round_halves_away_from_zero() {
    let app = TestApp::spawn().await;
    // 31 passives and a detractor: -1/32 = -3.125 points.
    let mut scores = vec![8; 31];
    scores.push(6);
    let mut events = responses("n", "adoption", &scores, 0);
    // CES 17/8 = 2.125; CSAT 5/3 = 1.666...
    for (i, score) in [1, 2, 2, 2, 2, 2, 3, 3].into_iter().enumerate() {
        events.push(staged(
            survey(&format!("ces-{i}"), "acct-r", "ces", score, 100),
            "adoption",
        ));
    }
    for (i, score) in [1, 1, 3].into_iter().enumerate() {
        events.push(staged(
            survey(&format!("csat-{i}"), "acct-r", "csat", score, 200),
            "adoption",
        ));
    }
    app.ingest(&events).await;
    assert_eq!(
        groups(&app, "group_by=stage").await,
        vec![group(
            json!({"stage": "adoption"}),
            figures(
                43,
                0,
                33,
                [32, 3, 8],
                [0, 31, 1],
                [Some(-3.13), Some(1.67), Some(2.13)]
            ),
        )]
    );
}

#[tokio::test]
async fn a_duplicate_event_counts_once_in_the_journey_figures() {
    let app = TestApp::spawn().await;
    let response = staged(survey("dup", "acct-d", "nps", 10, 0), "onboarding");
    app.ingest(std::slice::from_ref(&response)).await;
    let again = app.ingest(&[response.clone(), response]).await;
    assert_eq!(again["duplicates"], 2, "{again}");
    assert_eq!(
        groups(&app, "").await,
        vec![group(
            json!({"stage": "onboarding"}),
            figures(1, 0, 1, [1, 0, 0], [1, 0, 0], [Some(100.0), None, None]),
        )]
    );
}

// ------------------------------------------------------------------------------------------------
// 2. affected-accounts
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn affected_accounts_opens_one_journey_loop_at_the_fortieth_distinct_account_of_the_week() {
    let app = TestApp::spawn().await;
    // Thirty-nine accounts, one of them twice: forty responses, thirty-nine accounts.
    let mut events: Vec<Value> = (0..39)
        .map(|i| stalled(&format!("p-{i}"), &format!("acct-{i:02}"), 8, i))
        .collect();
    events.push(stalled("p-again", "acct-00", 9, 50));
    app.ingest(&events).await;
    assert!(app.loops("kind=journey").await.is_empty());
    assert_eq!(
        groups(&app, "group_by=stage,tag&kind=week").await,
        vec![group(
            json!({"stage": "onboarding", "tag": "onboarding.stalled"}),
            figures(40, 0, 39, [40, 0, 0], [1, 39, 0], [Some(2.5), None, None]),
        )]
    );

    // Explain tells what the fortieth account would do, and stores nothing.
    let fortieth = stalled("p-39", "acct-39", 8, 60);
    let (status, explanation) = app.post_json("/v1/explain", &fortieth).await;
    assert_eq!(status, 200, "{explanation}");
    let signal = explained(&explanation, "affected-accounts").expect("a journey signal");
    assert_eq!(signal["outcome"], "open", "{signal}");
    assert_eq!(signal["loop_key"], "journey:onboarding:onboarding.stalled");
    assert_eq!(signal["queue"], "cx-journeys");
    assert_eq!(signal["owner"], "cx-onboarding");
    assert_eq!(signal["signal"]["kind"], "journey");
    assert!(app.loops("kind=journey").await.is_empty());

    app.ingest(&[fortieth]).await;
    let journey = only_journey_loop(&app).await;
    assert_eq!(journey["key"], "journey:onboarding:onboarding.stalled");
    assert_eq!(journey["kind"], "journey");
    assert_eq!(journey["queue"], "cx-journeys");
    assert_eq!(journey["owner"], "cx-onboarding");
    assert_eq!(journey["tag"], "onboarding.stalled");
    assert_eq!(journey["stage"], "onboarding");
    assert_eq!(journey["account_id"], Value::Null);
    assert_eq!(journey["state"], "open");
    assert_eq!(
        journey["priority"], "P2",
        "severity high, no tier to raise it"
    );
    let trace = &journey["trace"];
    assert_eq!(trace["detector"], "affected-accounts");
    assert_eq!(trace["route"]["path"], json!(["root", "journeys"]));
    assert_eq!(
        trace["figures"],
        json!({
            "window": "week",
            "stage": "onboarding",
            "tag": "onboarding.stalled",
            // Forty-one responses (1 promoter, 40 passives): NPS 2.44.
            "current": summary(THIS_WEEK, [41, 0, 40], [1, 40, 0], Some(2.44)),
            "previous": summary(LAST_WEEK, [0, 0, 0], [0, 0, 0], None),
            "threshold": "at least 40 accounts",
        })
    );
    assert_eq!(
        trace["journey"],
        json!({
            "stage": "onboarding",
            "stage_from": "event",
            "tag": "onboarding.stalled",
            "touchpoint": "unknown",
            "windows": [
                {"window": "day", "start": THIS_WEEK},
                {"window": "week", "start": THIS_WEEK},
            ],
        })
    );

    let (_, queues) = app.get("/v1/queues").await;
    let cx = queues["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|queue| queue["name"] == "cx-journeys")
        .expect("the cx-journeys queue")
        .clone();
    assert_eq!(cx["team"], "cx");
    assert_eq!(cx["counts"]["open"], 1);

    // It fires once a week: the forty-first account adds no signal.
    app.ingest(&[stalled("p-40", "acct-40", 8, 70)]).await;
    let journey = only_journey_loop(&app).await;
    assert_eq!(journey["signal_count"], 1, "{journey}");
}

#[tokio::test]
async fn affected_accounts_leaves_sentiment_tags_and_uncategorized_buckets_alone() {
    let app = TestApp::spawn().await;
    let mut events = Vec::new();
    for i in 0..45 {
        let account_id = format!("acct-{i:02}");
        events.push(staged(
            commented(
                survey(&format!("s-{i}"), &account_id, "nps", 8, i),
                WOULD_NOT_RECOMMEND,
            ),
            "onboarding",
        ));
        events.push(staged(
            survey(&format!("u-{i}"), &account_id, "nps", 8, 100 + i),
            "onboarding",
        ));
    }
    app.ingest(&events).await;
    let passives = || figures(45, 0, 45, [45, 0, 0], [0, 45, 0], [Some(0.0), None, None]);
    assert_eq!(
        groups(&app, "group_by=tag&kind=week").await,
        vec![
            group(json!({"tag": "sentiment.detractor"}), passives()),
            group(json!({"tag": "uncategorized"}), passives()),
        ]
    );
    assert!(app.loops("kind=journey").await.is_empty());
}

// ------------------------------------------------------------------------------------------------
// 3. nps-drop
// ------------------------------------------------------------------------------------------------

/// Last week at stage `stage`: five promoters and five passives, NPS 50.
fn fifty_last_week(stage: &str) -> Vec<Value> {
    responses("prev", stage, &[9, 10, 9, 10, 9, 7, 8, 7, 8, 7], -WEEK)
}

#[tokio::test]
async fn nps_drop_of_nineteen_point_two_three_points_opens_no_journey_loop() {
    let app = TestApp::spawn().await;
    let mut events = fifty_last_week("renewal");
    // Promoters first, so NPS only falls: 40 at ten responses, 30.77 at thirteen.
    events.extend(responses(
        "now",
        "renewal",
        &[9, 10, 9, 10, 7, 8, 7, 8, 7, 8, 7, 8, 7],
        0,
    ));
    app.ingest(&events).await;
    assert_eq!(
        groups(&app, "group_by=window&kind=week").await,
        vec![
            group(
                json!({"window": window(LAST_WEEK, THIS_WEEK)}),
                figures(10, 0, 10, [10, 0, 0], [5, 5, 0], [Some(50.0), None, None]),
            ),
            group(
                json!({"window": window(THIS_WEEK, NEXT_WEEK)}),
                figures(13, 0, 13, [13, 0, 0], [4, 9, 0], [Some(30.77), None, None]),
            ),
        ]
    );
    assert!(app.loops("kind=journey").await.is_empty());
}

#[tokio::test]
async fn nps_drop_needs_ten_responses_in_both_weeks() {
    let app = TestApp::spawn().await;
    // Ten promoters, then nine passives: down 100 points on nine responses.
    let mut events = responses("prev-a", "expansion", &[10; 10], -WEEK);
    events.extend(responses("now-a", "expansion", &[8; 9], 0));
    // Nine promoters, then ten passives: down 100 points against nine responses.
    events.extend(responses("prev-b", "advocacy", &[10; 9], -WEEK));
    events.extend(responses("now-b", "advocacy", &[8; 10], 0));
    app.ingest(&events).await;
    assert_eq!(
        groups(&app, "group_by=stage,window&kind=week").await.len(),
        4
    );
    assert!(app.loops("kind=journey").await.is_empty());
}

#[tokio::test]
async fn nps_drop_of_exactly_twenty_points_opens_a_sentiment_journey_loop_linked_to_the_detractor()
{
    let app = TestApp::spawn().await;
    let mut events = vec![enterprise("acct-renew", "ana.lima")];
    events.extend(fifty_last_week("renewal"));
    // Nine responses this week: not yet enough to compare.
    events.extend(responses(
        "now",
        "renewal",
        &[9, 10, 9, 10, 7, 8, 7, 8, 7],
        0,
    ));
    app.ingest(&events).await;
    assert!(app.loops("kind=journey").await.is_empty());

    // The tenth, a detractor at the boundary score 6: 4 promoters, 5 passives, 1 detractor, NPS 30.
    let detractor = staged(survey("d-renew", "acct-renew", "nps", 6, 30), "renewal");
    app.ingest(&[detractor]).await;
    let journey = only_journey_loop(&app).await;
    assert_eq!(journey["key"], "journey:renewal:sentiment.detractor");
    assert_eq!(journey["tag"], "sentiment.detractor");
    assert_eq!(journey["stage"], "renewal");
    assert_eq!(journey["queue"], "cx-journeys");
    assert_eq!(journey["owner"], "cx-retention");
    assert_eq!(journey["priority"], "P2");
    assert_eq!(journey["trace"]["detector"], "nps-drop");
    assert_eq!(
        journey["trace"]["figures"],
        json!({
            "window": "week",
            "stage": "renewal",
            "tag": "uncategorized",
            "current": summary(THIS_WEEK, [10, 0, 10], [4, 5, 1], Some(30.0)),
            "previous": summary(LAST_WEEK, [10, 0, 10], [5, 5, 0], Some(50.0)),
            "threshold": "NPS down at least 20 points, at least 10 responses in both windows",
        })
    );

    // The detractor's own account loop opened after the journey loop, and was linked on arrival.
    let account_loop = detail(&app, &account_loop_id(&app, "acct-renew").await).await;
    assert_eq!(
        account_loop["key"],
        "account:acct-renew:sentiment.detractor"
    );
    assert_eq!(account_loop["stage"], "renewal");
    assert_eq!(account_loop["journey_loop"], journey["id"]);
    let journey_id = journey["id"].as_str().expect("id");
    assert_eq!(
        links(&account_loop, "journey"),
        pairs(&[(journey_id, "open")])
    );
    let account_id = account_loop["id"].as_str().expect("id");
    let journey = detail(&app, journey_id).await;
    assert_eq!(links(&journey, "account"), pairs(&[(account_id, "open")]));
    assert_eq!(journey["links"][0]["account_id"], "acct-renew");
}

// ------------------------------------------------------------------------------------------------
// 4. ticket-surge
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn ticket_surge_fires_at_fifty_percent_more_tickets_than_last_week_and_not_before() {
    let app = TestApp::spawn().await;
    // 18 last week (too few to surge against none), 26 this week: up 44.44%.
    let mut events = invoice_tickets("prev", 18, -WEEK);
    events.extend(invoice_tickets("now", 26, 0));
    app.ingest(&events).await;
    let tickets: Vec<u64> = groups(&app, "group_by=window&kind=week&stage=renewal")
        .await
        .iter()
        .map(|group| group["tickets"].as_u64().expect("tickets"))
        .collect();
    assert_eq!(tickets, vec![18, 26]);
    assert!(app.loops("kind=journey").await.is_empty());

    // The 27th: up exactly 50%.
    app.ingest(&invoice_tickets("more", 27, 100)[26..]).await;
    let journey = only_journey_loop(&app).await;
    assert_eq!(journey["key"], "journey:renewal:billing.invoice-error");
    assert_eq!(journey["queue"], "cx-journeys");
    assert_eq!(journey["owner"], "cx-billing");
    assert_eq!(journey["priority"], "P3", "severity medium");
    assert_eq!(journey["trace"]["detector"], "ticket-surge");
    assert_eq!(
        journey["trace"]["figures"],
        json!({
            "window": "week",
            "stage": "renewal",
            "tag": "billing.invoice-error",
            "current": summary(THIS_WEEK, [27, 27, 27], [0, 0, 0], None),
            "previous": summary(LAST_WEEK, [18, 18, 18], [0, 0, 0], None),
            "threshold": "tickets up at least 50% against the previous week, at least 20 tickets",
        })
    );
    assert_eq!(
        journey["trace"]["journey"]["touchpoint"], "email",
        "a ticket's touchpoint is its channel"
    );

    // Once a week.
    app.ingest(&invoice_tickets("again", 30, 200)[27..]).await;
    assert_eq!(only_journey_loop(&app).await["signal_count"], 1);
}

#[tokio::test]
async fn ticket_surge_against_an_empty_week_needs_twenty_tickets() {
    let app = TestApp::spawn().await;
    app.ingest(&invoice_tickets("now", 19, 0)).await;
    assert!(app.loops("kind=journey").await.is_empty());
    app.ingest(&invoice_tickets("more", 20, 100)[19..]).await;
    let journey = only_journey_loop(&app).await;
    assert_eq!(journey["trace"]["detector"], "ticket-surge");
    assert_eq!(
        journey["trace"]["figures"]["current"],
        summary(THIS_WEEK, [20, 20, 20], [0, 0, 0], None)
    );
    assert_eq!(
        journey["trace"]["figures"]["previous"],
        summary(LAST_WEEK, [0, 0, 0], [0, 0, 0], None)
    );
}

// ------------------------------------------------------------------------------------------------
// 5 and 6. Links, and resolving a journey loop
// ------------------------------------------------------------------------------------------------

/// The loops of the onboarding scenario.
struct Onboarding {
    journey: String,
    /// Opened before the journey loop; linked when it opened.
    early: String,
    /// Opened before the journey loop, resolved by its CSM after the link.
    resolved: String,
    /// Opened before the journey loop; linked, closed later.
    done: String,
    /// Closed before the journey loop opened: never linked.
    closed: String,
    /// Same tag at another stage: never linked.
    elsewhere: String,
}

/// Five detractors saying onboarding is stuck (four at stage onboarding, one at adoption), one of
/// them closed; then passives from 36 more accounts: the 40th account at onboarding opens the
/// journey loop journey:onboarding:onboarding.stalled.
async fn onboarding_journey(app: &TestApp) -> Onboarding {
    let mut events = vec![
        enterprise("acct-early", "ana.lima"),
        enterprise("acct-resolved", "ben.okafor"),
        enterprise("acct-done", "chloe.martin"),
        enterprise("acct-closed", "ana.lima"),
        enterprise("acct-elsewhere", "ben.okafor"),
        enterprise("acct-late", "chloe.martin"),
        stalled("d-early", "acct-early", 3, 0),
        stalled("d-resolved", "acct-resolved", 0, 1),
        stalled("d-done", "acct-done", 5, 2),
        stalled("d-closed", "acct-closed", 2, 3),
        staged(
            commented(
                survey("d-elsewhere", "acct-elsewhere", "nps", 2, 4),
                STALLED,
            ),
            "adoption",
        ),
    ];
    app.ingest(&events).await;
    let closed = account_loop_id(app, "acct-closed").await;
    act(
        app,
        &closed,
        json!({"action": "close", "reason": "wont_fix", "actor": "ana.lima"}),
    )
    .await;
    assert!(app.loops("kind=journey").await.is_empty());
    events = (0..36)
        .map(|i| stalled(&format!("p-{i}"), &format!("acct-p{i:02}"), 8, 10 + i))
        .collect();
    app.ingest(&events).await;
    let journey = only_journey_loop(app).await;
    assert_eq!(journey["key"], "journey:onboarding:onboarding.stalled");
    assert_eq!(journey["trace"]["figures"]["current"]["accounts"], 40);
    Onboarding {
        journey: journey["id"].as_str().expect("id").to_owned(),
        early: account_loop_id(app, "acct-early").await,
        resolved: account_loop_id(app, "acct-resolved").await,
        done: account_loop_id(app, "acct-done").await,
        closed,
        elsewhere: account_loop_id(app, "acct-elsewhere").await,
    }
}

#[tokio::test]
async fn a_journey_loop_that_opens_links_the_open_account_loops_of_its_stage_and_tag() {
    let app = TestApp::spawn().await;
    let loops = onboarding_journey(&app).await;
    let journey = detail(&app, &loops.journey).await;
    assert_eq!(
        links(&journey, "account"),
        pairs(&[
            (&loops.early, "open"),
            (&loops.resolved, "open"),
            (&loops.done, "open"),
        ])
    );
    let account_ids: BTreeSet<&str> = journey["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|link| link["account_id"].as_str().expect("account_id"))
        .collect();
    assert_eq!(
        account_ids,
        BTreeSet::from(["acct-early", "acct-resolved", "acct-done"])
    );
    for id in [&loops.early, &loops.resolved, &loops.done] {
        let account_loop = detail(&app, id).await;
        assert_eq!(account_loop["stage"], "onboarding");
        assert_eq!(account_loop["tag"], "onboarding.stalled");
        assert_eq!(account_loop["journey_loop"], loops.journey.as_str());
        assert_eq!(
            links(&account_loop, "journey"),
            pairs(&[(&loops.journey, "open")])
        );
        assert_eq!(
            history(&account_loop).last().expect("history"),
            &("link".to_owned(), "sigloop".to_owned())
        );
    }
    for id in [&loops.closed, &loops.elsewhere] {
        let account_loop = detail(&app, id).await;
        assert_eq!(account_loop["journey_loop"], Value::Null, "{account_loop}");
        assert!(links(&account_loop, "journey").is_empty());
        assert!(!history(&account_loop)
            .iter()
            .any(|(action, _)| action == "link"));
    }
    assert_eq!(detail(&app, &loops.elsewhere).await["stage"], "adoption");
}

#[tokio::test]
async fn an_account_loop_that_opens_while_the_journey_loop_is_active_is_linked_on_arrival_once() {
    let app = TestApp::spawn().await;
    let loops = onboarding_journey(&app).await;
    app.ingest(&[stalled("d-late", "acct-late", 1, 100)]).await;
    let late = account_loop_id(&app, "acct-late").await;
    let late_loop = detail(&app, &late).await;
    assert_eq!(late_loop["journey_loop"], loops.journey.as_str());
    assert_eq!(
        links(&late_loop, "journey"),
        pairs(&[(&loops.journey, "open")])
    );
    assert_eq!(
        history(&late_loop),
        vec![
            ("open".to_owned(), "sigloop".to_owned()),
            ("link".to_owned(), "sigloop".to_owned()),
        ]
    );
    // Another detractor from an account already linked joins its loop: no second link.
    app.ingest(&[stalled("d-early-2", "acct-early", 2, 110)])
        .await;
    let early = detail(&app, &loops.early).await;
    assert_eq!(early["signal_count"], 2);
    let link_rows = history(&early)
        .iter()
        .filter(|(action, _)| action == "link")
        .count();
    assert_eq!(link_rows, 1, "{early}");
    let journey = detail(&app, &loops.journey).await;
    assert_eq!(
        links(&journey, "account"),
        pairs(&[
            (&loops.early, "open"),
            (&loops.resolved, "open"),
            (&loops.done, "open"),
            (&late, "open"),
        ])
    );
    assert_eq!(journey["links"].as_array().expect("links").len(), 4);
}

#[tokio::test]
async fn resolving_a_journey_loop_resolves_its_linked_account_loops_with_a_task_to_tell_the_customer(
) {
    let app = TestApp::spawn().await;
    let loops = onboarding_journey(&app).await;
    app.ingest(&[stalled("d-late", "acct-late", 1, 100)]).await;
    let late = account_loop_id(&app, "acct-late").await;
    act(
        &app,
        &loops.early,
        json!({"action": "acknowledge", "actor": "ana.lima"}),
    )
    .await;
    act(
        &app,
        &loops.resolved,
        json!({"action": "resolve", "actor": "ben.okafor"}),
    )
    .await;
    act(
        &app,
        &loops.done,
        json!({"action": "close", "reason": "wont_fix", "actor": "chloe.martin"}),
    )
    .await;

    let journey = act(
        &app,
        &loops.journey,
        json!({"action": "resolve", "actor": "maya.cohen", "note": "the setup wizard is fixed"}),
    )
    .await;
    // Resolved, then verifying (as every resolved loop), and so are the linked account loops.
    assert_eq!(journey["state"], "verifying");
    assert_eq!(
        links(&journey, "account"),
        pairs(&[
            (&loops.early, "verifying"),
            (&loops.resolved, "verifying"),
            (&loops.done, "closed"),
            (&late, "verifying"),
        ])
    );

    // (loop, owner, state before, state after journey_fixed): an account loop already verifying
    // stays so and still gets the task.
    for (id, owner, from_state, to_state) in [
        (&loops.early, "ana.lima", "acknowledged", "resolved"),
        (&late, "chloe.martin", "open", "resolved"),
        (&loops.resolved, "ben.okafor", "verifying", "verifying"),
    ] {
        let account_loop = detail(&app, id).await;
        assert_eq!(account_loop["state"], "verifying", "{account_loop}");
        assert_eq!(account_loop["owner"], owner);
        let rows = account_loop["history"].as_array().expect("history");
        let fixed = rows
            .iter()
            .position(|row| row["action"] == "journey_fixed")
            .unwrap_or_else(|| panic!("no journey_fixed row: {account_loop}"));
        let row = &rows[fixed];
        assert_eq!(row["actor"], "sigloop");
        assert_eq!(row["from_state"], from_state);
        assert_eq!(row["to_state"], to_state);
        if to_state == "resolved" {
            assert_eq!(rows[fixed + 1]["action"], "verify", "{account_loop}");
            assert_eq!(rows[fixed + 1]["to_state"], "verifying");
        }
        let tasks = account_loop["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), 1, "{account_loop}");
        assert_eq!(tasks[0]["kind"], "tell_customer");
        assert_eq!(tasks[0]["owner"], owner);
        assert_eq!(tasks[0]["journey_loop"], loops.journey.as_str());
    }
    for (id, state) in [
        (&loops.done, "closed"),
        (&loops.closed, "closed"),
        (&loops.elsewhere, "open"),
    ] {
        let account_loop = detail(&app, id).await;
        assert_eq!(account_loop["state"], state, "{account_loop}");
        assert_eq!(account_loop["tasks"], json!([]), "{account_loop}");
        assert!(!history(&account_loop)
            .iter()
            .any(|(action, _)| action == "journey_fixed"));
    }

    // A resolved journey loop is no longer active: a new account loop is not linked to it.
    app.ingest(&[stalled("d-after", "acct-after", 2, 300)])
        .await;
    let after = detail(&app, &account_loop_id(&app, "acct-after").await).await;
    assert_eq!(after["stage"], "onboarding");
    assert_eq!(after["journey_loop"], Value::Null, "{after}");
    assert!(links(&after, "journey").is_empty());
    assert_eq!(
        links(&detail(&app, &loops.journey).await, "account").len(),
        4
    );
}

#[tokio::test]
async fn journey_counts_fired_detectors_and_links_survive_restarts() {
    let app = TestApp::spawn().await;
    let mut events = vec![
        enterprise("acct-early", "ana.lima"),
        stalled("d-early", "acct-early", 3, 0),
    ];
    events.extend((0..38).map(|i| stalled(&format!("p-{i}"), &format!("acct-p{i:02}"), 8, 10 + i)));
    app.ingest(&events).await;
    assert!(app.loops("kind=journey").await.is_empty());

    // The 39 accounts of the week are rebuilt from storage: the 40th opens the journey loop.
    let (directory, db_path) = app.stop().await;
    let app = TestApp::spawn_on(directory, db_path, &[]).await;
    app.ingest(&[stalled("p-38", "acct-p38", 8, 60)]).await;
    let journey = only_journey_loop(&app).await;
    assert_eq!(journey["trace"]["figures"]["current"]["accounts"], 40);
    let journey_id = journey["id"].as_str().expect("id").to_owned();
    let early = account_loop_id(&app, "acct-early").await;
    assert_eq!(links(&journey, "account"), pairs(&[(&early, "open")]));

    // The detector fired this week, restarts included; the links are still known.
    let (directory, db_path) = app.stop().await;
    let app = TestApp::spawn_on(directory, db_path, &[]).await;
    app.ingest(&[stalled("p-39", "acct-p39", 8, 70)]).await;
    assert_eq!(only_journey_loop(&app).await["signal_count"], 1);
    assert_eq!(
        groups(&app, "group_by=stage,tag&kind=week").await,
        vec![group(
            json!({"stage": "onboarding", "tag": "onboarding.stalled"}),
            figures(41, 0, 41, [41, 0, 0], [0, 40, 1], [Some(-2.44), None, None]),
        )]
    );
    act(
        &app,
        &journey_id,
        json!({"action": "resolve", "actor": "maya.cohen"}),
    )
    .await;
    let early = detail(&app, &early).await;
    assert_eq!(early["state"], "verifying", "{early}");
    assert_eq!(early["tasks"][0]["kind"], "tell_customer");
    assert_eq!(early["tasks"][0]["journey_loop"], journey_id.as_str());
}

#[tokio::test]
async fn a_journey_loop_links_the_newest_generation_of_a_reopened_account_key_and_not_the_closed_one(
) {
    let app = TestApp::spawn().await;
    app.ingest(&[
        enterprise("acct-again", "ana.lima"),
        stalled("d-again", "acct-again", 2, 0),
    ])
    .await;
    let first = account_loop_id(&app, "acct-again").await;
    act(
        &app,
        &first,
        json!({"action": "close", "reason": "wont_fix", "actor": "ana.lima"}),
    )
    .await;
    app.ingest(&[stalled("d-again-2", "acct-again", 1, 5)])
        .await;
    let generations = app.loops("account_id=acct-again").await;
    assert_eq!(generations.len(), 2, "{generations:?}");
    let second = generations
        .iter()
        .find(|record| record["generation"] == 2)
        .expect("a second generation")["id"]
        .as_str()
        .expect("loop id")
        .to_owned();

    // The account loops are found again after a restart; the 40th account opens the journey loop.
    let (directory, db_path) = app.stop().await;
    let app = TestApp::spawn_on(directory, db_path, &[]).await;
    let events: Vec<Value> = (0..39)
        .map(|i| stalled(&format!("p-{i}"), &format!("acct-p{i:02}"), 8, 10 + i))
        .collect();
    app.ingest(&events).await;
    let journey = only_journey_loop(&app).await;
    assert_eq!(journey["trace"]["figures"]["current"]["accounts"], 40);
    assert_eq!(links(&journey, "account"), pairs(&[(&second, "open")]));
    assert_eq!(detail(&app, &first).await["journey_loop"], Value::Null);
    assert_eq!(
        detail(&app, &second).await["journey_loop"],
        journey["id"].as_str().expect("id")
    );
}

#[tokio::test]
async fn a_resolved_journey_loop_reopens_when_its_detector_fires_again_the_next_week() {
    let app = TestApp::spawn().await;
    let events: Vec<Value> = (0..40)
        .map(|i| stalled(&format!("a-{i}"), &format!("acct-{i:02}"), 8, i))
        .collect();
    app.ingest(&events).await;
    let journey_id = only_journey_loop(&app).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    act(
        &app,
        &journey_id,
        json!({"action": "resolve", "actor": "maya.cohen"}),
    )
    .await;
    let events: Vec<Value> = (0..40)
        .map(|i| stalled(&format!("b-{i}"), &format!("acct-{i:02}"), 8, WEEK + i))
        .collect();
    app.ingest(&events).await;
    let journey = only_journey_loop(&app).await;
    assert_eq!(journey["id"], journey_id.as_str());
    assert_eq!(journey["state"], "reopened");
    assert_eq!(journey["recurrence"], 1);
    assert_eq!(journey["signal_count"], 2);
    assert_eq!(
        history(&journey).last().expect("history"),
        &("reopen".to_owned(), "sigloop".to_owned())
    );
}

// ------------------------------------------------------------------------------------------------
// 7. The account view and explain
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_account_view_shows_its_signals_by_journey_stage() {
    let app = TestApp::spawn().await;
    app.ingest(&[
        account("acct-j", "mid-market", Some("dev.patel")),
        // Stage onboarding, from the event.
        stalled("j-1", "acct-j", 2, 0),
        // Stage adoption, from the account: a low CSAT and a detractor, both uncategorized.
        survey("j-2", "acct-j", "csat", 1, 60),
        survey("j-3", "acct-j", "nps", 3, 120),
        // A passive raises no signal.
        survey("j-4", "acct-j", "nps", 8, 180),
    ])
    .await;
    let (status, view) = app.get("/v1/accounts/acct-j").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["journey"],
        json!([
            {
                "stage": "onboarding",
                "signals": 1,
                "tags": {"onboarding.stalled": 1},
                "first_signal_at": shown(0),
                "last_signal_at": shown(0),
            },
            {
                "stage": "adoption",
                "signals": 2,
                "tags": {"sentiment.detractor": 1, "sentiment.low-csat": 1},
                "first_signal_at": shown(60),
                "last_signal_at": shown(120),
            },
        ])
    );
    let recent: Vec<(&str, &str)> = view["recent_signals"]
        .as_array()
        .expect("recent signals")
        .iter()
        .map(|signal| {
            (
                signal["detector"].as_str().expect("detector"),
                signal["stage"].as_str().expect("stage"),
            )
        })
        .collect();
    assert_eq!(
        recent,
        vec![
            ("detractor", "adoption"),
            ("low-csat", "adoption"),
            ("detractor", "onboarding"),
        ]
    );
}

#[tokio::test]
async fn explain_shows_the_journey_bucket_an_event_would_feed_and_stores_nothing() {
    let app = TestApp::spawn().await;
    app.ingest(&[account("acct-e", "enterprise", Some("ana.lima"))])
        .await;
    assert!(
        groups(&app, "").await.is_empty(),
        "account.upserted feeds no journey"
    );
    let (status, explanation) = app
        .post_json("/v1/explain", &account("acct-e", "enterprise", None))
        .await;
    assert_eq!(status, 200, "{explanation}");
    assert_eq!(explanation["journey"], Value::Null, "{explanation}");
    let wednesday = 2 * DAY;
    let windows = json!([
        {"window": "day", "start": "2026-03-04T00:00:00.000Z"},
        {"window": "week", "start": THIS_WEEK},
    ]);
    for (event, stage, stage_from, tag, touchpoint) in [
        (
            at_touchpoint(
                staged(
                    commented(survey("x-1", "acct-e", "nps", 2, wednesday), STALLED),
                    "onboarding",
                ),
                "in-app",
            ),
            "onboarding",
            "event",
            "onboarding.stalled",
            "in-app",
        ),
        (
            ticket("x-2", "acct-e", wednesday, INVOICE, "normal"),
            "adoption",
            "account",
            "billing.invoice-error",
            "email",
        ),
        (
            survey("x-3", "acct-stranger", "ces", 6, wednesday),
            "unknown",
            "unknown",
            "uncategorized",
            "unknown",
        ),
    ] {
        let (status, explanation) = app.post_json("/v1/explain", &event).await;
        assert_eq!(status, 200, "{explanation}");
        assert_eq!(
            explanation["journey"],
            json!({
                "stage": stage,
                "stage_from": stage_from,
                "tag": tag,
                "touchpoint": touchpoint,
                "windows": windows,
            }),
            "{explanation}"
        );
        assert_eq!(explanation["tags"]["primary"], tag);
    }
    assert!(groups(&app, "").await.is_empty(), "explain stored nothing");
    assert!(app.loops("").await.is_empty());
}

// ------------------------------------------------------------------------------------------------
// 8. Bad parameters
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_journey_parameters_answer_400_invalid_parameter() {
    let app = TestApp::spawn().await;
    app.ingest(&fixture()).await;
    for query in [
        "group_by=colour",
        "group_by=stage,colour",
        "group_by=stage,stage",
        "group_by=",
        "kind=month",
        "kind=hour",
        "kind=",
        "from=yesterday",
        "to=2026-13-01",
        "from=03/02/2026",
        "from=2026-03-09&to=2026-03-02",
        "from=2026-03-03&to=2026-03-03",
        "colour=blue",
    ] {
        app.assert_invalid_parameter(&format!("/v1/journeys?{query}"))
            .await;
    }
}

/// An account loop keeps the stage it opened at (its `stage` field), and belongs to the journey loop of
/// that stage and its tag. A later signal of the same account at another stage joins the same loop
/// (its key has no stage), which must neither link it to the other stage's journey loop nor take it
/// away from the one it belongs to.
#[tokio::test]
async fn an_account_loop_stays_with_the_journey_loop_of_its_own_stage_when_a_later_signal_has_another_stage(
) {
    let app = TestApp::spawn().await;
    // The account loop opens at stage onboarding; 39 more accounts there open journey loop A.
    let mut events = vec![
        enterprise("acct-x", "ana.lima"),
        stalled("d-x", "acct-x", 2, 0),
    ];
    events.extend((0..39).map(|i| stalled(&format!("a-{i}"), &format!("acct-a{i:02}"), 8, 10 + i)));
    app.ingest(&events).await;
    let journey_a = only_journey_loop(&app).await;
    let journey_a_id = journey_a["id"].as_str().expect("id").to_owned();
    let account_loop = account_loop_id(&app, "acct-x").await;
    assert_eq!(
        links(&journey_a, "account"),
        pairs(&[(&account_loop, "open")])
    );

    // Forty accounts at stage adoption open journey loop B on the same tag; it gathers nothing.
    let events: Vec<Value> = (0..40)
        .map(|i| {
            staged(
                commented(
                    survey(
                        &format!("b-{i}"),
                        &format!("acct-b{i:02}"),
                        "nps",
                        8,
                        100 + i,
                    ),
                    STALLED,
                ),
                "adoption",
            )
        })
        .collect();
    app.ingest(&events).await;
    let journey_b_id = app
        .loops("kind=journey")
        .await
        .iter()
        .map(|row| row["id"].as_str().expect("id").to_owned())
        .find(|id| *id != journey_a_id)
        .expect("journey loop B");
    assert!(links(&detail(&app, &journey_b_id).await, "account").is_empty());

    // The account's next detractor, at stage adoption, joins its loop.
    app.ingest(&[staged(
        commented(survey("d-x-2", "acct-x", "nps", 1, 200), STALLED),
        "adoption",
    )])
    .await;
    let joined = detail(&app, &account_loop).await;
    assert_eq!(joined["signal_count"], 2);
    assert_eq!(joined["stage"], "onboarding");

    // Resolving A resolves every account loop A lists as linked and not closed.
    let journey_a = act(
        &app,
        &journey_a_id,
        json!({"action": "resolve", "actor": "maya.cohen"}),
    )
    .await;
    let listed = links(&journey_a, "account");
    assert!(
        listed.iter().any(|(id, _)| *id == account_loop),
        "{journey_a}"
    );
    let fixed = detail(&app, &account_loop).await;
    assert_eq!(
        (
            fixed["state"].clone(),
            fixed["tasks"].as_array().map(Vec::len)
        ),
        (json!("verifying"), Some(1)),
        "journey loop {journey_a_id} lists {account_loop} as linked, yet resolving it left the \
         account loop alone: {fixed}"
    );
    assert_eq!(fixed["journey_loop"], journey_a_id.as_str());
    assert_eq!(
        links(&fixed, "journey"),
        pairs(&[(&journey_a_id, "verifying")]),
        "linked to the journey loop of its own stage only"
    );
}
