//! Journeys across a fleet: two instances in one consumer group each see only their partitions'
//! events, yet the journey detectors judge the figures of all of them (read back from the shared
//! PostgreSQL), a journey loop opens once, and its links and its fix reach every instance's account
//! loops. Through the real boundaries: a Kafka-protocol broker, PostgreSQL and HTTP.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::{account, event, fresh_postgres_url, wait_for_partitions, TestApp, TestKafka};
use serde_json::{json, Value};

/// Tagged `onboarding.stalled`.
const STALLED: &str = "We are stuck in onboarding";

/// A detractor at journey stage `onboarding` saying onboarding is stuck: an account loop of its own,
/// and one more account in the week's `onboarding x onboarding.stalled` figures.
fn stalled_detractor(account_id: &str, minutes: i64) -> Value {
    event(
        "survey.responded",
        &format!("d-{account_id}"),
        minutes,
        json!({
            "response_id": format!("r-{account_id}"),
            "account_id": account_id,
            "kind": "nps",
            "score": 2,
            "comment": STALLED,
            "journey_stage": "onboarding",
        }),
    )
}

/// Polls `probe` until it answers `Some` (or 30 s pass, which fails the test with `what`).
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn detail(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/loops/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_journey_threshold_crossed_only_by_the_whole_fleet_opens_one_loop_whose_links_and_fix_reach_every_instance(
) {
    let kafka = TestKafka::new(4);
    let database = fresh_postgres_url().await;
    let settings = [
        ("SIGLOOP__CLOCK__MODE", "event_time"),
        ("SIGLOOP__JOURNEYS__FLEET_EVALUATION_MILLIS", "100"),
    ];
    let first = TestApp::spawn_distributed_with(&kafka, &database, &settings).await;
    let second = TestApp::spawn_distributed_with(&kafka, &database, &settings).await;
    wait_for_partitions(&[&first, &second], 2).await;

    let accounts: Vec<String> = (0..40).map(|index| format!("acct-{index:02}")).collect();
    let directory: Vec<Value> = accounts
        .iter()
        .map(|id| account(id, "enterprise", Some("ana.lima")))
        .collect();
    first.ingest(&directory).await;
    // Thirty-nine accounts say onboarding is stuck: one short of the shipped affected-accounts
    // threshold (40 in a week), whoever counts them.
    let detractors: Vec<Value> = accounts[..39]
        .iter()
        .zip(0..)
        .map(|(id, minute)| stalled_detractor(id, 10 + minute))
        .collect();
    second.ingest(&detractors).await;
    let account_loops = first.loops("kind=account&limit=100").await;
    assert_eq!(account_loops.len(), 39, "{account_loops:?}");
    // Both instances opened some of them: neither saw all thirty-nine accounts itself.
    let opened = [
        first.counter_total("sigloop_loops_total").await,
        second.counter_total("sigloop_loops_total").await,
    ];
    assert!(
        opened.iter().all(|count| *count > 0.0 && *count < 39.0),
        "the accounts are split over both instances: {opened:?}"
    );
    // Several fleet evaluations later, still below the threshold: no journey loop.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(first.loops("kind=journey").await.is_empty());

    // The fortieth account crosses it for the fleet: one journey loop, opened once.
    first.ingest(&[stalled_detractor(&accounts[39], 60)]).await;
    let journey = eventually("the journey loop", || async {
        let loops = second.loops("kind=journey").await;
        loops.first().cloned()
    })
    .await;
    let journey_id = journey["id"].as_str().expect("loop id").to_owned();
    // Several evaluations by both instances later, it is still the only one, with one signal.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let journeys = first.loops("kind=journey").await;
    assert_eq!(journeys.len(), 1, "{journeys:?}");
    let journey = detail(&first, &journey_id).await;
    assert_eq!(journey["key"], "journey:onboarding:onboarding.stalled");
    assert_eq!(journey["queue"], "cx-journeys");
    assert_eq!(journey["signal_count"], 1, "{journey}");
    let figures = &journey["trace"]["figures"];
    assert_eq!(figures["current"]["accounts"], 40, "{figures}");
    assert_eq!(figures["current"]["nps_responses"], 40, "{figures}");
    assert_eq!(figures["current"]["detractors"], 40, "{figures}");
    assert_eq!(figures["threshold"], "at least 40 accounts");
    assert_eq!(figures["previous"]["accounts"], 0, "{figures}");

    // Every account loop is linked to it, whichever instance owns the account.
    let linked = eventually("forty links", || async {
        let journey = detail(&second, &journey_id).await;
        let links = journey["links"].as_array().expect("links").clone();
        (links.len() == 40).then_some(links)
    })
    .await;
    assert!(linked.iter().all(|link| link["relation"] == "account"));
    for record in &account_loops {
        let account_loop = detail(&first, record["id"].as_str().unwrap()).await;
        assert_eq!(
            account_loop["journey_loop"],
            journey_id.as_str(),
            "{account_loop}"
        );
    }

    // The fix ships: every linked account loop, on both instances, is resolved with one task to
    // tell the customer.
    let (status, answer) = second
        .action(
            &journey_id,
            json!({"action": "resolve", "actor": "maya.cohen", "note": "the setup wizard is fixed"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "verifying", "{answer}");
    eventually("every account loop to be verifying", || async {
        let loops = first.loops("kind=account&limit=100").await;
        let verifying = loops
            .iter()
            .filter(|record| record["state"] == "verifying")
            .count();
        (verifying == 40).then_some(())
    })
    .await;
    // More evaluations see the journey loop still resolved: the fix reaches each loop once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for record in first.loops("kind=account&limit=100").await {
        let account_loop = detail(&second, record["id"].as_str().unwrap()).await;
        let tasks = account_loop["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), 1, "{account_loop}");
        assert_eq!(tasks[0]["kind"], "tell_customer");
        assert_eq!(tasks[0]["journey_loop"], journey_id.as_str());
        let fixes = account_loop["history"]
            .as_array()
            .expect("history")
            .iter()
            .filter(|row| row["action"] == "journey_fixed")
            .count();
        assert_eq!(fixes, 1, "{account_loop}");
    }
    assert_eq!(
        first
            .counter_total("sigloop_batch_commit_failures_total")
            .await
            + second
                .counter_total("sigloop_batch_commit_failures_total")
                .await,
        0.0,
        "no instance wrote a loop another owns"
    );
    first.stop().await;
    second.stop().await;
}
