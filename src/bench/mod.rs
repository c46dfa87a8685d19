//! `sigloop bench`: the end-to-end benchmark and the stage-by-stage rates.
//!
//! End to end, a `sigloop serve` child process (so its peak RSS is the server's alone) takes NDJSON
//! batches over HTTP into the durable log (`synchronous=FULL`) and processes them into loops. The
//! client pre-generates every request body before the clock starts. Latency is from a request's 2xx
//! to the moment the processor's committed offset (polled on `/readyz` every 2 ms) covers the
//! request's `last_seq`. Then each pure stage runs alone on one core of this process.
//!
//! `--kafka BROKERS --postgres URL` measures the distributed mode instead (`kafka.rs`).

mod kafka;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::config::Config;
use crate::gen::GenOptions;
use crate::pipeline::core::{BatchClock, Core, CoreState, EntryKind, LogEntry};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 100_000)]
    pub accounts: usize,
    /// Mixed events after the accounts.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Events per HTTP request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// SQLite `synchronous` of the server: full (the default, every 2xx survives power loss) or normal.
    #[arg(long, default_value = "full")]
    pub synchronous: String,
    /// Skip the end-to-end run (stage rates only).
    #[arg(long)]
    pub stages_only: bool,
    /// Run end to end only with journeys on, instead of with and without them.
    #[arg(long)]
    pub no_journey_comparison: bool,
    /// Rounds of the with/without journeys comparison. Each round runs both sides back to back,
    /// alternating which goes first (with-without, then without-with, ...), and gives one share; the
    /// median share over the rounds is reported, so that a drift of the machine's speed within one
    /// round moves one share, not the figure.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Measure the distributed mode instead: Kafka bootstrap servers, or `mock` for librdkafka's
    /// in-process mock cluster. Needs --postgres.
    #[arg(long, value_name = "BROKERS", requires = "postgres")]
    pub kafka: Option<String>,
    /// PostgreSQL URL of the distributed-mode run; each run gets a fresh schema in it.
    #[arg(long, value_name = "URL", requires = "kafka")]
    pub postgres: Option<String>,
    /// Partitions per topic of the distributed-mode run.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Instance counts of the distributed-mode run, measured in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub instances: Vec<usize>,
    /// Events per second of the distributed-mode latency phase.
    #[arg(long, default_value_t = 20_000)]
    pub latency_rate: usize,
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Creates each topic of the distributed-mode run with this shell command instead of Kafka's
    /// CreateTopics API (for brokers without it, such as Nisshi); `{topic}` and `{partitions}` are
    /// replaced. Example: `nisshi topic create {topic} --partitions {partitions} --broker
    /// tcp://127.0.0.1:9092`.
    #[arg(long, value_name = "COMMAND", requires = "kafka")]
    pub create_topic_command: Option<String>,
    /// An extra librdkafka property (KEY=VALUE) of the instances' and the raw reader's consumers,
    /// as `[kafka.consumer]` takes them; repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value, requires = "kafka")]
    pub consumer_property: Vec<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}

