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
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// Loop events POSTed to HTTP endpoints, from the outbox.
    #[serde(default)]
    pub webhooks: Vec<WebhookSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Names the webhook's cursor (`webhook:NAME`); unique.
    pub name: String,
    pub url: String,
    /// Loop events of these queues, and of the queues of these teams; neither: every loop event.
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    /// The environment variable holding the HMAC-SHA256 key that signs each request (secrets stay
    /// out of files); unset: requests are not signed.
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
}

fn default_webhook_timeout() -> u64 {
    10
}

/// The distributed mode's Kafka: where events come from and where loop events and dead letters go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// On, events are consumed from `topics` by the consumer group `group_id` (and `POST /v1/events`
    /// produces to them) instead of going through the database's event log.
    pub enabled: bool,
    /// `bootstrap.servers`: comma-separated host:port pairs.
    pub brokers: String,
    pub group_id: String,
    /// Topics consumed; an event's type decides which one `POST /v1/events` produces it to.
    pub topics: KafkaTopics,
    /// Extra librdkafka properties for the consumer (they win over sigloop's own choices).
    pub consumer: std::collections::BTreeMap<String, String>,
    /// Extra librdkafka properties for the producers.
    pub producer: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTopics {
    pub tickets: String,
    pub usage: String,
    pub surveys: String,
    pub accounts: String,
    /// Operator actions (acknowledge, resolve, ...), keyed like the events of their loop's account.
    pub actions: String,
    /// Loop events out, from the outbox.
    pub loops: String,
    /// Rejected messages out, with the error in headers.
    pub dead_letters: String,
}

impl Default for KafkaTopics {
    fn default() -> Self {
        KafkaTopics {
            tickets: "sigloop.tickets".to_owned(),
            usage: "sigloop.usage".to_owned(),
            surveys: "sigloop.surveys".to_owned(),
            accounts: "sigloop.accounts".to_owned(),
            actions: "sigloop.actions".to_owned(),
            loops: "sigloop.loops".to_owned(),
            dead_letters: "sigloop.dead-letters".to_owned(),
        }
    }
}

