//! The distributed mode through its real boundaries: a Kafka-protocol broker (librdkafka's mock
//! cluster, in process, over TCP; or the broker process of `SIGLOOP_TEST_KAFKA_BROKERS`, see
//! `common::TestKafka`), a real PostgreSQL (a fresh schema per test), and the application spoken to
//! over HTTP. Events reach the processor only through the consumer group; offsets live in
//! PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{
    account, event, fresh_postgres_url, nps, ticket, wait_for_partitions, TestApp, TestKafka,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

/// A message read back: its key, its value (JSON, or the raw text as a JSON string) and its headers.
type ReadMessage = (Option<String>, Value, Vec<(String, String)>);

/// Every message of `topic` (a name for [`TestKafka::topic`]) from the beginning, read until `count`
/// have arrived (or 20 s pass).
fn read_topic(kafka: &TestKafka, topic: &str, count: usize) -> Vec<ReadMessage> {
    let consumer: BaseConsumer = kafka
        .consumer_config()
        .set(
            "group.id",
            kafka.group(&format!("test-reader-{}", rand::random::<u64>())),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("the reader is created");
    consumer
        .subscribe(&[&kafka.topic(topic)])
        .expect("the reader subscribes");
    let started = Instant::now();
    let mut messages = Vec::new();
    while messages.len() < count && started.elapsed() < Duration::from_secs(20) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let key = message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned());
            let value = message
                .payload()
                .map(|payload| {
                    serde_json::from_slice(payload).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(payload).into_owned())
                    })
                })
                .unwrap_or(Value::Null);
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|header| {
                            (
                                header.key.to_owned(),
                                header
                                    .value
                                    .map(|value| String::from_utf8_lossy(value).into_owned())
                                    .unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            messages.push((key, value, headers));
        }
    }
    messages
}

async fn produce_raw(
    kafka: &TestKafka,
    topic: &str,
    key: &str,
    value: &[u8],
    headers: &[(&str, &str)],
) {
    let producer: FutureProducer = kafka
        .producer_config()
        .create()
        .expect("the producer is created");
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(*value),
        });
    }
    producer
        .send(
            FutureRecord::to(&kafka.topic(topic))
                .key(key)
                .payload(value)
                .headers(owned),
            Duration::from_secs(10),
        )
        .await
        .expect("the broker takes the message");
}