/// The figures of one end-to-end run.
struct EndToEnd {
    processed_rate: f64,
    /// The server's CPU time (user and system, all threads) per event, in microseconds.
    cpu_per_event: Option<f64>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let options = GenOptions {
        accounts: args.accounts,
        events: args.events,
        seed: args.seed,
        ..GenOptions::default()
    };
    let started = Instant::now();
    let lines: Vec<String> = crate::gen::generate(&options).collect();
    let total_bytes: usize = lines.iter().map(|line| line.len() + 1).sum();
    println!(
        "generated {} events ({} accounts + {} mixed) in {:.1}s, mean size {} bytes",
        lines.len(),
        args.accounts,
        args.events,
        started.elapsed().as_secs_f64(),
        total_bytes / lines.len().max(1)
    );
    if let (Some(kafka), Some(postgres)) = (&args.kafka, &args.postgres) {
        // The mock cluster lives in this process; the instances reach it over TCP.
        let mock = (kafka == "mock")
            .then(|| rdkafka::mocking::MockCluster::new(1))
            .transpose()
            .context("Failed to start the mock Kafka cluster")?;
        let brokers = mock
            .as_ref()
            .map_or_else(|| kafka.clone(), |mock| mock.bootstrap_servers());
        kafka::run(
            &kafka::KafkaBenchArgs {
                brokers: &brokers,
                mock: mock.as_ref(),
                postgres,
                partitions: args.partitions,
                instances: &args.instances,
                latency_rate: args.latency_rate,
                latency_seconds: args.latency_seconds,
                create_topic_command: args.create_topic_command.as_deref(),
                consumer_properties: &args.consumer_property,
            },
            &lines,
        )
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    if !args.stages_only {
        if args.no_journey_comparison {
            end_to_end(&args, &lines, true).await?;
        } else {
            // Each round runs both sides back to back, so that a round's share compares runs
            // made at nearly the same machine speed; the median share over the rounds is the
            // figure, and the best run of each side is printed beside it.
            let rounds = args.rounds.max(1);
            let mut shares = Vec::with_capacity(rounds);
            let mut cpu_shares = Vec::with_capacity(rounds);
            let (mut best_with, mut best_without) = (0.0f64, 0.0f64);
            for round in 0..rounds {
                let order = if round % 2 == 0 {
                    [true, false]
                } else {
                    [false, true]
                };
                let (mut with, mut without) = (0.0f64, 0.0f64);
                let (mut cpu_with, mut cpu_without) = (None, None);
                for journeys in order {
                    let run = end_to_end(&args, &lines, journeys).await?;
                    if journeys {
                        (with, cpu_with) = (run.processed_rate, run.cpu_per_event);
                    } else {
                        (without, cpu_without) = (run.processed_rate, run.cpu_per_event);
                    }
                }
                let share = (1.0 - with / without) * 100.0;
                print!(
                    "round {} of {rounds}: {with:.0} events/s with journeys, {without:.0} without: journeys cost {share:.1}%",
                    round + 1
                );
                if let (Some(cpu_with), Some(cpu_without)) = (cpu_with, cpu_without) {
                    let cpu_share = (cpu_with / cpu_without - 1.0) * 100.0;
                    print!(
                        "; server CPU {cpu_with:.1} us per event with, {cpu_without:.1} without: {cpu_share:+.1}%"
                    );
                    cpu_shares.push(cpu_share);
                }
                println!();
                shares.push(share);
                best_with = best_with.max(with);
                best_without = best_without.max(without);
            }
            shares.sort_by(f64::total_cmp);
            println!(
                "journeys (aggregation + journey detection) cost {:.1}% of the end-to-end events/s (median of {rounds} rounds; each round runs both sides back to back, alternating which goes first; best runs: {best_with:.0} with, {best_without:.0} without)",
                percentile(&shares, 0.5),
            );
            // CPU time moves far less than a rate with the machine's speed from run to run (I/O
            // waits and other processes do not count), so it is printed beside the figure.
            if cpu_shares.len() == rounds {
                cpu_shares.sort_by(f64::total_cmp);
                println!(
                    "journeys add {:+.1}% to the server's CPU time per event (median of {rounds} rounds)",
                    percentile(&cpu_shares, 0.5),
                );
            }
        }
    }
    stages(&lines)?;
    Ok(ExitCode::SUCCESS)
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

async fn end_to_end(
    args: &BenchArgs,
    lines: &[String],
    journeys: bool,
) -> anyhow::Result<EndToEnd> {
    let directory = tempfile::tempdir().context("Failed to create a temporary directory")?;
    let db: PathBuf = directory.path().join("bench.db");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(&db)
        .env("SIGLOOP__STORAGE__SYNCHRONOUS", &args.synchronous)
        .env("SIGLOOP__JOURNEYS__ENABLED", journeys.to_string())
        // The child listens on loopback for the benchmark's own client, which sends no token: run it
        // open whatever the calling environment says about access.
        .env("SIGLOOP__SERVER__AUTH", "open")
        .env("SIGLOOP__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("Failed to start the sigloop server")?;
    let pid = child.id().context("the server has a pid")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections * 2)
        .build()?;
    let ready = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("the server did not start within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bodies: VecDeque<String> = lines
        .chunks(args.batch_size.max(1))
        .map(|chunk| {
            let mut body = chunk.join("\n");
            body.push('\n');
            body
        })
        .collect();
    let request_count = bodies.len();
    let bodies = Arc::new(Mutex::new(bodies));
    // (last_seq, accepted at) of every request, in completion order.
    let accepted: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let done = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let client = client.clone();
        let base = base.clone();
        let accepted = Arc::clone(&accepted);
        let done = done.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut cursor = 0usize;
            let mut last_offset = 0;
            loop {
                if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
                    if let Ok(value) = response.json::<serde_json::Value>().await {
                        last_offset = value["processed_offset"].as_i64().unwrap_or(last_offset);
                    }
                }
                let now = Instant::now();
                let finished = {
                    let mut pending = accepted.lock().expect("lock");
                    pending[cursor..].sort_by_key(|(seq, _)| *seq);
                    while cursor < pending.len() && pending[cursor].0 <= last_offset {
                        latencies.push(now.duration_since(pending[cursor].1).as_secs_f64());
                        cursor += 1;
                    }
                    done.is_cancelled() && cursor == pending.len()
                };
                if finished {
                    return (latencies, last_offset, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..args.connections.max(1) {
        let client = client.clone();
        let url = format!("{base}/v1/events");
        let bodies = Arc::clone(&bodies);
        let accepted = Arc::clone(&accepted);
        senders.push(tokio::spawn(async move {
            loop {
                let Some(body) = bodies.lock().expect("lock").pop_front() else {
                    return Ok::<(), anyhow::Error>(());
                };
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let value: serde_json::Value = response.json().await?;
                if !status.is_success() {
                    bail!("the server answered {status}: {value}");
                }
                if let Some(seq) = value["last_seq"].as_i64() {
                    accepted.lock().expect("lock").push((seq, Instant::now()));
                }
            }
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let accept_elapsed = started.elapsed();
    done.cancel();
    let (mut latencies, offset, finished_at) = watcher.await?;
    let elapsed = finished_at.duration_since(started);
    let peak_rss = peak_rss_kib(pid);
    let cpu = cpu_seconds(pid);
    child.kill().await.ok();
    latencies.sort_by(f64::total_cmp);
    println!(
        "end to end, journeys {}: {} events in {} requests of {} over {} connections, synchronous={}",
        if journeys { "on" } else { "off" },
        lines.len(),
        request_count,
        args.batch_size,
        args.connections,
        args.synchronous
    );
    println!(
        "  accepted into the durable log: {:.0} events/s ({:.2}s)",
        lines.len() as f64 / accept_elapsed.as_secs_f64(),
        accept_elapsed.as_secs_f64()
    );
    println!(
        "  processed into loops:          {:.0} events/s ({:.2}s, processor offset {offset})",
        lines.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  accept -> processed latency:   p50 {:.1} ms, p99 {:.1} ms",
        percentile(&latencies, 0.5) * 1000.0,
        percentile(&latencies, 0.99) * 1000.0
    );
    match peak_rss {
        Some(kib) => println!(
            "  server peak RSS:               {:.0} MB",
            kib as f64 / 1024.0
        ),
        None => println!("  server peak RSS:               unavailable"),
    }
    let cpu_per_event = cpu.map(|seconds| seconds * 1e6 / lines.len() as f64);
    match cpu.zip(cpu_per_event) {
        Some((seconds, per_event)) => println!(
            "  server CPU time:               {seconds:.1} s ({per_event:.1} us per event)"
        ),
        None => println!("  server CPU time:               unavailable"),
    }
    Ok(EndToEnd {
        processed_rate: lines.len() as f64 / elapsed.as_secs_f64(),
        cpu_per_event,
    })
}

/// The CPU time a process has used so far, user and system over all its threads: fields 14 and 15
/// of `/proc/{pid}/stat`, in clock ticks.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields are counted from
    // the state (field 3) after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (user + system) as f64 / ticks as f64)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
}

/// Each pure stage alone, on this thread (one core).
fn stages(lines: &[String]) -> anyhow::Result<()> {
    let config = Config::embedded();
    let core = Core::new(&config).map_err(|problems| crate::config::ConfigError { problems })?;
    let rate = |count: usize, elapsed: Duration| count as f64 / elapsed.as_secs_f64();

    let started = Instant::now();
    let mut events = Vec::with_capacity(lines.len());
    for line in lines {
        if let Ok(event) = crate::decode::decode_event(line.as_bytes()) {
            events.push(event);
        }
    }
    let decode_rate = rate(lines.len(), started.elapsed());

    let started = Instant::now();
    let mut tagged = 0usize;
    for event in &events {
        tagged += core.tagger().tag(&event.data).matches.len();
    }
    let tag_rate = rate(events.len(), started.elapsed());

    // Detect and route alone, on events decoded and tagged beforehand: the detectors' windows and the
    // round-robin cursor advance as in the processor, but no loop is written.
    let taggings: Vec<_> = events
        .iter()
        .map(|event| core.tagger().tag(&event.data))
        .collect();
    let mut detector_state = crate::detect::DetectorState::default();
    let mut router_state = crate::route::RouterState::default();
    let mut accounts = std::collections::HashMap::new();
    let started = Instant::now();
    let mut routed = 0usize;
    for (event, tagging) in events.iter().zip(&taggings) {
        if let crate::domain::EventData::AccountUpserted(account) = &event.data {
            accounts.insert(account.account_id.clone(), account.clone());
            continue;
        }
        let detection = core.detectors().detect(event, tagging, &detector_state);
        if let Some(update) = detection.repeat_update {
            detector_state.apply(update);
        }
        for signal in &detection.signals {
            let input = crate::route::RouteInput {
                kind: signal.kind,
                tag: &signal.key_tag,
                severity: signal.severity,
                detector: &signal.detector,
                account: signal
                    .account_id
                    .as_ref()
                    .and_then(|account_id| accounts.get(account_id)),
            };
            let decision = core.router().route(&input, &router_state);
            router_state.apply(&decision);
            routed += 1;
        }
    }
    let detect_route_rate = rate(events.len(), started.elapsed());
    drop(taggings);

    let entries: Vec<LogEntry> = lines
        .iter()
        .enumerate()
        .map(|(index, line)| LogEntry {
            seq: index as i64 + 1,
            kind: EntryKind::Event,
            source: String::new(),
            id: String::new(),
            payload: line.clone(),
        })
        .collect();
    let run_core = |core: &Core| {
        let mut state = CoreState::default();
        let started = Instant::now();
        let mut loop_rows = 0usize;
        let mut buckets = 0usize;
        for batch in entries.chunks(1000) {
            let effects = core.process_batch(&mut state, batch, BatchClock::EventTime);
            loop_rows += effects.loops.len();
            buckets += effects.journey_buckets.len();
        }
        (
            rate(entries.len(), started.elapsed()),
            state,
            loop_rows,
            buckets,
        )
    };
    let mut without_journeys = config.clone();
    without_journeys.settings.journeys.enabled = false;
    let core_without =
        Core::new(&without_journeys).map_err(|problems| crate::config::ConfigError { problems })?;
    // Each twice, alternating, best of two: the first run of a process also pays for faulting in
    // fresh memory, which would otherwise count against whichever ran first.
    let mut core_rate_without: f64 = 0.0;
    let mut best = None;
    for _ in 0..2 {
        core_rate_without = core_rate_without.max(run_core(&core_without).0);
        let run = run_core(&core);
        if best
            .as_ref()
            .is_none_or(|(rate, ..): &(f64, CoreState, usize, usize)| run.0 > *rate)
        {
            best = Some(run);
        }
    }
    let (core_rate, state, loop_rows, bucket_rows) = best.expect("ran twice");
    let journey_loops = state
        .loops
        .values()
        .filter(|record| record.kind == crate::config::routes::SignalKind::Journey)
        .count();
    println!("stages alone, one core:");
    println!("  decode:                                   {decode_rate:.0} events/s");
    println!("  tag:                                      {tag_rate:.0} events/s ({tagged} tags)");
    println!("  detect + route:                           {detect_route_rate:.0} events/s ({routed} signals routed)");
    let chained = 1.0 / (1.0 / decode_rate + 1.0 / tag_rate + 1.0 / detect_route_rate);
    println!("  decode, tag, detect, route chained:       {chained:.0} events/s");
    println!(
        "  decode + tag + detect + route + loops:    {core_rate:.0} events/s with journeys ({} loops, {journey_loops} of them journey loops, {loop_rows} loop rows and {bucket_rows} journey bucket rows written)",
        state.loops.len()
    );
    println!(
        "                                            {core_rate_without:.0} events/s without journeys ({:.1}% more)",
        (core_rate_without / core_rate - 1.0) * 100.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_time_of_a_process_is_read_from_proc_and_grows_with_work() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).expect("this process's /proc stat");
        // Enough work for several clock ticks (10 ms each at the usual 100 Hz).
        let started = Instant::now();
        let mut sum = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            sum = std::hint::black_box(sum.wrapping_add(1));
        }
        let after = cpu_seconds(pid).expect("this process's /proc stat");
        assert!(after > before, "{before} s, then {after} s");
        assert_eq!(cpu_seconds(u32::MAX), None, "no such process");
    }
}
