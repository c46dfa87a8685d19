//! Exactly-once effect in the distributed mode, with real processes: two `sigloop serve` processes
//! in one consumer group consume a produced stream from a Kafka-protocol broker (librdkafka's mock
//! cluster, in this process, over TCP; or the broker process of `SIGLOOP_TEST_KAFKA_BROKERS`, see
//! `common::TestKafka`) into one PostgreSQL schema. They are killed with SIGKILL at several points
//! of a batch (processed in memory, inside the commit's transaction, right after the commit) and
//! from outside, and restarted. Afterwards the loops and the journey figures must equal those of a
//! single clean run over the same stream.
//!
//! Every event goes to one topic, so an account's events keep their produced order in any run. The
//! detectors kept are the ones that look at one account's events in order; journey and time
//! detectors are left out because which event crosses their thresholds depends on how the
//! partitions interleave, which no two runs share (their aggregation stays on: sums and distinct
//! account sets do not depend on order).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{fresh_postgres_url, ServerProcess, TestKafka};
use sigloop::config::signals::Window;
use sigloop::kafka::producer::{produce_lines, EventProducer};
use sigloop::storage::{JourneyDimension, JourneyQuery, PostgresStorage, Storage};

/// The one topic of every event, and the actions topic (names for [`TestKafka::topic`]).
const TOPIC: &str = "crash.events";
const ACTIONS: &str = "crash.actions";
const PARTITIONS: i32 = 4;

/// The shipped configuration with only the order-insensitive detectors (see the module comment).
fn write_config(directory: &Path) {
    let mut signals: toml::Table =
        toml::from_str(sigloop::config::DEFAULT_SIGNALS).expect("the shipped signals parse");
    let account = signals["account"]
        .as_array()
        .expect("account detectors")
        .iter()
        .filter(|detector| {
            let kind = detector["kind"].as_str().unwrap_or_default();
            !matches!(
                kind,
                "milestone_missing" | "inactive" | "usage_drop" | "error_spike"
            )
        })
        .cloned()
        .collect();
    signals.insert("account".to_owned(), toml::Value::Array(account));
    signals.insert("journey".to_owned(), toml::Value::Array(Vec::new()));
    std::fs::write(
        directory.join("signals.toml"),
        toml::to_string(&signals).unwrap(),
    )
    .expect("signals.toml is written");
}

/// sigloop's Kafka settings for this test: every event type on [`TOPIC`], actions on [`ACTIONS`].
fn kafka_settings(kafka: &TestKafka) -> sigloop::config::settings::KafkaSettings {
    let mut settings = kafka.settings();
    settings.topics.tickets = kafka.topic(TOPIC);
    settings.topics.usage = kafka.topic(TOPIC);
    settings.topics.surveys = kafka.topic(TOPIC);
    settings.topics.accounts = kafka.topic(TOPIC);
    settings.topics.actions = kafka.topic(ACTIONS);
    settings
}

fn environment(kafka: &TestKafka, url: &str, group: &str, config: &Path) -> Vec<(String, String)> {
    let mut settings = kafka_settings(kafka);
    settings.group_id = kafka.group(group);
    let mut env = common::distributed(&settings, url);
    env.push((
        "SIGLOOP__PROCESSOR__BATCH_SIZE".to_owned(),
        "200".to_owned(),
    ));
    env.push((
        "SIGLOOP__PROCESSOR__BATCH_MILLIS".to_owned(),
        "20".to_owned(),
    ));
    env.push((
        "SIGLOOP_CONFIG_DIR".to_owned(),
        config.to_string_lossy().into_owned(),
    ));
    env
}

fn start(env: &[(String, String)], failpoint: Option<&str>) -> ServerProcess {
    let mut pairs: Vec<(&str, &str)> = env
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    if let Some(failpoint) = failpoint {
        pairs.push(("SIGLOOP_FAILPOINT", failpoint));
    }
    let directory = std::env::temp_dir();
    ServerProcess::start(&directory.join("unused.db"), &pairs)
}

/// True once the committed offsets of `topic` cover `total` messages.
async fn caught_up(storage: &PostgresStorage, topic: &str, total: i64) -> bool {
    let stored = storage.source_offsets().await.expect("offsets are read");
    stored
        .iter()
        .filter(|offset| offset.topic == topic)
        .map(|offset| offset.next_offset)
        .sum::<i64>()
        >= total
}

