//! The HTTP API against the real application on port 0 with a fresh SQLite database per test.

mod common;

use common::{account, event, nps, ticket, TestApp};
use serde_json::{json, Value};

fn all_event_types() -> Vec<Value> {
    vec![
        account("acct-1", "enterprise", Some("ana.lima")),
        event(
            "ticket.opened",
            "e-1",
            1,
            json!({"ticket_id": "T-1", "account_id": "acct-1", "subject": "Invoice shows the wrong amount", "body": "We were charged twice", "priority": "normal", "channel": "email", "requester": "pat@acme.test", "product_area": "billing", "journey_stage": "billing"}),
        ),
        event(
            "ticket.updated",
            "e-2",
            2,
            json!({"ticket_id": "T-1", "account_id": "acct-1", "status": "pending", "priority": "high", "comment": "Any update?"}),
        ),
        event(
            "ticket.solved",
            "e-3",
            3,
            json!({"ticket_id": "T-1", "account_id": "acct-1", "resolution": "Credit note issued"}),
        ),
        event(
            "ticket.reopened",
            "e-4",
            4,
            json!({"ticket_id": "T-1", "account_id": "acct-1"}),
        ),
        event(
            "usage.metric",
            "e-5",
            5,
            json!({"account_id": "acct-1", "metric": "active_users", "value": 42.5, "user_id": "u-1"}),
        ),
        event(
            "usage.milestone",
            "e-6",
            6,
            json!({"account_id": "acct-1", "milestone": "onboarding.first_integration"}),
        ),
        event(
            "survey.responded",
            "e-7",
            7,
            json!({"response_id": "R-1", "account_id": "acct-1", "kind": "csat", "score": 4, "comment": "fine", "journey_stage": "support", "touchpoint": "email"}),
        ),
    ]
}

