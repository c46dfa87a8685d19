//! Time over HTTP, against the real application on the event-time clock: SLA deadlines (with business
//! hours), breaches and escalation, verification of resolved loops, and pending deadlines across
//! restarts. The test drives time by the events it sends (the clock is the largest event time
//! processed), never by sleeping.
//!
//! Times: `time(0)` is Monday 2 March 2026, 09:00 UTC. The embedded routes give enterprise detractors
//! the `urgent` policy (acknowledge within 1h, resolve within 1 day, escalate to `cs-escalations`,
//! verify for 14 days) and mid-market ones the `standard` policy (8h / 5 days of business time,
//! Monday to Friday 09:00-17:00 UTC, priority raised on breach).

mod common;

use common::{account, event, nps, time, TestApp};
use serde_json::{json, Value};

const HOUR: i64 = 60;
const DAY: i64 = 24 * HOUR;

const EVENT_TIME: [(&str, &str); 1] = [("SIGLOOP__CLOCK__MODE", "event_time")];

/// `time(minutes)` as the API prints times (milliseconds).
fn at(minutes: i64) -> String {
    time(minutes).replace('Z', ".000Z")
}

/// An event that only moves the clock: a usage metric of an account nobody watches.
fn tick(id: &str, minutes: i64) -> Value {
    event(
        "usage.metric",
        id,
        minutes,
        json!({"account_id": "acct-clock", "metric": "logins", "value": 1}),
    )
}

async fn only_loop(app: &TestApp, account_id: &str) -> Value {
    let loops = app.loops(&format!("account_id={account_id}")).await;
    assert_eq!(loops.len(), 1, "{loops:?}");
    let id = loops[0]["id"].as_str().expect("id");
    let (status, detail) = app.get(&format!("/v1/loops/{id}")).await;
    assert_eq!(status, 200, "{detail}");
    detail
}

async fn reload(app: &TestApp, record: &Value) -> Value {
    let (status, detail) = app
        .get(&format!("/v1/loops/{}", record["id"].as_str().expect("id")))
        .await;
    assert_eq!(status, 200, "{detail}");
    detail
}