/// What must not depend on crashes: every loop (key, generation, state, signal count and the events
/// attached, in order) and the journey figures by stage, tag, touchpoint and window.
async fn outcome(storage: &PostgresStorage) -> (Vec<String>, Vec<String>) {
    let loops = storage
        .export()
        .await
        .expect("loops are exported")
        .into_iter()
        .map(|detail| {
            let events: Vec<&str> = detail
                .evidence
                .iter()
                .map(|row| row.event_id.as_str())
                .collect();
            format!(
                "{} g{} {} signals={} evidence={:?}",
                detail.record.key,
                detail.record.generation,
                detail.record.state.as_str(),
                detail.record.signal_count,
                events
            )
        })
        .collect();
    let query = JourneyQuery {
        window: Window::Day,
        from: None,
        to: None,
        group_by: JourneyDimension::ALL.to_vec(),
        stage: None,
        tag: None,
        touchpoint: None,
    };
    let journeys = storage
        .journeys(&query)
        .await
        .expect("journey figures are read")
        .into_iter()
        .map(|group| format!("{group:?}"))
        .collect();
    (loops, journeys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_at_every_point_of_a_batch_and_restarted_give_exactly_the_effects_of_a_clean_run(
) {
    let kafka = TestKafka::with_topics(PARTITIONS, &[TOPIC, ACTIONS, "loops", "dead_letters"]);
    let topic = kafka.topic(TOPIC);
    let config = tempfile::tempdir().unwrap();
    write_config(config.path());

    // The stream: a directory of accounts, then mixed tickets, usage and surveys.
    let producer = EventProducer::new(&kafka_settings(&kafka)).expect("the producer is created");
    let options = sigloop::gen::GenOptions {
        accounts: 60,
        events: 3000,
        seed: 11,
        ..Default::default()
    };
    let lines = sigloop::gen::generate(&options).map(Ok);
    let totals = produce_lines(&producer, lines, 1000)
        .await
        .expect("the stream is produced");
    assert_eq!(totals.rejected, 0);
    let total = totals.produced as i64;

    // A single clean run.
    let clean_url = fresh_postgres_url().await;
    let clean_storage = PostgresStorage::connect(&clean_url, 2).await.unwrap();
    let clean_env = environment(&kafka, &clean_url, "crash-clean", config.path());
    let mut clean = start(&clean_env, None);
    clean.wait_until_healthy().await;
    let started = Instant::now();
    while !caught_up(&clean_storage, &topic, total).await {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the clean run did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    clean.terminate();
    let expected = outcome(&clean_storage).await;
    assert!(
        expected.0.len() > 20,
        "the stream opens loops: {}",
        expected.0.len()
    );

    // Two instances, killed over and over at different points, each restarted at once.
    let url = fresh_postgres_url().await;
    let storage = PostgresStorage::connect(&url, 2).await.unwrap();
    let env = environment(&kafka, &url, "crash-group", config.path());
    let kills = [
        Some("mid_batch@2"),
        Some("mid_commit@3"),
        Some("after_commit@2"),
        Some("mid_commit@5"),
        Some("mid_batch@4"),
        Some("after_commit@6"),
    ];
    let mut instances = [start(&env, kills[0]), start(&env, kills[1])];
    let mut next_kill = 2;
    let mut killed = 0;
    let started = Instant::now();
    while !caught_up(&storage, &topic, total).await {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the crashing run did not finish"
        );
        for instance in instances.iter_mut() {
            if let Ok(Some(_)) = instance.child.try_wait() {
                killed += 1;
                let failpoint = kills.get(next_kill).copied().flatten();
                next_kill += 1;
                *instance = start(&env, failpoint);
            }
        }
        // And once from outside, whatever it is doing.
        if killed == 3 {
            let _ = instances[0].child.kill();
            let _ = instances[0].child.wait();
            killed += 1;
            instances[0] = start(&env, None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for instance in instances {
        instance.terminate();
    }
    assert!(killed >= 4, "instances were killed {killed} times");
    let actual = outcome(&storage).await;
    assert_eq!(actual.0.len(), expected.0.len(), "same number of loops");
    assert_eq!(actual.0, expected.0, "loops differ from the clean run");
    assert_eq!(
        actual.1, expected.1,
        "journey figures differ from the clean run"
    );
}