#[tokio::test]
async fn every_event_type_is_accepted_and_processed() {
    let app = TestApp::spawn().await;
    let events = all_event_types();
    let body = app.ingest(&events).await;
    assert_eq!(body["accepted"], 8, "{body}");
    assert_eq!(body["duplicates"], 0);
    assert_eq!(body["rejected"], json!([]));
    let (_, metrics) = app.get_text("/metrics").await;
    for event_type in [
        "ticket.opened",
        "ticket.updated",
        "ticket.solved",
        "ticket.reopened",
        "usage.metric",
        "usage.milestone",
        "survey.responded",
        "account.upserted",
    ] {
        let line = format!("sigloop_events_in_total{{transport=\"http\",type=\"{event_type}\"}} 1");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    let (status, account) = app.get("/v1/accounts/acct-1").await;
    assert_eq!(status, 200);
    assert_eq!(account["profile"]["csm"], "ana.lima");
}

#[tokio::test]
async fn every_rejection_code_is_reported_per_event_with_a_dead_letter() {
    let app = TestApp::spawn().await;
    let valid = nps("ok-1", "acct-1", 9, 0, None);
    let long_text = "x".repeat(64 * 1024 + 1);
    let cases: Vec<(&str, String)> = vec![
        ("invalid_json", "{not json".to_owned()),
        (
            "unknown_type",
            event(
                "ticket.deleted",
                "bad-1",
                0,
                json!({"ticket_id": "T", "account_id": "a"}),
            )
            .to_string(),
        ),
        (
            "missing_field",
            event("ticket.opened", "bad-2", 0, json!({"account_id": "a"})).to_string(),
        ),
        (
            "invalid_field",
            event(
                "ticket.opened",
                "bad-3",
                0,
                json!({"ticket_id": "T", "account_id": "a", "priority": "whenever"}),
            )
            .to_string(),
        ),
        ("out_of_range", nps("bad-4", "a", 11, 0, None).to_string()),
        (
            "too_large",
            event(
                "ticket.opened",
                "bad-5",
                0,
                json!({"ticket_id": "T", "account_id": "a", "body": long_text}),
            )
            .to_string(),
        ),
        ("invalid_time", {
            let mut value = nps("bad-6", "a", 5, 0, None);
            value["time"] = json!("yesterday at noon");
            value.to_string()
        }),
    ];
    let mut body = valid.to_string();
    body.push('\n');
    for (_, line) in &cases {
        body.push_str(line);
        body.push('\n');
    }
    let (status, answer) = app
        .post_raw("/v1/events?wait=true", "application/x-ndjson", body)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1, "one valid line is kept: {answer}");
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), cases.len(), "{answer}");
    for (position, (code, _)) in cases.iter().enumerate() {
        assert_eq!(rejected[position]["index"], position + 1, "{answer}");
        assert_eq!(rejected[position]["code"], *code, "{answer}");
        assert!(!rejected[position]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(rejected[1]["id"], "bad-1");
    let (_, dead_letters) = app.get("/v1/dead-letters").await;
    let mut codes: Vec<String> = dead_letters["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["code"].as_str().unwrap().to_owned())
        .collect();
    codes.sort();
    let mut expected: Vec<String> = cases.iter().map(|(code, _)| (*code).to_owned()).collect();
    expected.sort();
    assert_eq!(codes, expected);
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics.contains("sigloop_events_rejected_total{code=\"out_of_range\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_request_where_every_event_is_rejected_answers_400_with_the_rejections() {
    let app = TestApp::spawn().await;
    let (status, answer) = app
        .post_json("/v1/events", &nps("bad", "a", 42, 0, None))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["rejected"][0]["code"], "out_of_range");
    assert_eq!(answer["error"]["code"], "out_of_range");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_invalid_json_and_kept_as_a_dead_letter() {
    let app = TestApp::spawn().await;
    let (status, answer) = app
        .post_raw("/v1/events", "application/json", "[{\"broken\"")
        .await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "invalid_json");
    let (_, dead_letters) = app.get("/v1/dead-letters").await;
    assert_eq!(dead_letters["dead_letters"][0]["code"], "invalid_json");
}

#[tokio::test]
async fn requests_over_the_event_or_byte_limits_are_too_large() {
    let app = TestApp::spawn_with(&[
        ("SIGLOOP__SERVER__MAX_EVENTS_PER_REQUEST", "3"),
        ("SIGLOOP__SERVER__MAX_BODY_BYTES", "4096"),
    ])
    .await;
    let events: Vec<Value> = (0..4)
        .map(|index| nps(&format!("n-{index}"), "a", 9, 0, None))
        .collect();
    let (status, answer) = app.post_json("/v1/events", &json!(events)).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "too_large");
    let big = format!(
        "[{}]",
        [nps("x", "a", 9, 0, Some(&"y".repeat(5000))).to_string()].join(",")
    );
    let (status, answer) = app.post_raw("/v1/events", "application/json", big).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "too_large");
}

