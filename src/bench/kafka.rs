//! `sigloop bench --kafka BROKERS --postgres URL`: the distributed mode end to end.
//!
//! For one instance and then for two (each a `sigloop serve` child process in one consumer group,
//! on fresh topics and a fresh PostgreSQL schema per run):
//!
//! 1. every generated event is produced to the topics first (keyed by account, acks=all), which
//!    gives the produce rate;
//! 2. once, a consumer that only reads drains the same messages: the broker's raw consume rate,
//!    against which sigloop's figure reads as a share;
//! 3. the instances start and consume the backlog; the rate is the events over the time from the
//!    first committed offset to the moment the offsets committed in PostgreSQL cover every message
//!    (lag back to zero), so the group join is not counted (it is printed apart);
//! 4. with the backlog gone, events are produced at a steady rate below capacity, and each one's
//!    latency is from its produce call to the moment its partition's committed offset passes it
//!    (polled every 5 ms): p50 and p99.

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::config::settings::{KafkaSettings, KafkaTopics};
use crate::domain::EventType;
use crate::kafka::producer::{EventProducer, OutgoingEvent, Placed};
use crate::storage::{PostgresStorage, Storage};

/// What the Kafka benchmark needs besides the generated lines.
pub struct KafkaBenchArgs<'a> {
    pub brokers: &'a str,
    /// The in-process mock cluster, when measuring on it: topics are created through it (it does
    /// not implement the admin API).
    pub mock: Option<
        &'a rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    >,
    pub postgres: &'a str,
    pub partitions: i32,
    /// Instance counts to measure, in order (1 and 2 by default).
    pub instances: &'a [usize],
    /// Events per second of the latency phase.
    pub latency_rate: usize,
    pub latency_seconds: u64,
    /// A shell command creating one topic (`{topic}`, `{partitions}`), instead of the admin API.
    pub create_topic_command: Option<&'a str>,
    /// Extra librdkafka properties of every consumer.
    pub consumer_properties: &'a [(String, String)],
}

/// A decoded line: its topic choice, key and payload.
struct Line<'a> {
    event_type: EventType,
    account_id: String,
    payload: &'a str,
}

pub async fn run(args: &KafkaBenchArgs<'_>, lines: &[String]) -> anyhow::Result<()> {
    let decoded: Vec<Line<'_>> = lines
        .iter()
        .filter_map(|line| {
            let event = crate::decode::decode_event(line.as_bytes()).ok()?;
            Some(Line {
                event_type: event.event_type(),
                account_id: event.account_id().as_str().to_owned(),
                payload: line,
            })
        })
        .collect();
    println!(
        "kafka: brokers {}, {} partitions per topic, {} events",
        args.brokers,
        args.partitions,
        decoded.len()
    );
    let mut raw_consume_measured = false;
    for &instances in args.instances {
        let topics = fresh_topics(args, args.partitions).await?;
        let settings = KafkaSettings {
            enabled: true,
            brokers: args.brokers.to_owned(),
            topics: topics.clone(),
            ..KafkaSettings::default()
        };
        let producer = EventProducer::new(&settings).context("Failed to create the producer")?;
        let started = Instant::now();
        let placed = produce(&producer, &decoded).await?;
        let produce_seconds = started.elapsed().as_secs_f64();
        println!(
            "  produce: {} events in {:.1}s = {:.0} events/s (acks=all, idempotent)",
            placed.len(),
            produce_seconds,
            placed.len() as f64 / produce_seconds
        );
        if !raw_consume_measured {
            let (count, seconds) = raw_consume(
                args.brokers,
                &topics,
                args.consumer_properties,
                placed.len(),
            )?;
            println!(
                "  broker raw consume (one consumer that only reads): {count} messages in {seconds:.1}s = {:.0} messages/s",
                count as f64 / seconds
            );
            raw_consume_measured = true;
        }
        let url = crate::storage::fresh_postgres_schema(args.postgres, "bench").await?;
        let storage = PostgresStorage::connect(&url, 2).await?;
        let targets = targets(&placed);
        let mut children = Vec::new();
        let launched = Instant::now();
        for _ in 0..instances {
            children.push(spawn_instance(
                args.brokers,
                &url,
                &topics,
                args.consumer_properties,
            )?);
        }
        let (first_commit, all_committed) =
            wait_for_commits(&storage, &targets, launched, &mut children).await?;
        let rate = placed.len() as f64 / (all_committed - first_commit).as_secs_f64();
        println!(
            "  {instances} instance(s): {} events consumed, processed and committed in {:.1}s after the first commit = {:.0} events/s (group join and first batch: {:.1}s)",
            placed.len(),
            (all_committed - first_commit).as_secs_f64(),
            rate,
            first_commit.as_secs_f64()
        );
        let latencies = latency_phase(
            &producer,
            &storage,
            &decoded,
            args.latency_rate,
            args.latency_seconds,
        )
        .await?;
        println!(
            "  {instances} instance(s): produce-to-commit latency at {} events/s for {}s: p50 {:.0} ms, p99 {:.0} ms ({} events)",
            args.latency_rate,
            args.latency_seconds,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.len()
        );
        for mut child in children {
            terminate(&mut child).await;
        }
        storage.close().await;
    }
    Ok(())
}