impl KafkaTopics {
    /// The topics the consumer group reads, each once: several event types may share a topic (one
    /// topic for everything keeps an account's events in the order they were produced).
    pub fn inbound(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = Vec::with_capacity(5);
        for topic in [
            &self.tickets,
            &self.usage,
            &self.surveys,
            &self.accounts,
            &self.actions,
        ] {
            if !topics.contains(&topic.as_str()) {
                topics.push(topic);
            }
        }
        topics
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            enabled: false,
            brokers: "127.0.0.1:9092".to_owned(),
            group_id: "sigloop".to_owned(),
            topics: KafkaTopics::default(),
            consumer: Default::default(),
            producer: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JourneySettings {
    /// Aggregate events into journey figures and run the journey detectors. Off, sigloop is a CS
    /// router only (the benchmark measures the cost this way).
    pub enabled: bool,
    /// Journey buckets whose window started longer ago than this are purged.
    pub retention_days: u32,
    /// The distributed mode: how often each instance judges the fleet's merged journey figures for
    /// the journey loop keys it owns (every instance sees only its partitions' events).
    pub fleet_evaluation_millis: u64,
}

impl Default for JourneySettings {
    fn default() -> Self {
        JourneySettings {
            enabled: true,
            retention_days: 400,
            fleet_evaluation_millis: 1000,
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
    /// Who may call `/v1`: everyone (`open`), or requests with a valid API token (`tokens`).
    #[serde(default)]
    pub auth: AuthMode,
    /// `open` on an address other than loopback is refused at start-up unless this is true.
    #[serde(default)]
    pub allow_open: bool,
    /// Every request is answered within this many seconds (503 `timeout` otherwise); longer than
    /// `wait_timeout_secs`, which waiting requests may use up.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// A connection must send a request's whole head (request line and headers) within this many
    /// seconds of starting to wait for it, else it is closed: a client that opens connections and
    /// sends nothing, or its headers byte by byte, cannot hold them open. Idle keep-alive
    /// connections are closed after as long.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
}

fn default_request_timeout() -> u64 {
    60
}

fn default_header_timeout() -> u64 {
    10
}

/// `[server] auth`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No authentication: every caller may do everything (the embedded default on 127.0.0.1).
    #[default]
    Open,
    /// Every `/v1` request but the OpenAPI document needs `Authorization: Bearer <token>`, a token
    /// made with `sigloop token create`, whose scopes and team decide what it may do.
    Tokens,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Open => "open",
            AuthMode::Tokens => "tokens",
        }
    }
}

impl ServerSettings {
    /// Why the server must not start as configured: `auth = "open"` on an address that other
    /// machines can reach, without `allow_open = true`. `listen` is taken as given (the command
    /// line's `--listen` may have replaced the file's value after validation).
    pub fn open_listen_problem(&self) -> Option<String> {
        if self.auth != AuthMode::Open || self.allow_open || is_loopback(&self.listen) {
            return None;
        }
        Some(format!(
            "refusing to listen on {} with server.auth = \"open\": anyone who can reach that \
             address could read and act on every loop. Set server.auth = \"tokens\" \
             (SIGLOOP__SERVER__AUTH=tokens) and create tokens with `sigloop token create`, or set \
             server.allow_open = true (SIGLOOP__SERVER__ALLOW_OPEN=true) to run open on purpose, \
             e.g. behind a gateway that authenticates",
            self.listen
        ))
    }
}

/// True for an address only this machine can reach: 127.0.0.0/8, ::1 (also IPv4-mapped) and
/// `localhost`. Anything else, host names included, counts as reachable from elsewhere.
pub fn is_loopback(listen: &str) -> bool {
    if let Ok(address) = listen.parse::<std::net::SocketAddr>() {
        return address.ip().to_canonical().is_loopback();
    }
    let host = listen
        .rsplit_once(':')
        .map_or(listen, |(host, _port)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.to_canonical().is_loopback();
    }
    host.eq_ignore_ascii_case("localhost")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    Off,
    Normal,
    Full,
    Extra,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageBackend {
    /// A SQLite file (`path`): the embedded mode.
    #[default]
    Sqlite,
    /// A PostgreSQL database (`url`), which any number of instances can share.
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    #[serde(default)]
    pub backend: StorageBackend,
    /// The SQLite file of the embedded mode.
    pub path: PathBuf,
    /// The PostgreSQL connection URL, e.g. `postgres://sigloop@db:5432/sigloop`.
    #[serde(default)]
    pub url: String,
    /// Largest number of PostgreSQL connections.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// `full` (the default) makes every 2xx survive power loss.
    pub synchronous: Synchronous,
    /// Processed events and dead letters older than this are purged; also the duplicate-detection window.
    pub retention_days: u32,
    pub purge_interval_secs: u64,
}

fn default_pool_size() -> u32 {
    16
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
        if self.server.request_timeout_secs <= self.server.wait_timeout_secs {
            problems.push(format!(
                "sigloop: server.request_timeout_secs ({}) must be larger than server.wait_timeout_secs \
                 ({}): POST /v1/events?wait=true and loop actions may wait that long before answering",
                self.server.request_timeout_secs, self.server.wait_timeout_secs
            ));
        }
        if self.server.header_timeout_secs == 0 {
            problems.push("sigloop: server.header_timeout_secs must be at least 1".to_owned());
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
        if self.storage.backend == StorageBackend::Postgres && self.storage.url.is_empty() {
            problems.push(
                "sigloop: storage.url must be set when storage.backend is postgres".to_owned(),
            );
        }
        if self.storage.pool_size == 0 {
            problems.push("sigloop: storage.pool_size must be at least 1".to_owned());
        }
        if self.kafka.enabled && self.kafka.brokers.trim().is_empty() {
            problems
                .push("sigloop: kafka.brokers must be set when kafka.enabled is true".to_owned());
        }
        let topics = &self.kafka.topics;
        if self.kafka.enabled
            && [
                &topics.tickets,
                &topics.usage,
                &topics.surveys,
                &topics.accounts,
            ]
            .contains(&&topics.actions)
        {
            problems.push(
                "sigloop: kafka.topics.actions must be a topic of its own (its messages are operator actions, not events)"
                    .to_owned(),
            );
        }
        if self.kafka.enabled && self.storage.backend != StorageBackend::Postgres {
            problems.push(
                "sigloop: kafka.enabled needs storage.backend = \"postgres\" (instances share it)"
                    .to_owned(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for webhook in &self.webhooks {
            if webhook.name.trim().is_empty() || !names.insert(webhook.name.as_str()) {
                problems.push(format!(
                    "sigloop: webhooks need a unique, non-empty name (`{}`)",
                    webhook.name
                ));
            }
            if !(webhook.url.starts_with("http://") || webhook.url.starts_with("https://")) {
                problems.push(format!(
                    "sigloop: webhook `{}`: url `{}` is not an http:// or https:// URL",
                    webhook.name, webhook.url
                ));
            }
        }
        if self.journeys.retention_days == 0 {
            problems.push("sigloop: journeys.retention_days must be at least 1".to_owned());
        }
        if self.journeys.fleet_evaluation_millis == 0 {
            problems
                .push("sigloop: journeys.fleet_evaluation_millis must be at least 1".to_owned());
        }
        problems
    }
}