#[tokio::test]
async fn a_duplicate_event_is_accepted_counted_and_ignored() {
    let app = TestApp::spawn().await;
    let detractor = nps("dup-1", "acct-9", 2, 0, Some("The invoice was wrong again"));
    app.ingest(std::slice::from_ref(&detractor)).await;
    let again = app.ingest(&[detractor.clone(), detractor]).await;
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(again["duplicates"], 2, "{again}");
    let loops = app.loops("account_id=acct-9").await;
    assert_eq!(loops.len(), 1);
    assert_eq!(
        loops[0]["signal_count"], 1,
        "the duplicate added no evidence"
    );
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics.contains("sigloop_events_duplicate_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_detractor_at_an_account_becomes_a_loop_in_its_csms_queue_with_the_trace() {
    let app = TestApp::spawn().await;
    app.ingest(&[
        account("acct-ent", "enterprise", Some("ana.lima")),
        nps(
            "det-1",
            "acct-ent",
            3,
            10,
            Some("Onboarding took forever and nobody helped"),
        ),
    ])
    .await;
    let loops = app.loops("queue=cs-enterprise").await;
    assert_eq!(loops.len(), 1, "{loops:?}");
    let summary = &loops[0];
    assert_eq!(summary["owner"], "ana.lima");
    assert_eq!(summary["state"], "open");
    assert_eq!(summary["kind"], "account");
    assert!(summary["key"]
        .as_str()
        .unwrap()
        .starts_with("account:acct-ent:"));
    // High severity, raised one level for the enterprise tier.
    assert_eq!(summary["priority"], "P1");
    let (status, detail) = app
        .get(&format!("/v1/loops/{}", summary["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    let trace = &detail["trace"];
    assert_eq!(trace["detector"], "detractor");
    assert_eq!(
        trace["route"]["path"],
        json!(["root", "enterprise", "enterprise-critical"])
    );
    assert_eq!(trace["route"]["owner"], "ana.lima");
    assert!(trace["route"]["owner_resolution"]
        .as_str()
        .unwrap()
        .contains("CSM"));
    assert_eq!(trace["sla"]["policy"], "urgent");
    assert_eq!(trace["event"]["reference"]["response_id"], "r-det-1");
    assert_eq!(trace["config_version"].as_str().unwrap().len(), 16);
    assert_eq!(detail["evidence"][0]["reference"]["response_id"], "r-det-1");
    assert_eq!(detail["history"][0]["action"], "open");
    assert_eq!(detail["history"][0]["to_state"], "open");
    let (_, queues) = app.get("/v1/queues").await;
    let enterprise = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|queue| queue["name"] == "cs-enterprise")
        .unwrap()
        .clone();
    assert_eq!(enterprise["counts"]["open"], 1);
    assert_eq!(enterprise["team"], "cs-enterprise");
}

#[tokio::test]
async fn repeat_tickets_on_one_tag_join_one_loop() {
    let app = TestApp::spawn().await;
    let subject = "Our invoice has the wrong amount";
    app.ingest(&[
        account("acct-mm", "mid-market", Some("dev.patel")),
        ticket("t-1", "acct-mm", 0, subject, "normal"),
        ticket("t-2", "acct-mm", 60, subject, "normal"),
        ticket("t-3", "acct-mm", 120, subject, "normal"),
        ticket("t-4", "acct-mm", 180, subject, "normal"),
    ])
    .await;
    let loops = app.loops("account_id=acct-mm").await;
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(loops[0]["queue"], "cs-mid-market");
    assert_eq!(loops[0]["owner"], "dev.patel");
    // Tickets 3 and 4 reach the threshold of three: one opens the loop, the next joins it.
    assert_eq!(loops[0]["signal_count"], 2);
    let (_, detail) = app
        .get(&format!("/v1/loops/{}", loops[0]["id"].as_str().unwrap()))
        .await;
    let outcomes: Vec<&str> = detail["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["open", "join"]);
    assert_eq!(detail["evidence"][1]["reference"]["ticket_id"], "T-t-4");
}

#[tokio::test]
async fn an_illegal_transition_answers_409_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.ingest(&[
        account("acct-x", "enterprise", Some("ana.lima")),
        nps("d", "acct-x", 1, 0, None),
    ])
    .await;
    let id = app.loops("account_id=acct-x").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .action(
            &id,
            json!({"action": "close", "reason": "wont_fix", "actor": "ana.lima"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "closed");
    let (status, body) = app
        .action(&id, json!({"action": "acknowledge", "actor": "ana.lima"}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "illegal_transition");
    let (_, detail) = app.get(&format!("/v1/loops/{id}")).await;
    assert_eq!(detail["state"], "closed");
    assert_eq!(detail["history"].as_array().unwrap().len(), 2, "{detail}");
}

#[tokio::test]
async fn operator_actions_walk_a_loop_through_its_states_with_history() {
    let app = TestApp::spawn().await;
    app.ingest(&[
        account("acct-w", "enterprise", Some("ana.lima")),
        nps("d", "acct-w", 1, 0, None),
    ])
    .await;
    let id = app.loops("account_id=acct-w").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (action, state) in [
        ("acknowledge", "acknowledged"),
        ("start", "in_progress"),
        // Resolved, then at once verifying for the SLA policy's window.
        ("resolve", "verifying"),
    ] {
        let (status, body) = app
            .action(
                &id,
                json!({"action": action, "actor": "ana.lima", "note": "on it"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], state);
    }
    let (status, body) = app
        .action(
            &id,
            json!({"action": "assign", "actor": "lead", "owner": "ben.okafor"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["owner"], "ben.okafor");
    let (status, body) = app
        .action(
            &id,
            json!({"action": "comment", "actor": "ben.okafor", "note": "called the customer"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let actions: Vec<(&str, &str)> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["action"].as_str().unwrap(),
                row["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("open", "sigloop"),
            ("acknowledge", "ana.lima"),
            ("start", "ana.lima"),
            ("resolve", "ana.lima"),
            ("verify", "sigloop"),
            ("assign", "lead"),
            ("comment", "ben.okafor"),
        ]
    );
    let (status, body) = app
        .action(&id, json!({"action": "launch", "actor": "x"}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .action(&id, json!({"action": "close", "actor": "x"}))
        .await;
    assert_eq!(status, 400, "a close without a reason is refused: {body}");
    let (status, _) = app
        .action("lp_missing", json!({"action": "start", "actor": "x"}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_recurrence_inside_the_reopen_window_reopens_the_loop() {
    let app = TestApp::spawn().await;
    app.ingest(&[
        account("acct-r", "enterprise", Some("ana.lima")),
        nps("d-1", "acct-r", 2, 0, None),
    ])
    .await;
    let id = app.loops("account_id=acct-r").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .action(&id, json!({"action": "resolve", "actor": "ana.lima"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .action(
            &id,
            json!({"action": "close", "reason": "verified", "actor": "ana.lima"}),
        )
        .await;
    assert_eq!(status, 200);
    app.ingest(&[nps("d-2", "acct-r", 3, 30, None)]).await;
    let loops = app.loops("account_id=acct-r").await;
    assert_eq!(loops.len(), 1, "no new generation: {loops:?}");
    assert_eq!(loops[0]["id"], id);
    assert_eq!(loops[0]["state"], "reopened");
    assert_eq!(loops[0]["recurrence"], 1);
    let (_, detail) = app.get(&format!("/v1/loops/{id}")).await;
    let last = detail["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "reopen");
    assert_eq!(last["from_state"], "closed");
}

#[tokio::test]
async fn a_signal_after_a_loop_closed_as_duplicate_opens_the_next_generation_linked_to_it() {
    let app = TestApp::spawn().await;
    app.ingest(&[
        account("acct-g", "enterprise", Some("ana.lima")),
        nps("d-1", "acct-g", 2, 0, None),
    ])
    .await;
    let first = app.loops("account_id=acct-g").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .action(
            &first,
            json!({"action": "close", "reason": "duplicate", "actor": "ana.lima"}),
        )
        .await;
    assert_eq!(status, 200);
    app.ingest(&[nps("d-2", "acct-g", 2, 30, None)]).await;
    let loops = app.loops("account_id=acct-g").await;
    assert_eq!(loops.len(), 2);
    let second = loops.iter().find(|row| row["generation"] == 2).unwrap();
    assert_eq!(second["predecessor"], first);
    let (_, detail) = app
        .get(&format!("/v1/loops/{}", second["id"].as_str().unwrap()))
        .await;
    assert_eq!(detail["links"][0]["relation"], "predecessor");
    assert_eq!(detail["links"][0]["state"], "closed");
    // One live loop per key: the older generation cannot come back beside its successor.
    let (status, body) = app
        .action(&first, json!({"action": "reopen", "actor": "ana.lima"}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("newer generation"),
        "{body}"
    );
    let (status, body) = app
        .action(
            &first,
            json!({"action": "comment", "actor": "ana.lima", "note": "context"}),
        )
        .await;
    assert_eq!(status, 409, "a superseded generation is read-only: {body}");
    let (status, body) = app.get(&format!("/v1/loops/{first}")).await;
    assert_eq!(status, 200, "it is still shown: {body}");
}

#[tokio::test]
async fn an_unroutable_signal_lands_in_the_unowned_queue() {
    let app = TestApp::spawn().await;
    // No account.upserted: the account is not in the directory, so no tier route matches.
    app.ingest(&[nps("d-1", "acct-stranger", 0, 0, Some("Nothing works"))])
        .await;
    let loops = app.loops("queue=unowned").await;
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(loops[0]["owner"], "cs-ops-duty");
    let (_, detail) = app
        .get(&format!("/v1/loops/{}", loops[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(detail["trace"]["route"]["path"], json!(["root"]));
    assert!(detail["trace"]["route"]["owner_resolution"]
        .as_str()
        .unwrap()
        .contains("unowned"));
    let (_, queues) = app.get("/v1/queues").await;
    let unowned = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|queue| queue["name"] == "unowned")
        .unwrap()
        .clone();
    assert_eq!(unowned["counts"]["open"], 1);
    assert_eq!(unowned["team"], "cs-ops");
}

#[tokio::test]
async fn loops_filter_by_state_kind_and_tag_and_page_with_a_cursor() {
    let app = TestApp::spawn().await;
    let mut events = vec![];
    for index in 0..5 {
        let account_id = format!("acct-p{index}");
        events.push(account(&account_id, "enterprise", Some("ana.lima")));
        events.push(nps(&format!("d-{index}"), &account_id, 1, index, None));
    }
    app.ingest(&events).await;
    let (_, first) = app.get("/v1/loops?kind=account&limit=2").await;
    assert_eq!(first["loops"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get(&format!("/v1/loops?kind=account&limit=2&cursor={cursor}"))
        .await;
    let (_, third) = app
        .get(&format!(
            "/v1/loops?kind=account&limit=2&cursor={}",
            second["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(third["loops"].as_array().unwrap().len(), 1);
    assert_eq!(third["next_cursor"], Value::Null);
    let mut ids: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|page| {
            page["loops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["id"].as_str().unwrap().to_owned())
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert_eq!(app.loops("tag=sentiment").await.len(), 5);
    assert_eq!(app.loops("tag=sentiment.detractor").await.len(), 5);
    assert_eq!(
        app.loops("tag=sentim").await.len(),
        0,
        "tag filters stop at dots"
    );
    assert_eq!(app.loops("state=closed").await.len(), 0);
    assert_eq!(app.loops("kind=journey").await.len(), 0);
    let (status, body) = app.get("/v1/loops?state=sleeping").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn the_account_view_shows_profile_open_loops_and_recent_signals() {
    let app = TestApp::spawn().await;
    app.ingest(&[
        account("acct-v", "mid-market", Some("dev.patel")),
        nps("d-1", "acct-v", 4, 0, None),
    ])
    .await;
    let (status, view) = app.get("/v1/accounts/acct-v").await;
    assert_eq!(status, 200);
    assert_eq!(view["profile"]["tier"], "mid-market");
    assert_eq!(view["open_loops"].as_array().unwrap().len(), 1);
    assert_eq!(view["recent_signals"][0]["detector"], "detractor");
    let (status, _) = app.get("/v1/accounts/nobody").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn explain_shows_the_decision_and_stores_nothing() {
    let app = TestApp::spawn().await;
    app.ingest(&[account("acct-e", "enterprise", Some("ana.lima"))])
        .await;
    let (status, explanation) = app
        .post_json(
            "/v1/explain",
            &ticket(
                "x-1",
                "acct-e",
                0,
                "We are cancelling our subscription at renewal",
                "urgent",
            ),
        )
        .await;
    assert_eq!(status, 200, "{explanation}");
    let signals = explanation["signals"].as_array().unwrap();
    assert!(!signals.is_empty(), "{explanation}");
    assert_eq!(signals[0]["outcome"], "open");
    assert!(signals[0]["route"]["path"].as_array().unwrap().len() >= 2);
    assert!(
        explanation["tags"]["primary"]
            .as_str()
            .unwrap()
            .starts_with("churn"),
        "{explanation}"
    );
    assert!(
        app.loops("account_id=acct-e").await.is_empty(),
        "explain stored nothing"
    );
    let (status, body) = app
        .post_json("/v1/explain", &json!({"specversion": "1.0"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "missing_field");
}

#[tokio::test]
async fn health_readiness_metrics_and_the_openapi_document_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.0, 200);
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["storage"], "ok");
    let (status, metrics) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "sigloop_consumer_lag",
        "sigloop_processed_offset",
        "sigloop_batch_commit_seconds",
        "sigloop_events_duplicate_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    let (status, openapi) = app.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    let (status, body) = app.get("/v1/nowhere").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn wait_true_answers_processed_false_when_the_timeout_passes_first() {
    // Two hundred batches of one event, each its own fsynced commit, cannot finish in zero seconds.
    let app = TestApp::spawn_with(&[("SIGLOOP__PROCESSOR__BATCH_SIZE", "1")]).await;
    let events: Vec<Value> = (0..200)
        .map(|index| nps(&format!("w-{index}"), "acct-w", 2, index, None))
        .collect();
    let (status, body) = app
        .post_json("/v1/events?wait=true&timeout=0", &json!(events))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 200);
    assert_eq!(body["processed"], false, "{body}");
}
