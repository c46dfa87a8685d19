//! Metrics, defined once, with labels from bounded sets (event type, transport, rejection code, tag,
//! detector, queue, outcome: never an account id), and the tracing subscriber.

use std::sync::Mutex;

use prometheus::{
    exponential_buckets, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry,
};

use crate::config::settings::{LogFormat, LogSettings};
use crate::kpi::{DurationQuantiles, QueueKpis};

/// Every metric sigloop exports. Each application owns its registry, so tests can run several.
pub struct Metrics {
    pub registry: Registry,
    pub events_in: IntCounterVec,
    pub events_rejected: IntCounterVec,
    pub events_duplicate: IntCounter,
    pub tags_applied: IntCounterVec,
    pub signals: IntCounterVec,
    pub loops: IntCounterVec,
    pub sla_breaches: IntCounterVec,
    pub consumer_lag: IntGauge,
    pub processed_offset: IntGauge,
    pub batch_size: Histogram,
    pub batch_commit_seconds: Histogram,
    pub batch_commit_failures: IntCounter,
    pub append_seconds: Histogram,
    pub event_to_loop_seconds: Histogram,
    pub purged: IntCounterVec,
    /// Distributed mode: messages behind the high watermark, per partition this instance owns.
    pub kafka_consumer_lag: GaugeVec,
    /// Distributed mode: the partition numbers (of every topic) this instance holds now.
    pub kafka_partitions_owned: IntGauge,
    /// Distributed mode: outbox events delivered, by sink.
    pub outbox_delivered: IntCounterVec,
    /// Loop KPIs per queue over all loops, set from storage on each scrape
    /// ([`Metrics::render_with_loop_kpis`]).
    pub loop_kpis: LoopKpiGauges,
}

/// The `sigloop_loop_*` gauges: per queue (and quantile), a series only where the figure exists (a
/// queue with no closed loop has no time-to-close series).
pub struct LoopKpiGauges {
    pub sla_attainment: GaugeVec,
    pub closed_loop_ratio: GaugeVec,
    pub reopen_ratio: GaugeVec,
    pub time_to_acknowledge_seconds: GaugeVec,
    pub time_to_close_seconds: GaugeVec,
    /// Held from the reset of the gauges to the end of the rendering, so that two scrapes at once
    /// never show each other's half-set gauges.
    refresh: Mutex<()>,
}

impl LoopKpiGauges {
    fn all(&self) -> [&GaugeVec; 5] {
        [
            &self.sla_attainment,
            &self.closed_loop_ratio,
            &self.reopen_ratio,
            &self.time_to_acknowledge_seconds,
            &self.time_to_close_seconds,
        ]
    }