fn rows(detail: &Value, action: &str) -> Vec<Value> {
    detail["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|row| row["action"] == action)
        .cloned()
        .collect()
}

async fn act(app: &TestApp, record: &Value, body: Value) -> Value {
    let (status, answer) = app.action(record["id"].as_str().expect("id"), body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn breached_on(app: &TestApp, queue: &str) -> Value {
    let (status, body) = app.get("/v1/queues").await;
    assert_eq!(status, 200, "{body}");
    body["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|summary| summary["name"] == queue)
        .unwrap_or_else(|| panic!("no queue {queue}: {body}"))["breached"]
        .clone()
}

#[tokio::test]
async fn an_sla_breach_fires_exactly_at_its_deadline_and_escalates_the_loop() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    app.ingest(&[
        account("acct-e", "enterprise", Some("ana.lima")),
        nps("d-1", "acct-e", 2, 0, None),
    ])
    .await;
    let opened = only_loop(&app, "acct-e").await;
    assert_eq!(opened["sla_policy"], "urgent");
    assert_eq!(opened["ack_due"], at(HOUR));
    assert_eq!(opened["resolve_due"], at(DAY));
    assert_eq!(opened["queue"], "cs-enterprise");

    // One millisecond before the deadline nothing happens.
    let mut before = tick("t-1", 0);
    before["time"] = json!("2026-03-02T09:59:59.999Z");
    app.ingest(&[before]).await;
    let waiting = reload(&app, &opened).await;
    assert_eq!(waiting["breached"], false, "{waiting}");
    assert_eq!(waiting["queue"], "cs-enterprise");

    app.ingest(&[tick("t-2", HOUR)]).await;
    let breached = reload(&app, &opened).await;
    assert_eq!(breached["breached"], true, "{breached}");
    assert_eq!(breached["ack_breached_at"], at(HOUR));
    assert_eq!(breached["queue"], "cs-escalations");
    assert_eq!(breached["state"], "open", "a breach changes no state");
    let breaches = rows(&breached, "breach");
    assert_eq!(breaches.len(), 1, "{breached}");
    assert_eq!(breaches[0]["at"], at(HOUR));
    assert_eq!(breaches[0]["actor"], "sigloop");
    let reason = breaches[0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("acknowledge deadline")
            && reason.contains("cs-enterprise to cs-escalations"),
        "{reason}"
    );
    assert_eq!(breached_on(&app, "cs-escalations").await, 1);
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics.contains("sigloop_sla_breaches_total{queue=\"cs-enterprise\"} 1"),
        "{metrics}"
    );

    // The resolve deadline passes a day after the opening: a second breach, already escalated.
    app.ingest(&[tick("t-3", DAY)]).await;
    let late = reload(&app, &opened).await;
    assert_eq!(late["resolve_breached_at"], at(DAY));
    let breaches = rows(&late, "breach");
    assert_eq!(breaches.len(), 2, "{late}");
    assert!(breaches[1]["reason"]
        .as_str()
        .expect("reason")
        .contains("resolve deadline"));
}

#[tokio::test]
async fn business_hours_skip_the_weekend_and_a_breach_raises_the_priority() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    // Friday 6 March, 16:00: one business hour left that day, seven more from Monday 09:00.
    let friday_four_pm = 4 * DAY + 7 * HOUR;
    app.ingest(&[
        account("acct-m", "mid-market", Some("dev.patel")),
        nps("d-1", "acct-m", 3, friday_four_pm, None),
    ])
    .await;
    let opened = only_loop(&app, "acct-m").await;
    assert_eq!(opened["sla_policy"], "standard");
    let monday_four_pm = 7 * DAY + 7 * HOUR;
    assert_eq!(opened["ack_due"], at(monday_four_pm));
    assert_eq!(opened["priority"], "P2");
    assert_eq!(
        opened["trace"]["sla"]["business_hours"],
        "mon,tue,wed,thu,fri 09:00-17:00 UTC"
    );

    // The whole weekend passes: no breach.
    app.ingest(&[tick("t-1", monday_four_pm - 1)]).await;
    assert_eq!(reload(&app, &opened).await["breached"], false);

    app.ingest(&[tick("t-2", monday_four_pm)]).await;
    let breached = reload(&app, &opened).await;
    assert_eq!(breached["breached"], true, "{breached}");
    assert_eq!(breached["priority"], "P1");
    assert_eq!(
        breached["queue"], "cs-mid-market",
        "standard raises, it does not move"
    );
    assert!(rows(&breached, "breach")[0]["reason"]
        .as_str()
        .expect("reason")
        .contains("priority P2 -> P1"));
}

#[tokio::test]
async fn an_acknowledged_loop_does_not_breach_its_acknowledge_deadline() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    app.ingest(&[
        account("acct-a", "enterprise", Some("ana.lima")),
        nps("d-1", "acct-a", 2, 0, None),
    ])
    .await;
    let opened = only_loop(&app, "acct-a").await;
    act(
        &app,
        &opened,
        json!({"action": "acknowledge", "actor": "ana.lima"}),
    )
    .await;
    app.ingest(&[tick("t-1", 2 * HOUR)]).await;
    let acknowledged = reload(&app, &opened).await;
    assert_eq!(acknowledged["breached"], false, "{acknowledged}");
    assert!(rows(&acknowledged, "breach").is_empty());
}

#[tokio::test]
async fn verification_closes_a_quiet_loop_as_verified_at_the_end_of_its_window() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    app.ingest(&[
        account("acct-v", "enterprise", Some("ana.lima")),
        nps("d-1", "acct-v", 2, 0, None),
        tick("t-0", 30),
    ])
    .await;
    let opened = only_loop(&app, "acct-v").await;
    let resolved = act(
        &app,
        &opened,
        json!({"action": "resolve", "actor": "ana.lima", "note": "fixed the export"}),
    )
    .await;
    // Resolved at the clock's reading (minute 30), then verifying for the urgent policy's 14 days.
    assert_eq!(resolved["state"], "verifying", "{resolved}");
    assert_eq!(resolved["resolved_at"], at(30));
    let verify_due = 30 + 14 * DAY;
    assert_eq!(resolved["verify_due"], at(verify_due));
    let verify = rows(&resolved, "verify");
    assert_eq!(verify.len(), 1);
    assert_eq!(verify[0]["from_state"], "resolved");
    assert_eq!(verify[0]["to_state"], "verifying");

    app.ingest(&[tick("t-1", verify_due - 1)]).await;
    assert_eq!(reload(&app, &opened).await["state"], "verifying");

    app.ingest(&[tick("t-2", verify_due)]).await;
    let closed = reload(&app, &opened).await;
    assert_eq!(closed["state"], "closed", "{closed}");
    assert_eq!(closed["close_reason"], "verified");
    assert_eq!(closed["closed_at"], at(verify_due));
    assert_eq!(closed["verify_due"], Value::Null);
    let verified = rows(&closed, "verified");
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0]["actor"], "sigloop");
    assert_eq!(verified[0]["at"], at(verify_due));
}

