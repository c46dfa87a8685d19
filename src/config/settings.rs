//! `sigloop.toml`: server, storage, processor, clock and log settings.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub processor: ProcessorSettings,
    pub clock: ClockSettings,
    pub log: LogSettings,
    #[serde(default)]
    pub journeys: JourneySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneySettings {
    /// Aggregate events into journey figures and run the journey detectors. Off, sigloop is a CS
    /// router only (the benchmark measures the cost this way).
    pub enabled: bool,
    /// Journey buckets whose window started longer ago than this are purged.
    pub retention_days: u32,
}

impl Default for JourneySettings {
    fn default() -> Self {
        JourneySettings {
            enabled: true,
            retention_days: 400,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (tests do this).
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_events_per_request: usize,
    /// Default and largest `timeout` of `POST /v1/events?wait=true`, in seconds.
    pub wait_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    Off,
    Normal,
    Full,
    Extra,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// The SQLite file of the embedded mode.
    pub path: PathBuf,
    /// `full` (the default) makes every 2xx survive power loss.
    pub synchronous: Synchronous,
    /// Processed events and dead letters older than this are purged; also the duplicate-detection window.
    pub retention_days: u32,
    pub purge_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorSettings {
    /// Largest number of logged events processed and committed in one transaction.
    pub batch_size: usize,
    /// How long the processor sleeps when the log is empty before it looks again, in milliseconds
    /// (appends also wake it at once).
    pub batch_millis: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// Loop timestamps and deadlines use the wall clock, read once per batch.
    Live,
    /// Loop timestamps use the largest event time processed so far: replays reproduce them exactly.
    EventTime,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSettings {
    pub mode: ClockMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Settings {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "sigloop: server.listen `{}` is not an address such as 127.0.0.1:8080",
                self.server.listen
            ));
        }
        if self.server.max_events_per_request == 0 {
            problems.push("sigloop: server.max_events_per_request must be at least 1".to_owned());
        }
        if self.server.max_body_bytes < 1024 {
            problems.push("sigloop: server.max_body_bytes must be at least 1024".to_owned());
        }
        if self.processor.batch_size == 0 {
            problems.push("sigloop: processor.batch_size must be at least 1".to_owned());
        }
        if self.storage.retention_days == 0 {
            problems.push("sigloop: storage.retention_days must be at least 1".to_owned());
        }
        if self.storage.purge_interval_secs == 0 {
            problems.push("sigloop: storage.purge_interval_secs must be at least 1".to_owned());
        }
        if self.journeys.retention_days == 0 {
            problems.push("sigloop: journeys.retention_days must be at least 1".to_owned());
        }
        problems
    }
}