/// Topics with a fresh prefix, created with `partitions` each, so that every run starts empty.
async fn fresh_topics(args: &KafkaBenchArgs<'_>, partitions: i32) -> anyhow::Result<KafkaTopics> {
    let brokers = args.brokers;
    let prefix = format!("bench-{:08x}", rand::random::<u32>());
    let topics = KafkaTopics {
        tickets: format!("{prefix}.tickets"),
        usage: format!("{prefix}.usage"),
        surveys: format!("{prefix}.surveys"),
        accounts: format!("{prefix}.accounts"),
        actions: format!("{prefix}.actions"),
        loops: format!("{prefix}.loops"),
        dead_letters: format!("{prefix}.dead-letters"),
    };
    if let Some(mock) = args.mock {
        for name in topics_of(&topics) {
            mock.create_topic(name, partitions, 1)
                .with_context(|| format!("Failed to create topic {name} on the mock cluster"))?;
        }
        return Ok(topics);
    }
    if let Some(command) = args.create_topic_command {
        for name in topics_of(&topics) {
            let line = command
                .replace("{topic}", name)
                .replace("{partitions}", &partitions.to_string());
            let status = tokio::process::Command::new("sh")
                .args(["-c", &line])
                .stdout(Stdio::null())
                .status()
                .await
                .with_context(|| format!("Failed to run `{line}`"))?;
            anyhow::ensure!(status.success(), "`{line}` failed ({status})");
        }
        return Ok(topics);
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("Failed to create the Kafka admin client")?;
    let new: Vec<NewTopic<'_>> = topics_of(&topics)
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
        .collect();
    for outcome in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .context("Failed to create the benchmark topics")?
    {
        if let Err((topic, error)) = outcome {
            anyhow::bail!("Failed to create topic {topic}: {error}");
        }
    }
    Ok(topics)
}

fn topics_of(topics: &KafkaTopics) -> [&str; 7] {
    [
        &topics.tickets,
        &topics.usage,
        &topics.surveys,
        &topics.accounts,
        &topics.actions,
        &topics.loops,
        &topics.dead_letters,
    ]
}

async fn produce(producer: &EventProducer, lines: &[Line<'_>]) -> anyhow::Result<Vec<Placed>> {
    let mut placed = Vec::with_capacity(lines.len());
    for chunk in lines.chunks(20_000) {
        let events: Vec<OutgoingEvent<'_>> = chunk
            .iter()
            .map(|line| OutgoingEvent {
                event_type: line.event_type,
                account_id: &line.account_id,
                payload: line.payload,
            })
            .collect();
        placed.extend(
            producer
                .produce_events(&events)
                .await
                .context("The broker did not acknowledge the benchmark events")?,
        );
    }
    Ok(placed)
}

/// Reads `expected` messages from the inbound topics with a consumer that does nothing else.
fn raw_consume(
    brokers: &str,
    topics: &KafkaTopics,
    properties: &[(String, String)],
    expected: usize,
) -> anyhow::Result<(usize, f64)> {
    let settings = KafkaSettings {
        brokers: brokers.to_owned(),
        group_id: format!("bench-raw-{:08x}", rand::random::<u32>()),
        topics: topics.clone(),
        consumer: properties.iter().cloned().collect(),
        ..KafkaSettings::default()
    };
    let consumer: BaseConsumer = crate::kafka::consumer_config(&settings)
        .set("statistics.interval.ms", "0")
        .create()
        .context("Failed to create the raw consumer")?;
    consumer.subscribe(&topics.inbound())?;
    let mut count = 0usize;
    let mut started: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while count < expected && Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            count += 1;
        }
    }
    let seconds = started.map_or(0.0, |started| started.elapsed().as_secs_f64());
    Ok((count, seconds.max(1e-9)))
}

/// The next offset to reach in each partition: one past its last placed message.
fn targets(placed: &[Placed]) -> BTreeMap<(String, i32), i64> {
    let mut targets = BTreeMap::new();
    for event in placed {
        let entry = targets
            .entry((event.topic.clone(), event.partition))
            .or_insert(0);
        *entry = (*entry).max(event.offset + 1);
    }
    targets
}