#[tokio::test]
async fn a_signal_during_verification_reopens_the_loop_with_the_signal_and_a_recurrence() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    app.ingest(&[
        account("acct-r", "enterprise", Some("ana.lima")),
        nps("d-1", "acct-r", 2, 0, None),
    ])
    .await;
    let opened = only_loop(&app, "acct-r").await;
    act(
        &app,
        &opened,
        json!({"action": "resolve", "actor": "ana.lima"}),
    )
    .await;
    app.ingest(&[nps("d-2", "acct-r", 1, 2 * DAY, None)]).await;
    let reopened = reload(&app, &opened).await;
    assert_eq!(reopened["state"], "reopened", "{reopened}");
    assert_eq!(reopened["recurrence"], 1);
    assert_eq!(reopened["verify_due"], Value::Null);
    assert_eq!(reopened["signal_count"], 2);
    let evidence = reopened["evidence"].as_array().expect("evidence");
    assert_eq!(evidence.last().expect("evidence")["event_id"], "d-2");
    assert_eq!(evidence.last().expect("evidence")["outcome"], "reopen");
    let reopen = rows(&reopened, "reopen");
    assert_eq!(reopen[0]["from_state"], "verifying");

    // The old verification deadline passes: nothing closes the reopened loop.
    app.ingest(&[tick("t-1", 15 * DAY)]).await;
    let later = reload(&app, &opened).await;
    assert_eq!(later["state"], "reopened", "{later}");
    assert!(rows(&later, "verified").is_empty());
}

#[tokio::test]
async fn pending_deadlines_survive_restarts_and_fire_exactly_once() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    app.ingest(&[
        account("acct-p", "enterprise", Some("ana.lima")),
        nps("d-1", "acct-p", 2, 0, None),
    ])
    .await;
    let opened = only_loop(&app, "acct-p").await;

    // Restarted before the deadline: the deadline is rebuilt from the stored loop and still fires.
    let (directory, db_path) = app.stop().await;
    let app = TestApp::spawn_on(directory, db_path, &EVENT_TIME).await;
    app.ingest(&[tick("t-1", HOUR + 1)]).await;
    let breached = reload(&app, &opened).await;
    assert_eq!(rows(&breached, "breach").len(), 1, "{breached}");

    // Restarted after it fired: it does not fire again.
    let (directory, db_path) = app.stop().await;
    let app = TestApp::spawn_on(directory, db_path, &EVENT_TIME).await;
    app.ingest(&[tick("t-2", 2 * HOUR)]).await;
    let later = reload(&app, &opened).await;
    assert_eq!(rows(&later, "breach").len(), 1, "{later}");
    assert_eq!(later["history"].as_array().expect("history").len(), 2);
}

// ------------------------------------------------------------------------------------------------
// Detectors that need time
// ------------------------------------------------------------------------------------------------

const WEEK: i64 = 7 * DAY;

/// A mid-market account that started at `minutes` (its onboarding milestone is due 14 days later).
fn started(account_id: &str, minutes: i64) -> Value {
    let mut upsert = account(account_id, "mid-market", Some("dev.patel"));
    upsert["data"]["started_at"] = json!(time(minutes));
    upsert["id"] = json!(format!("account-{account_id}-{minutes}"));
    upsert["time"] = json!(time(minutes));
    upsert
}

fn milestone(id: &str, account_id: &str, name: &str, minutes: i64) -> Value {
    event(
        "usage.milestone",
        id,
        minutes,
        json!({"account_id": account_id, "milestone": name}),
    )
}

fn metric(id: &str, account_id: &str, name: &str, value: f64, minutes: i64) -> Value {
    event(
        "usage.metric",
        id,
        minutes,
        json!({"account_id": account_id, "metric": name, "value": value}),
    )
}