    fn set(&self, queues: &[QueueKpis]) {
        for gauge in self.all() {
            gauge.reset();
        }
        let set = |gauge: &GaugeVec, labels: &[&str], value: Option<f64>| {
            if let Some(value) = value {
                gauge.with_label_values(labels).set(value);
            }
        };
        let set_quantiles = |gauge: &GaugeVec, queue: &str, quantiles: &DurationQuantiles| {
            set(gauge, &[queue, "0.5"], quantiles.median_seconds);
            set(gauge, &[queue, "0.9"], quantiles.p90_seconds);
        };
        for queue in queues {
            let name = queue.queue.as_str();
            let kpis = &queue.kpis;
            set(&self.sla_attainment, &[name], kpis.sla_attainment);
            set(&self.closed_loop_ratio, &[name], kpis.closed_loop_rate);
            set(&self.reopen_ratio, &[name], kpis.reopen_rate);
            set_quantiles(
                &self.time_to_acknowledge_seconds,
                name,
                &kpis.time_to_acknowledge,
            );
            set_quantiles(&self.time_to_close_seconds, name, &kpis.time_to_close);
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("metric definitions are valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("metric definitions are valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let float_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric =
                GaugeVec::new(Opts::new(name, help), labels).expect("metric definitions are valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let loop_kpis = LoopKpiGauges {
            sla_attainment: float_gauge_vec(
                "sigloop_loop_sla_attainment",
                "Share of the queue's loops with an SLA policy that are not breached (0..1), over all loops; computed when scraped.",
                &["queue"],
            ),
            closed_loop_ratio: float_gauge_vec(
                "sigloop_loop_closed_loop_ratio",
                "Share of the queue's closed loops that closed as verified (0..1), over all loops; computed when scraped.",
                &["queue"],
            ),
            reopen_ratio: float_gauge_vec(
                "sigloop_loop_reopen_ratio",
                "Share of the queue's loops reopened at least once (0..1), over all loops; computed when scraped.",
                &["queue"],
            ),
            time_to_acknowledge_seconds: float_gauge_vec(
                "sigloop_loop_time_to_acknowledge_seconds",
                "Time from opening to acknowledgement of the queue's acknowledged loops, nearest-rank median (quantile 0.5) and 90th percentile (0.9); computed when scraped.",
                &["queue", "quantile"],
            ),
            time_to_close_seconds: float_gauge_vec(
                "sigloop_loop_time_to_close_seconds",
                "Time from opening to closing of the queue's closed loops, nearest-rank median (quantile 0.5) and 90th percentile (0.9); computed when scraped.",
                &["queue", "quantile"],
            ),
            refresh: Mutex::new(()),
        };
        let events_duplicate = IntCounter::new(
            "sigloop_events_duplicate_total",
            "Events accepted and ignored because their (source, id) was already logged.",
        )
        .expect("metric definitions are valid");
        registry
            .register(Box::new(events_duplicate.clone()))
            .expect("metric names are unique");
        Metrics {
            events_in: counter_vec(
                "sigloop_events_in_total",
                "Events accepted into the log, by event type and transport (http, demo): the bounded stand-in for the source.",
                &["type", "transport"],
            ),
            events_rejected: counter_vec(
                "sigloop_events_rejected_total",
                "Events rejected, by rejection code; each also has a dead-letter row.",
                &["code"],
            ),
            events_duplicate,
            tags_applied: counter_vec(
                "sigloop_tags_applied_total",
                "Taxonomy tags matched on processed events.",
                &["tag"],
            ),
            signals: counter_vec(
                "sigloop_signals_total",
                "Signals raised, by detector.",
                &["detector"],
            ),
            loops: counter_vec(
                "sigloop_loops_total",
                "Loop changes by queue and outcome (opened, joined, reopened, closed).",
                &["queue", "outcome"],
            ),
            sla_breaches: counter_vec(
                "sigloop_sla_breaches_total",
                "SLA breaches, by queue.",
                &["queue"],
            ),
            consumer_lag: gauge(
                "sigloop_consumer_lag",
                "Log entries appended but not yet committed by the processor.",
            ),
            processed_offset: gauge(
                "sigloop_processed_offset",
                "The log sequence number the processor has committed.",
            ),
            batch_size: histogram(
                "sigloop_batch_size",
                "Log entries per processor batch.",
                exponential_buckets(1.0, 4.0, 8).expect("valid buckets"),
            ),
            batch_commit_seconds: histogram(
                "sigloop_batch_commit_seconds",
                "Time to commit one processor batch (effects and offset in one transaction).",
                exponential_buckets(0.0005, 2.0, 14).expect("valid buckets"),
            ),
            batch_commit_failures: {
                let metric = IntCounter::new(
                    "sigloop_batch_commit_failures_total",
                    "Processor batches whose commit failed (the state is reloaded and the batch read again); in the distributed mode also batches fenced because another instance took their partition.",
                )
                .expect("metric definitions are valid");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("metric names are unique");
                metric
            },
            append_seconds: histogram(
                "sigloop_log_append_seconds",
                "Time to append one request's events to the durable log.",
                exponential_buckets(0.0005, 2.0, 14).expect("valid buckets"),
            ),
            event_to_loop_seconds: histogram(
                "sigloop_event_to_loop_seconds",
                "From event time to the loop change it caused, on the processor's clock.",
                exponential_buckets(0.01, 4.0, 12).expect("valid buckets"),
            ),
            purged: counter_vec(
                "sigloop_purged_total",
                "Rows purged after the retention period, by table (events, dead_letters).",
                &["table"],
            ),
            kafka_consumer_lag: float_gauge_vec(
                "sigloop_kafka_consumer_lag",
                "Messages between the broker's high watermark and the offset committed in the database, per partition this instance owns.",
                &["topic", "partition"],
            ),
            kafka_partitions_owned: gauge(
                "sigloop_kafka_partitions_owned",
                "Distributed mode: partition numbers this instance holds (its accounts' share); 0 between a revocation and the next assignment.",
            ),
            outbox_delivered: counter_vec(
                "sigloop_outbox_delivered_total",
                "Loop events and dead letters delivered from the outbox, by sink.",
                &["sink"],
            ),
            loop_kpis,
            registry,
        }
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|error| format!("# failed to encode metrics: {error}\n"))
    }

    /// Sets the loop KPI gauges to `queues` (none when `None`: the figures could not be read) and
    /// renders, as one step.
    pub fn render_with_loop_kpis(&self, queues: Option<&[QueueKpis]>) -> String {
        let _refreshing = self
            .loop_kpis
            .refresh
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.loop_kpis.set(queues.unwrap_or_default());
        self.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Installs the global tracing subscriber once; later calls (tests) do nothing.
pub fn init_tracing(settings: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