fn spawn_instance(
    brokers: &str,
    url: &str,
    topics: &KafkaTopics,
    consumer_properties: &[(String, String)],
) -> anyhow::Result<tokio::process::Child> {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    for (key, value) in consumer_properties {
        command.env(
            format!("SIGLOOP__KAFKA__CONSUMER__{}", key.to_uppercase()),
            value,
        );
    }
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("SIGLOOP__KAFKA__ENABLED", "true")
        .env("SIGLOOP__KAFKA__BROKERS", brokers)
        .env(
            "SIGLOOP__KAFKA__GROUP_ID",
            format!("{}-group", topics.tickets),
        )
        .env("SIGLOOP__KAFKA__TOPICS__TICKETS", &topics.tickets)
        .env("SIGLOOP__KAFKA__TOPICS__USAGE", &topics.usage)
        .env("SIGLOOP__KAFKA__TOPICS__SURVEYS", &topics.surveys)
        .env("SIGLOOP__KAFKA__TOPICS__ACCOUNTS", &topics.accounts)
        .env("SIGLOOP__KAFKA__TOPICS__ACTIONS", &topics.actions)
        .env("SIGLOOP__KAFKA__TOPICS__LOOPS", &topics.loops)
        .env("SIGLOOP__KAFKA__TOPICS__DEAD_LETTERS", &topics.dead_letters)
        .env("SIGLOOP__STORAGE__BACKEND", "postgres")
        .env("SIGLOOP__STORAGE__URL", url)
        // The child listens on loopback for the benchmark's own client, which sends no token: run it
        // open whatever the calling environment says about access.
        .env("SIGLOOP__SERVER__AUTH", "open")
        .env("SIGLOOP__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("Failed to start a sigloop instance")
}

/// Polls the committed offsets until they reach `targets`; returns (time of the first commit, time
/// of the last), both from `launched`.
async fn wait_for_commits(
    storage: &PostgresStorage,
    targets: &BTreeMap<(String, i32), i64>,
    launched: Instant,
    children: &mut [tokio::process::Child],
) -> anyhow::Result<(Duration, Duration)> {
    let mut first = None;
    loop {
        let stored = storage.source_offsets().await?;
        if first.is_none() && !stored.is_empty() {
            first = Some(launched.elapsed());
        }
        let done = targets.iter().all(|((topic, partition), next)| {
            stored.iter().any(|offset| {
                &offset.topic == topic
                    && offset.partition == *partition
                    && offset.next_offset >= *next
            })
        });
        if done {
            return Ok((first.unwrap_or_default(), launched.elapsed()));
        }
        for child in children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("a sigloop instance exited during the benchmark: {status}");
            }
        }
        if launched.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("the instances did not catch up within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Produces at `rate` events/s for `seconds` (in 10 ms slices) and returns each event's
/// produce-to-commit latency in milliseconds, sorted.
async fn latency_phase(
    producer: &EventProducer,
    storage: &PostgresStorage,
    lines: &[Line<'_>],
    rate: usize,
    seconds: u64,
) -> anyhow::Result<Vec<f64>> {
    let per_slice = (rate / 100).max(1);
    let slices = seconds * 100;
    let mut waiting: BTreeMap<(String, i32), VecDeque<(i64, Instant)>> = BTreeMap::new();
    let mut latencies = Vec::new();
    let started = Instant::now();
    // The lines again, each under a fresh event id: a repeated id would be skipped as a duplicate
    // and cost less than a real event.
    let mut source = lines.iter().cycle().enumerate();
    for slice in 0..slices {
        let due = started + Duration::from_millis(slice * 10);
        tokio::time::sleep_until(due.into()).await;
        let renamed: Vec<(&Line<'_>, String)> = (0..per_slice)
            .filter_map(|_| source.next())
            .map(|(index, line)| (line, with_fresh_id(line.payload, index)))
            .collect();
        let chunk: Vec<OutgoingEvent<'_>> = renamed
            .iter()
            .map(|(line, payload)| OutgoingEvent {
                event_type: line.event_type,
                account_id: &line.account_id,
                payload,
            })
            .collect();
        let sent_at = Instant::now();
        for event in producer.produce_events(&chunk).await? {
            waiting
                .entry((event.topic, event.partition))
                .or_default()
                .push_back((event.offset, sent_at));
        }
        collect(storage, &mut waiting, &mut latencies).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while waiting.values().any(|queue| !queue.is_empty()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        collect(storage, &mut waiting, &mut latencies).await?;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// `payload` with `-latency-INDEX` appended to its event id.
fn with_fresh_id(payload: &str, index: usize) -> String {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(mut event) => {
            let id = format!(
                "{}-latency-{index}",
                event["id"].as_str().unwrap_or_default()
            );
            event["id"] = serde_json::Value::String(id);
            event.to_string()
        }
        Err(_) => payload.to_owned(),
    }
}

async fn collect(
    storage: &PostgresStorage,
    waiting: &mut BTreeMap<(String, i32), VecDeque<(i64, Instant)>>,
    latencies: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let stored = storage.source_offsets().await?;
    let now = Instant::now();
    for offset in stored {
        if let Some(queue) = waiting.get_mut(&(offset.topic, offset.partition)) {
            while queue
                .front()
                .is_some_and(|(event, _)| *event < offset.next_offset)
            {
                let (_, sent_at) = queue.pop_front().expect("checked above");
                latencies.push((now - sent_at).as_secs_f64() * 1000.0);
            }
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SIGTERM: the instance leaves the group and commits its batch in flight.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let _ = child.kill().await;
}