/// The loops of `account_id` raised by `detector`.
async fn raised_by(app: &TestApp, account_id: &str, detector: &str) -> Vec<Value> {
    let mut found = Vec::new();
    for summary in app.loops(&format!("account_id={account_id}")).await {
        let detail = reload(app, &summary).await;
        if detail["trace"]["detector"] == detector {
            found.push(detail);
        }
    }
    found
}

#[tokio::test]
async fn a_missing_onboarding_milestone_opens_a_loop_when_its_absence_timer_fires() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    app.ingest(&[started("acct-late", 0)]).await;
    app.ingest(&[tick("t-1", 14 * DAY - 1)]).await;
    assert!(raised_by(&app, "acct-late", "integration-missing")
        .await
        .is_empty());

    app.ingest(&[tick("t-2", 14 * DAY)]).await;
    let raised = raised_by(&app, "acct-late", "integration-missing").await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    let opened = &raised[0];
    assert_eq!(opened["key"], "account:acct-late:onboarding.stalled");
    assert_eq!(
        opened["opened_at"],
        at(14 * DAY),
        "as of the timer, not the tick"
    );
    let evidence = &opened["evidence"][0];
    assert_eq!(evidence["event_source"], "sigloop");
    assert_eq!(evidence["event_type"], "milestone_missing");
    assert_eq!(
        evidence["reference"]["timer"],
        "milestone:integration-missing:acct-late"
    );
    let reason = evidence["reason"].as_str().expect("reason");
    assert!(
        reason.contains("onboarding.first_integration not reached 14 days after"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_milestone_reached_in_time_cancels_its_absence_timer() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    app.ingest(&[
        started("acct-ok", 0),
        milestone("m-1", "acct-ok", "onboarding.first_login", DAY),
        milestone("m-2", "acct-ok", "onboarding.first_integration", 3 * DAY),
    ])
    .await;
    app.ingest(&[tick("t-1", 20 * DAY)]).await;
    assert!(raised_by(&app, "acct-ok", "integration-missing")
        .await
        .is_empty());
}

#[tokio::test]
async fn usage_down_against_its_trailing_baseline_opens_a_loop_when_the_week_closes() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    // Four weeks of 20 active users a week, then 12 (40% down: the threshold) and 13 for another
    // account (35% down: not enough).
    let mut events = Vec::new();
    for week in 0..4 {
        events.push(metric(
            &format!("u-{week}"),
            "acct-u",
            "active_users",
            20.0,
            week * WEEK,
        ));
        events.push(metric(
            &format!("v-{week}"),
            "acct-v",
            "active_users",
            20.0,
            week * WEEK,
        ));
    }
    events.push(metric("u-4", "acct-u", "active_users", 12.0, 4 * WEEK));
    events.push(metric("v-4", "acct-v", "active_users", 13.0, 4 * WEEK));
    app.ingest(&events).await;
    assert!(
        raised_by(&app, "acct-u", "usage-drop").await.is_empty(),
        "the week is open"
    );

    // Monday of week 5, 09:00: week 4 closed at 00:00.
    app.ingest(&[tick("t-1", 5 * WEEK)]).await;
    let raised = raised_by(&app, "acct-u", "usage-drop").await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["key"], "account:acct-u:adoption.usage-drop");
    let reason = raised[0]["evidence"][0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("active_users in the week of 2026-03-30")
            && reason.contains("12 is down 40.0% against the mean of the 4 weeks before (20)"),
        "{reason}"
    );
    assert_eq!(
        raised[0]["opened_at"], "2026-04-06T00:00:00.000Z",
        "the week's close"
    );
    assert!(raised_by(&app, "acct-v", "usage-drop").await.is_empty());
}

#[tokio::test]
async fn a_silent_week_counts_as_zero_usage_against_the_baseline() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    let events: Vec<Value> = (0..4)
        .map(|week| {
            metric(
                &format!("u-{week}"),
                "acct-s",
                "active_users",
                30.0,
                week * WEEK,
            )
        })
        .collect();
    app.ingest(&events).await;
    // Nothing in week 4; week 5 opens.
    app.ingest(&[tick("t-1", 5 * WEEK)]).await;
    let raised = raised_by(&app, "acct-s", "usage-drop").await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert!(raised[0]["evidence"][0]["reason"]
        .as_str()
        .expect("reason")
        .contains("0 is down 100.0%"));
}