/// Polls `GET /v1/loops?query` until `expected` loops are listed (or 20 s pass).
async fn wait_for_loops(app: &TestApp, query: &str, expected: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let loops = app.loops(query).await;
        if loops.len() >= expected || started.elapsed() > Duration::from_secs(20) {
            return loops;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_in_the_distributed_mode_go_through_kafka_and_become_loops_in_postgresql() {
    let kafka = TestKafka::new(4);
    let app = TestApp::spawn_distributed(&kafka, &fresh_postgres_url().await).await;
    // Across topics Kafka keeps no order, so the directory entry goes first and is waited for.
    let body = app
        .ingest(&[account("acct-ent", "enterprise", Some("ana.lima"))])
        .await;
    assert_eq!(body["accepted"], 1, "{body}");
    app.ingest(&[nps(
        "det-1",
        "acct-ent",
        3,
        10,
        Some("Onboarding took forever and nobody helped"),
    )])
    .await;
    let loops = app.loops("queue=cs-enterprise").await;
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(loops[0]["owner"], "ana.lima");
    assert_eq!(loops[0]["signal_count"], 1);
    let (_, detail) = app
        .get(&format!("/v1/loops/{}", loops[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(detail["evidence"][0]["reference"]["response_id"], "r-det-1");
    // The event itself went through the broker: it is on the surveys topic, keyed by its account.
    let surveys = read_topic(&kafka, "surveys", 1);
    assert_eq!(surveys.len(), 1);
    assert_eq!(surveys[0].0.as_deref(), Some("acct-ent"));
    assert_eq!(surveys[0].1["id"], "det-1");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_resumes_from_the_offsets_stored_in_postgresql_and_counts_nothing_twice(
) {
    let kafka = TestKafka::new(4);
    let database = fresh_postgres_url().await;
    let subject = "Our invoice has the wrong amount";
    let app = TestApp::spawn_distributed(&kafka, &database).await;
    app.ingest(&[account("acct-mm", "mid-market", Some("dev.patel"))])
        .await;
    app.ingest(&[
        ticket("t-1", "acct-mm", 0, subject, "normal"),
        ticket("t-2", "acct-mm", 60, subject, "normal"),
        ticket("t-3", "acct-mm", 120, subject, "normal"),
    ])
    .await;
    app.stop().await;
    // While no instance runs, more events arrive on the topic.
    for (id, minutes) in [("t-4", 180), ("t-5", 240)] {
        let value = ticket(id, "acct-mm", minutes, subject, "normal").to_string();
        produce_raw(&kafka, "tickets", "acct-mm", value.as_bytes(), &[]).await;
    }
    let app = TestApp::spawn_distributed(&kafka, &database).await;
    let started = Instant::now();
    let loops = loop {
        let loops = app.loops("account_id=acct-mm").await;
        if loops
            .first()
            .is_some_and(|record| record["signal_count"] == 3)
            || started.elapsed() > Duration::from_secs(20)
        {
            break loops;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(loops.len(), 1, "{loops:?}");
    // Tickets 3, 4 and 5 are signals (the threshold is three): each counted once across the
    // restart, none re-read from the start of the topic.
    assert_eq!(loops[0]["signal_count"], 3, "{loops:?}");
    let (_, detail) = app
        .get(&format!("/v1/loops/{}", loops[0]["id"].as_str().unwrap()))
        .await;
    let tickets: Vec<&str> = detail["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["reference"]["ticket_id"].as_str().unwrap())
        .collect();
    assert_eq!(tickets, vec!["T-t-3", "T-t-4", "T-t-5"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sigloop_cannot_read_becomes_a_dead_letter_in_the_table_and_on_the_dead_letter_topic(
) {
    let kafka = TestKafka::new(2);
    let app = TestApp::spawn_distributed(&kafka, &fresh_postgres_url().await).await;
    produce_raw(&kafka, "tickets", "acct-1", b"{not json", &[]).await;
    let started = Instant::now();
    let dead = loop {
        let (status, body) = app.get("/v1/dead-letters").await;
        assert_eq!(status, 200, "{body}");
        let rows = body["dead_letters"].as_array().cloned().unwrap_or_default();
        if !rows.is_empty() || started.elapsed() > Duration::from_secs(20) {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["code"], "invalid_json");
    assert_eq!(dead[0]["payload"], "{not json");
    let out = read_topic(&kafka, "dead_letters", 1);
    assert_eq!(out.len(), 1);
    let (_, value, headers) = &out[0];
    assert_eq!(value, &Value::String("{not json".to_owned()));
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(
        header("sigloop-error-code").as_deref(),
        Some("invalid_json")
    );
    assert!(!header("sigloop-error-message")
        .unwrap_or_default()
        .is_empty());
    assert_eq!(
        header("sigloop-source-topic").as_deref(),
        Some(kafka.topic("tickets").as_str())
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_mode_cloudevent_is_read_like_a_structured_one() {
    let kafka = TestKafka::new(2);
    let app = TestApp::spawn_distributed(&kafka, &fresh_postgres_url().await).await;
    app.ingest(&[account("acct-bin", "enterprise", Some("ana.lima"))])
        .await;
    let data = json!({"response_id": "r-bin", "account_id": "acct-bin", "kind": "nps", "score": 2});
    produce_raw(
        &kafka,
        "surveys",
        "acct-bin",
        data.to_string().as_bytes(),
        &[
            ("ce_specversion", "1.0"),
            ("ce_id", "bin-1"),
            ("ce_source", "survey-tool"),
            ("ce_type", "survey.responded"),
            ("ce_time", "2026-03-02T09:10:00Z"),
            ("content-type", "application/json"),
        ],
    )
    .await;
    let loops = wait_for_loops(&app, "account_id=acct-bin", 1).await;
    assert_eq!(loops.len(), 1, "{loops:?}");
    let (_, detail) = app
        .get(&format!("/v1/loops/{}", loops[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(detail["evidence"][0]["event_id"], "bin-1");
    assert_eq!(detail["evidence"][0]["event_source"], "survey-tool");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_events_are_published_on_the_loops_topic_in_order_and_actions_travel_through_kafka() {
    let kafka = TestKafka::new(2);
    let app = TestApp::spawn_distributed(&kafka, &fresh_postgres_url().await).await;
    app.ingest(&[account("acct-ev", "enterprise", Some("ana.lima"))])
        .await;
    app.ingest(&[nps("det-ev", "acct-ev", 1, 10, None)]).await;
    let loops = app.loops("account_id=acct-ev").await;
    assert_eq!(loops.len(), 1, "{loops:?}");
    let id = loops[0]["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .action(&id, json!({"action": "acknowledge", "actor": "ana.lima"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "acknowledged", "{body}");
    // The action itself went through the actions topic, keyed by the loop's account.
    let actions = read_topic(&kafka, "actions", 1);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].0.as_deref(), Some("acct-ev"));
    assert_eq!(actions[0].1["loop_id"], id.as_str());
    let events = read_topic(&kafka, "loops", 2);
    let names: Vec<&str> = events
        .iter()
        .map(|(_, value, _)| value["event"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, vec!["opened", "state_changed"], "{events:?}");
    let key = loops[0]["key"].as_str().unwrap();
    for (message_key, value, headers) in &events {
        assert_eq!(message_key.as_deref(), Some(key));
        assert_eq!(value["loop_id"], id.as_str());
        assert!(value["id"].as_i64().is_some(), "{value}");
        assert!(headers.iter().any(|(name, _)| name == "sigloop-outbox-id"));
    }
    assert_eq!(events[1].1["detail"]["to_state"], "acknowledged");
    assert_eq!(events[1].1["detail"]["actor"], "ana.lima");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_events_rejects_bad_events_per_index_and_produces_only_the_valid_ones() {
    let kafka = TestKafka::new(2);
    let app = TestApp::spawn_distributed(&kafka, &fresh_postgres_url().await).await;
    let bad = event("ticket.opened", "bad-1", 0, json!({"account_id": "acct-1"}));
    let good = ticket("good-1", "acct-1", 0, "Login broken", "normal");
    let (status, body) = app
        .post_json("/v1/events?wait=true", &json!([bad, good]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["processed"], true, "{body}");
    assert_eq!(body["rejected"][0]["index"], 0, "{body}");
    assert_eq!(body["rejected"][0]["code"], "missing_field", "{body}");
    let tickets = read_topic(&kafka, "tickets", 2);
    assert_eq!(
        tickets.len(),
        1,
        "only the valid event is on the topic: {tickets:?}"
    );
    assert_eq!(tickets[0].1["id"], "good-1");
    let (_, dead) = app.get("/v1/dead-letters").await;
    assert_eq!(dead["dead_letters"][0]["origin"], "http", "{dead}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_in_one_group_share_the_partitions_and_each_deadline_fires_once_even_after_a_rebalance(
) {
    let kafka = TestKafka::new(4);
    let database = fresh_postgres_url().await;
    let clock = [("SIGLOOP__CLOCK__MODE", "event_time")];
    let first = TestApp::spawn_distributed_with(&kafka, &database, &clock).await;
    let second = TestApp::spawn_distributed_with(&kafka, &database, &clock).await;
    wait_for_partitions(&[&first, &second], 2).await;
    let accounts: Vec<String> = (0..16).map(|index| format!("acct-{index:02}")).collect();
    let directory: Vec<Value> = accounts
        .iter()
        .map(|id| account(id, "enterprise", Some("ana.lima")))
        .collect();
    first.ingest(&directory).await;
    // A detractor at each account: an urgent loop, to be acknowledged within the hour.
    let detractors: Vec<Value> = accounts
        .iter()
        .map(|id| nps(&format!("det-{id}"), id, 2, 10, Some("Nobody answers us")))
        .collect();
    second.ingest(&detractors).await;
    let loops = first.loops("kind=account&limit=100").await;
    assert_eq!(loops.len(), 16, "{loops:?}");
    let opened_by_second = second.counter_total("sigloop_loops_total").await;
    // A member leaves and another joins: the partitions move, and every instance reloads the
    // whole committed state, other instances' loops included.
    second.stop().await;
    let second = TestApp::spawn_distributed_with(&kafka, &database, &clock).await;
    // Three hours later (on the event-time clock of each account's owner), every acknowledge
    // deadline has passed: each breach must be recorded once, by the one owner.
    let later: Vec<Value> = accounts
        .iter()
        .map(|id| {
            event(
                "usage.metric",
                &format!("late-{id}"),
                190,
                json!({"account_id": id, "metric": "logins", "value": 1}),
            )
        })
        .collect();
    first.ingest(&later).await;
    for record in &loops {
        let id = record["id"].as_str().unwrap();
        let (_, detail) = first.get(&format!("/v1/loops/{id}")).await;
        let breaches = detail["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| row["action"] == "breach")
            .count();
        assert_eq!(breaches, 1, "{detail}");
        assert_eq!(detail["breached"], true, "{detail}");
    }
    let opened_here = [
        first.counter_total("sigloop_loops_total").await,
        opened_by_second,
    ];
    assert!(
        opened_here.iter().all(|count| *count > 0.0),
        "both instances did loop work: {opened_here:?}"
    );
    // No instance raced another for a loop: no commit failed (a failed one is reloaded and read
    // again, so the loops alone would not show it).
    assert_eq!(
        first
            .counter_total("sigloop_batch_commit_failures_total")
            .await
            + second
                .counter_total("sigloop_batch_commit_failures_total")
                .await,
        0.0
    );
    let breaches = first.counter_total("sigloop_sla_breaches_total").await
        + second.counter_total("sigloop_sla_breaches_total").await;
    assert_eq!(breaches, 16.0);
    // Journey figures from both instances add up in the shared database.
    let (status, journeys) = second.get("/v1/journeys?group_by=stage").await;
    assert_eq!(status, 200, "{journeys}");
    let events: u64 = journeys["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["events"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(events, 32, "16 detractors and 16 usage events: {journeys}");
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_twice_by_kafka_changes_nothing_the_second_time() {
    let kafka = TestKafka::new(2);
    let database = fresh_postgres_url().await;
    let app = TestApp::spawn_distributed(&kafka, &database).await;
    app.ingest(&[account("acct-dup", "enterprise", Some("ana.lima"))])
        .await;
    let detractor = nps("det-dup", "acct-dup", 1, 10, Some("Nobody answers"));
    // A client that did not get its answer sends the same request again: both reach the topic.
    app.ingest(std::slice::from_ref(&detractor)).await;
    app.ingest(std::slice::from_ref(&detractor)).await;
    // And once more after a restart, when the first sighting is only in the database.
    app.stop().await;
    let app = TestApp::spawn_distributed(&kafka, &database).await;
    app.ingest(std::slice::from_ref(&detractor)).await;
    let surveys = read_topic(&kafka, "surveys", 3);
    assert_eq!(surveys.len(), 3, "the broker holds three copies");
    let loops = app.loops("account_id=acct-dup").await;
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(loops[0]["signal_count"], 1, "{loops:?}");
    assert_eq!(
        app.counter_total("sigloop_events_duplicate_total").await,
        1.0
    );
    let (_, journeys) = app.get("/v1/journeys?group_by=stage").await;
    let responses: u64 = journeys["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["events"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        responses, 1,
        "the detractor counts once in the journey figures: {journeys}"
    );
    app.stop().await;
}
