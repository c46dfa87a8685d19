//! Test helpers: the real application on port 0 with a fresh SQLite database per test, spoken to over
//! HTTP; the real binary as a child process for restarts and crashes; and, for the distributed mode,
//! a fresh PostgreSQL schema and a Kafka-protocol broker per test ([`TestKafka`]).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sigloop::app::Application;
use sigloop::config::Config;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db_path: PathBuf,
    pub directory: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The embedded configuration with test overrides (`SIGLOOP__...` style pairs).
pub fn config_with(db_path: &Path, overrides: &[(&str, &str)]) -> Config {
    config_with_settings(db_path, "", overrides)
}

/// [`config_with`], with `extra` TOML appended to the embedded `sigloop.toml` (for what environment
/// variables cannot say, such as `[[webhooks]]`).
pub fn config_with_settings(db_path: &Path, extra: &str, overrides: &[(&str, &str)]) -> Config {
    let mut env: Vec<(String, String)> = vec![
        (
            "SIGLOOP__SERVER__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        (
            "SIGLOOP__PROCESSOR__BATCH_MILLIS".to_owned(),
            "5".to_owned(),
        ),
    ];
    env.extend(
        overrides
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    let mut sources = sigloop::config::ConfigSources::embedded();
    sources.settings.push('\n');
    sources.settings.push_str(extra);
    let mut config = Config::parse(&sources, env.into_iter()).expect("test config is valid");
    config.settings.storage.path = db_path.to_owned();
    config
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    /// The application in the distributed mode: the test's broker and a PostgreSQL database.
    pub async fn spawn_distributed(kafka: &TestKafka, postgres_url: &str) -> TestApp {
        TestApp::spawn_distributed_with(kafka, postgres_url, &[]).await
    }

    /// [`TestApp::spawn_distributed`] with more overrides.
    pub async fn spawn_distributed_with(
        kafka: &TestKafka,
        postgres_url: &str,
        extra: &[(&str, &str)],
    ) -> TestApp {
        let mut overrides = distributed(&kafka.settings(), postgres_url);
        overrides.extend(
            extra
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        let pairs: Vec<(&str, &str)> = overrides
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        TestApp::spawn_with(&pairs).await
    }

    /// The application with `extra` TOML appended to the embedded `sigloop.toml`.
    pub async fn spawn_with_settings(extra: &str) -> TestApp {
        let directory = tempfile::tempdir().expect("temporary directory");
        let db_path = directory.path().join("sigloop.db");
        let application = Application::build(config_with_settings(&db_path, extra, &[]))
            .await
            .expect("the application builds");
        TestApp::run(application, directory, db_path)
    }

    pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
        let directory = tempfile::tempdir().expect("temporary directory");
        let db_path = directory.path().join("sigloop.db");
        TestApp::spawn_on(directory, db_path, overrides).await
    }

    pub async fn spawn_on(
        directory: tempfile::TempDir,
        db_path: PathBuf,
        overrides: &[(&str, &str)],
    ) -> TestApp {
        let application = Application::build(config_with(&db_path, overrides))
            .await
            .expect("the application builds");
        TestApp::run(application, directory, db_path)
    }

    fn run(application: Application, directory: tempfile::TempDir, db_path: PathBuf) -> TestApp {
        let address = format!("http://127.0.0.1:{}", application.port());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        TestApp {
            address,
            client: reqwest::Client::new(),
            db_path,
            directory,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Stops the application gracefully and hands back its directory, to restart on the same file.
    pub async fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("the app task joins")
                .expect("the app stops cleanly");
        }
        (self.directory, self.db_path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request is sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request is sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts events and waits until they are processed.
    pub async fn ingest(&self, events: &[Value]) -> Value {
        let (status, body) = self.post_json("/v1/events?wait=true", &json!(events)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["processed"], true, "{body}");
        body
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request is sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request is sent");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    pub async fn action(&self, loop_id: &str, body: Value) -> (u16, Value) {
        self.post_json(&format!("/v1/loops/{loop_id}/actions"), &body)
            .await
    }

    /// `GET path` answers 400 `invalid_parameter` with a message.
    pub async fn assert_invalid_parameter(&self, path: &str) {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{path}: {body}");
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{path}: {body}"
        );
    }

    /// The sum of a counter's series (every label set) on `/metrics`.
    pub async fn counter_total(&self, name: &str) -> f64 {
        let (status, text) = self.get_text("/metrics").await;
        assert_eq!(status, 200);
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Distributed mode: how many partition numbers the instance holds now
    /// (`sigloop_kafka_partitions_owned`).
    pub async fn partitions_owned(&self) -> usize {
        self.counter_total("sigloop_kafka_partitions_owned").await as usize
    }

    pub async fn loops(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/loops?{query}")).await;
        assert_eq!(status, 200, "{body}");
        body["loops"].as_array().expect("loops array").clone()
    }
}

/// Waits until the instances of one consumer group hold `each` partitions apiece (a rebalance has
/// settled), or fails the test after 30 s: a test about sharing partitions must not start while one
/// instance still holds them all.
pub async fn wait_for_partitions(apps: &[&TestApp], each: usize) {
    let started = std::time::Instant::now();
    loop {
        let mut held = Vec::with_capacity(apps.len());
        for app in apps {
            held.push(app.partitions_owned().await);
        }
        if held.iter().all(|count| *count == each) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the instances hold {held:?} partitions after 30 s, not {each} each"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// 2026-03-02T09:00:00Z plus `minutes`.
pub fn time(minutes: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z").unwrap();
    (base + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn event(event_type: &str, id: &str, minutes: i64, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "test-suite",
        "type": event_type,
        "time": time(minutes),
        "data": data,
    })
}

pub fn account(account_id: &str, tier: &str, csm: Option<&str>) -> Value {
    let mut data = json!({
        "account_id": account_id,
        "name": format!("{account_id} Inc"),
        "tier": tier,
        "arr": 120000,
        "region": "emea",
        "segment": "saas",
        "lifecycle_stage": "adoption",
        "started_at": "2025-06-01T00:00:00Z",
    });
    if let Some(csm) = csm {
        data["csm"] = json!(csm);
    }
    event(
        "account.upserted",
        &format!("account-{account_id}"),
        0,
        data,
    )
}

pub fn nps(id: &str, account_id: &str, score: u8, minutes: i64, comment: Option<&str>) -> Value {
    let mut data = json!({"response_id": format!("r-{id}"), "account_id": account_id, "kind": "nps", "score": score});
    if let Some(comment) = comment {
        data["comment"] = json!(comment);
    }
    event("survey.responded", id, minutes, data)
}

pub fn ticket(id: &str, account_id: &str, minutes: i64, subject: &str, priority: &str) -> Value {
    event(
        "ticket.opened",
        id,
        minutes,
        json!({
            "ticket_id": format!("T-{id}"),
            "account_id": account_id,
            "subject": subject,
            "body": subject,
            "priority": priority,
            "channel": "email",
        }),
    )
}

/// The sigloop binary, built by cargo for these tests (with the failpoints feature).
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_sigloop")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// `sigloop serve` as a child process.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
}

impl ServerProcess {
    pub fn start(db_path: &Path, env: &[(&str, &str)]) -> ServerProcess {
        let port = free_port();
        let mut command = Command::new(binary());
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(db_path)
            .env("SIGLOOP__LOG__LEVEL", "warn")
            .env_remove("SIGLOOP_FAILPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("the server starts");
        ServerProcess {
            child,
            address: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn wait_until_healthy(&mut self) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(response) = client.get(format!("{}/healthz", self.address)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server exited before it was healthy: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to die (a failpoint kills it) and returns how it ended.
    pub async fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not die at its failpoint"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn terminate(mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sigloop export --db PATH` and returns its standard output.
pub fn export(db_path: &Path) -> String {
    let output = Command::new(binary())
        .args(["export", "--db"])
        .arg(db_path)
        .env("SIGLOOP__LOG__LEVEL", "warn")
        .output()
        .expect("export runs");
    assert!(
        output.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("export is UTF-8")
}

/// `sigloop ARGS` with quiet logs and none of the test runner's sigloop variables leaking in.
pub fn sigloop(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("SIGLOOP__LOG__LEVEL", "warn")
        .env_remove("SIGLOOP_FAILPOINT")
        .env_remove("SIGLOOP_CONFIG_DIR")
        .stdin(Stdio::null());
    command
}

pub fn run(command: &mut Command) -> Output {
    command.output().expect("the sigloop binary runs")
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("standard output is UTF-8")
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Fails with everything the child said, so a failing test explains itself.
pub fn assert_exit_code(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        stderr_of(output)
    );
}

/// Each line of NDJSON text, parsed.
pub fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("line {} is not JSON ({error}): {line}", index + 1))
        })
        .collect()
}

/// The PostgreSQL database the tests use: `SIGLOOP_TEST_POSTGRES_URL`, else the machine's `test`.
pub fn postgres_base_url() -> String {
    std::env::var("SIGLOOP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, empty schema in the test database and a URL whose connections use it, so that every
/// test (and every process of one test) starts from nothing. Fails the test when PostgreSQL cannot
/// be reached: the suite needs it.
pub async fn fresh_postgres_url() -> String {
    use sqlx::Connection;
    let base = postgres_base_url();
    let mut connection = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL at {base} is needed by this test: {error}"));
    let schema = format!("t_{}_{:016x}", std::process::id(), rand::random::<u64>());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut connection)
        .await
        .expect("the test schema is created");
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options[search_path]={schema}")
}

/// sigloop's topics: the key naming each in `[kafka.topics]` (and in [`TestKafka::topic`]), and its
/// default name.
pub const SIGLOOP_TOPICS: [(&str, &str); 7] = [
    ("tickets", "sigloop.tickets"),
    ("usage", "sigloop.usage"),
    ("surveys", "sigloop.surveys"),
    ("accounts", "sigloop.accounts"),
    ("actions", "sigloop.actions"),
    ("loops", "sigloop.loops"),
    ("dead_letters", "sigloop.dead-letters"),
];

/// How long a fetch may wait on the broker for data, in milliseconds. librdkafka's default is 500,
/// and some brokers (Nisshi) wait that long on every fetch even when data arrives meanwhile, which
/// makes every hop of a test half a second slower. The tests' own readers get it, and so does
/// sigloop's consumer through `[kafka.consumer]` (it chooses 50 itself today; the tests should not
/// slow down tenfold if that choice changes).
const FETCH_WAIT_MAX_MS: &str = "50";

enum Broker {
    /// librdkafka's mock cluster, in this process, over TCP; dropped with the test.
    Mock(rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
    /// A broker process given by `SIGLOOP_TEST_KAFKA_BROKERS`, shared with every other test.
    External,
}

/// The Kafka-protocol broker of one test, with its topics created.
///
/// By default it is librdkafka's mock cluster, started for this test alone, so topics and groups
/// keep sigloop's default names. With `SIGLOOP_TEST_KAFKA_BROKERS=host:port` it is that broker (CI
/// runs the Kafka tests a second time against a Nisshi process, see `.ci/kafka-broker`): every test
/// shares it, so each test's topics and consumer groups carry a random prefix of its own
/// (`t3f9a1c07.sigloop.surveys`), and the topics are created through `.ci/kafka-broker create-topics`
/// (Nisshi has no CreateTopics API, and sigloop does not create topics). Tests see only
/// [`TestKafka::brokers`], [`TestKafka::topic`], [`TestKafka::group`] and the settings made from
/// them ([`TestKafka::settings`], [`distributed`]), so they run unchanged against either broker.
pub struct TestKafka {
    broker: Broker,
    brokers: String,
    /// Empty on the mock cluster; `t<random hex>.` on a shared broker.
    prefix: String,
    /// The names given to [`TestKafka::with_topics`].
    created: Vec<String>,
}

impl TestKafka {
    /// A broker with sigloop's seven topics, `partitions` each.
    pub fn new(partitions: i32) -> TestKafka {
        let names: Vec<&str> = SIGLOOP_TOPICS.iter().map(|(key, _)| *key).collect();
        TestKafka::with_topics(partitions, &names)
    }

    /// A broker with only these topics, `partitions` each. A name is a key of sigloop's topics
    /// (`tickets`, `loops`, `dead_letters`, ...: the default topic) or a topic name of the test's own.
    pub fn with_topics(partitions: i32, names: &[&str]) -> TestKafka {
        let created: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        match std::env::var("SIGLOOP_TEST_KAFKA_BROKERS") {
            Ok(brokers) if !brokers.trim().is_empty() => {
                let kafka = TestKafka {
                    broker: Broker::External,
                    brokers: brokers.trim().to_owned(),
                    prefix: format!("t{:08x}.", rand::random::<u32>()),
                    created,
                };
                let topics: Vec<String> = names.iter().map(|name| kafka.topic(name)).collect();
                create_external_topics(&kafka.brokers, partitions, &topics);
                kafka
            }
            _ => {
                let cluster =
                    rdkafka::mocking::MockCluster::new(1).expect("the mock cluster starts");
                let kafka = TestKafka {
                    brokers: cluster.bootstrap_servers(),
                    broker: Broker::Mock(cluster),
                    prefix: String::new(),
                    created,
                };
                if let Broker::Mock(cluster) = &kafka.broker {
                    for name in names {
                        cluster
                            .create_topic(&kafka.topic(name), partitions, 1)
                            .expect("the topic is created");
                    }
                }
                kafka
            }
        }
    }

    /// `bootstrap.servers` for clients of this broker.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The real name of a topic created with this broker: `surveys` is `sigloop.surveys` on the mock
    /// cluster and `t3f9a1c07.sigloop.surveys` on a shared broker; a name of the test's own gets the
    /// same prefix.
    pub fn topic(&self, name: &str) -> String {
        assert!(
            self.created.iter().any(|created| created == name),
            "topic `{name}` was not created for this test (created: {:?})",
            self.created
        );
        self.prefixed(name)
    }

    fn prefixed(&self, name: &str) -> String {
        let base = SIGLOOP_TOPICS
            .iter()
            .find(|(key, _)| *key == name)
            .map_or(name, |(_, default)| *default);
        format!("{}{base}", self.prefix)
    }

    /// A consumer group id unique to this test on this broker (`sigloop` on the mock cluster).
    pub fn group_id(&self) -> String {
        self.group("sigloop")
    }

    /// [`TestKafka::group_id`] for a test that needs several groups.
    pub fn group(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// sigloop's Kafka settings for this broker: enabled, its topics (every one of sigloop's
    /// topics, named as [`TestKafka::topic`] names them), [`TestKafka::group_id`] and the consumer
    /// properties the tests need.
    pub fn settings(&self) -> sigloop::config::settings::KafkaSettings {
        use sigloop::config::settings::{KafkaSettings, KafkaTopics};
        KafkaSettings {
            enabled: true,
            brokers: self.brokers.clone(),
            group_id: self.group_id(),
            topics: KafkaTopics {
                tickets: self.prefixed("tickets"),
                usage: self.prefixed("usage"),
                surveys: self.prefixed("surveys"),
                accounts: self.prefixed("accounts"),
                actions: self.prefixed("actions"),
                loops: self.prefixed("loops"),
                dead_letters: self.prefixed("dead_letters"),
            },
            consumer: [("fetch.wait.max.ms".to_owned(), FETCH_WAIT_MAX_MS.to_owned())].into(),
            ..KafkaSettings::default()
        }
    }

    /// A client configuration for the test's own consumers: this broker and short fetch waits.
    pub fn consumer_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
        config
    }

    /// A client configuration for the test's own producers.
    pub fn producer_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }
}

/// Creates `topics` on the broker of `SIGLOOP_TEST_KAFKA_BROKERS` with `.ci/kafka-broker`, which
/// knows how (Nisshi's own command line). The first broker of the list is the one asked.
fn create_external_topics(brokers: &str, partitions: i32, topics: &[String]) {
    let first = brokers.split(',').next().unwrap_or_default().trim();
    let (host, port) = first.rsplit_once(':').unwrap_or_else(|| {
        panic!("SIGLOOP_TEST_KAFKA_BROKERS must be host:port[,host:port...], not `{brokers}`")
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/kafka-broker");
    let output = Command::new(&script)
        .arg("create-topics")
        .arg("--only")
        .args(topics)
        .env("SIGLOOP_KAFKA_HOST", host)
        .env("SIGLOOP_KAFKA_PORT", port)
        .env("SIGLOOP_KAFKA_PARTITIONS", partitions.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{} runs: {error}", script.display()));
    assert!(
        output.status.success(),
        "{} create-topics failed ({}):\nstdout:\n{}\nstderr:\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Kafka settings as `SIGLOOP__KAFKA__...` overrides. A librdkafka property's name has dots, which
/// an environment variable may hold (the process environment is not a shell); its value is quoted
/// so that `50` stays the string librdkafka takes rather than becoming a TOML integer.
pub fn kafka_overrides(
    settings: &sigloop::config::settings::KafkaSettings,
) -> Vec<(String, String)> {
    let topics = &settings.topics;
    let mut overrides = vec![
        (
            "SIGLOOP__KAFKA__ENABLED".to_owned(),
            settings.enabled.to_string(),
        ),
        (
            "SIGLOOP__KAFKA__BROKERS".to_owned(),
            settings.brokers.clone(),
        ),
        (
            "SIGLOOP__KAFKA__GROUP_ID".to_owned(),
            settings.group_id.clone(),
        ),
    ];
    for (key, topic) in [
        ("TICKETS", &topics.tickets),
        ("USAGE", &topics.usage),
        ("SURVEYS", &topics.surveys),
        ("ACCOUNTS", &topics.accounts),
        ("ACTIONS", &topics.actions),
        ("LOOPS", &topics.loops),
        ("DEAD_LETTERS", &topics.dead_letters),
    ] {
        overrides.push((format!("SIGLOOP__KAFKA__TOPICS__{key}"), topic.clone()));
    }
    for (section, properties) in [
        ("CONSUMER", &settings.consumer),
        ("PRODUCER", &settings.producer),
    ] {
        for (name, value) in properties {
            overrides.push((
                format!("SIGLOOP__KAFKA__{section}__{name}"),
                toml::Value::String(value.clone()).to_string(),
            ));
        }
    }
    overrides
}

/// Overrides that put the application in the distributed mode: Kafka as `kafka` says (usually
/// [`TestKafka::settings`]) and storage in the PostgreSQL of `postgres_url`.
pub fn distributed(
    kafka: &sigloop::config::settings::KafkaSettings,
    postgres_url: &str,
) -> Vec<(String, String)> {
    let mut overrides = kafka_overrides(kafka);
    overrides.extend([
        (
            "SIGLOOP__STORAGE__BACKEND".to_owned(),
            "postgres".to_owned(),
        ),
        ("SIGLOOP__STORAGE__URL".to_owned(), postgres_url.to_owned()),
        ("SIGLOOP__STORAGE__POOL_SIZE".to_owned(), "4".to_owned()),
    ]);
    overrides
}