#[tokio::test]
async fn an_error_spike_against_the_daily_baseline_opens_a_loop() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    let mut events: Vec<Value> = (0..7)
        .map(|day| metric(&format!("e-{day}"), "acct-x", "api_errors", 10.0, day * DAY))
        .collect();
    events.push(metric("e-7", "acct-x", "api_errors", 30.0, 7 * DAY));
    events.push(metric("f-0", "acct-y", "api_errors", 29.0, 7 * DAY));
    app.ingest(&events).await;
    app.ingest(&[tick("t-1", 8 * DAY)]).await;
    let raised = raised_by(&app, "acct-x", "error-spike").await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["key"], "account:acct-x:integrations.api-errors");
    assert!(raised[0]["evidence"][0]["reason"]
        .as_str()
        .expect("reason")
        .contains("30 is up 200.0% against the mean of the 7 days before (10)"));
    // acct-y has no seven days of history: no baseline, no judgement.
    assert!(raised_by(&app, "acct-y", "error-spike").await.is_empty());
}

#[tokio::test]
async fn an_account_with_no_activity_for_three_weeks_opens_a_loop_and_an_active_one_does_not() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    app.ingest(&[
        metric("q-0", "acct-quiet", "logins", 1.0, 0),
        metric("b-0", "acct-busy", "logins", 1.0, 0),
        metric("b-1", "acct-busy", "logins", 1.0, 10 * DAY),
    ])
    .await;
    // Monday 2 March was the last active day: 21 whole days without activity end on 24 March 00:00.
    app.ingest(&[tick("t-1", 22 * DAY - 9 * HOUR - 1)]).await;
    assert!(raised_by(&app, "acct-quiet", "gone-quiet").await.is_empty());
    app.ingest(&[tick("t-2", 22 * DAY)]).await;
    let raised = raised_by(&app, "acct-quiet", "gone-quiet").await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["opened_at"], "2026-03-24T00:00:00.000Z");
    assert!(raised[0]["evidence"][0]["reason"]
        .as_str()
        .expect("reason")
        .contains("no activity for 21 days (last event 2026-03-02T09:00:00.000Z)"));
    assert!(raised_by(&app, "acct-busy", "gone-quiet").await.is_empty());
}

#[tokio::test]
async fn an_absence_timer_survives_a_restart_and_fires_once() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    app.ingest(&[started("acct-rs", 0)]).await;
    let (directory, db_path) = app.stop().await;
    let app = TestApp::spawn_on(directory, db_path, &EVENT_TIME).await;
    app.ingest(&[tick("t-1", 15 * DAY)]).await;
    assert_eq!(
        raised_by(&app, "acct-rs", "integration-missing")
            .await
            .len(),
        1
    );
    let (directory, db_path) = app.stop().await;
    let app = TestApp::spawn_on(directory, db_path, &EVENT_TIME).await;
    app.ingest(&[tick("t-2", 16 * DAY)]).await;
    let raised = raised_by(&app, "acct-rs", "integration-missing").await;
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0]["signal_count"], 1, "the timer fired once");
}

fn csat(id: &str, account_id: &str, score: u8, minutes: i64) -> Value {
    event(
        "survey.responded",
        id,
        minutes,
        json!({"response_id": format!("r-{id}"), "account_id": account_id, "kind": "csat", "score": score}),
    )
}

#[tokio::test]
async fn a_policy_that_wants_the_customers_word_verifies_only_after_a_good_enough_survey() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    // SMB accounts get the low-touch policy: verified after a quiet week and a CSAT of 4 or 5.
    app.ingest(&[
        account("acct-smb", "smb", None),
        nps("d-1", "acct-smb", 2, 0, None),
    ])
    .await;
    let opened = only_loop(&app, "acct-smb").await;
    assert_eq!(opened["sla_policy"], "low-touch");
    assert_eq!(
        act(
            &app,
            &opened,
            json!({"action": "resolve", "actor": "hugo.silva"})
        )
        .await["state"],
        "verifying"
    );

    // The quiet week passes with no survey: still verifying, waiting for one.
    app.ingest(&[tick("t-1", 7 * DAY)]).await;
    let waiting = reload(&app, &opened).await;
    assert_eq!(waiting["state"], "verifying", "{waiting}");
    assert_eq!(waiting["verify_due"], Value::Null);
    let rows = rows(&waiting, "verify");
    assert!(rows.last().expect("a verify row")["reason"]
        .as_str()
        .expect("reason")
        .contains("without a csat survey of at least 4 yet"));

    // A CSAT of 3 is not enough; a 4 closes it as verified, as of the answer.
    app.ingest(&[csat("c-1", "acct-smb", 3, 8 * DAY)]).await;
    assert_eq!(reload(&app, &opened).await["state"], "verifying");
    app.ingest(&[csat("c-2", "acct-smb", 4, 9 * DAY)]).await;
    let closed = reload(&app, &opened).await;
    assert_eq!(closed["state"], "closed", "{closed}");
    assert_eq!(closed["close_reason"], "verified");
    assert_eq!(closed["closed_at"], at(9 * DAY));
    assert_eq!(closed["verify_confirmed_at"], at(9 * DAY));
}

#[tokio::test]
async fn a_good_survey_during_the_window_verifies_the_loop_when_the_window_ends() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    app.ingest(&[
        account("acct-smb2", "smb", None),
        nps("d-1", "acct-smb2", 2, 0, None),
    ])
    .await;
    let opened = only_loop(&app, "acct-smb2").await;
    act(
        &app,
        &opened,
        json!({"action": "resolve", "actor": "hugo.silva"}),
    )
    .await;
    app.ingest(&[csat("c-1", "acct-smb2", 5, 2 * DAY)]).await;
    let confirmed = reload(&app, &opened).await;
    assert_eq!(confirmed["state"], "verifying");
    assert_eq!(confirmed["verify_confirmed_at"], at(2 * DAY));

    app.ingest(&[tick("t-1", 7 * DAY)]).await;
    let closed = reload(&app, &opened).await;
    assert_eq!(closed["state"], "closed", "{closed}");
    assert_eq!(closed["close_reason"], "verified");
    assert_eq!(closed["closed_at"], at(7 * DAY));
}

#[tokio::test]
async fn a_usage_drop_loop_is_verified_only_once_usage_is_back_at_its_baseline() {
    let app = TestApp::spawn_with(&EVENT_TIME).await;
    let mut events: Vec<Value> = (0..4)
        .map(|week| {
            metric(
                &format!("u-{week}"),
                "acct-u",
                "active_users",
                20.0,
                week * WEEK,
            )
        })
        .collect();
    events.push(metric("u-4", "acct-u", "active_users", 12.0, 4 * WEEK));
    app.ingest(&events).await;
    app.ingest(&[tick("t-1", 5 * WEEK)]).await;
    let raised = raised_by(&app, "acct-u", "usage-drop").await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    let resolved = act(
        &app,
        &raised[0],
        json!({"action": "resolve", "actor": "dev.patel", "note": "re-trained the team"}),
    )
    .await;
    assert_eq!(resolved["state"], "verifying");

    // Week 5 stays low (12 against a baseline of 18): the quiet window ends unconfirmed.
    app.ingest(&[metric(
        "u-5",
        "acct-u",
        "active_users",
        12.0,
        5 * WEEK + HOUR,
    )])
    .await;
    app.ingest(&[tick("t-2", 6 * WEEK + HOUR)]).await;
    let waiting = reload(&app, &raised[0]).await;
    assert_eq!(waiting["state"], "verifying", "{waiting}");
    assert!(
        rows(&waiting, "verify").last().expect("a verify row")["reason"]
            .as_str()
            .expect("reason")
            .contains("back at its baseline yet")
    );

    // Week 6 is back at 20 (baseline 16): verified when the week closes.
    app.ingest(&[metric(
        "u-6",
        "acct-u",
        "active_users",
        20.0,
        6 * WEEK + 2 * HOUR,
    )])
    .await;
    app.ingest(&[tick("t-3", 7 * WEEK)]).await;
    let closed = reload(&app, &raised[0]).await;
    assert_eq!(closed["state"], "closed", "{closed}");
    assert_eq!(closed["close_reason"], "verified");
    assert_eq!(
        closed["closed_at"], "2026-04-20T00:00:00.000Z",
        "the recovered week's end"
    );
}
