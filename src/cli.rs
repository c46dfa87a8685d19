//! The command line: `serve`, `demo`, `gen`, `ingest`, `explain`, `export`, `replay`, `diff`, `bench`,
//! `produce`, `token`.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{shutdown_on_signals, Application};
use crate::config::Config;
use crate::pipeline::core::{BatchClock, Core, CoreState, EntryKind, LogEntry};
use crate::pipeline::now_millis;
use crate::storage::{LoopDetail, SqliteStorage, Storage};

#[derive(Debug, Parser)]
#[command(
    name = "sigloop",
    version,
    about = "Closed-loop signal router for customer teams"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: HTTP API, processor, purge.
    Serve(ServeArgs),
    /// Run the service and feed it a generated, realistic stream.
    Demo(ServeArgs),
    /// Write deterministic NDJSON events (accounts first) to stdout or --out.
    Gen(GenArgs),
    /// Send an NDJSON file (or - for stdin) to a running sigloop over HTTP.
    Ingest(IngestArgs),
    /// Print the dry-run decision for each event of an NDJSON file (or -), as on a fresh instance.
    Explain(ExplainArgs),
    /// Write every loop in the canonical form: NDJSON sorted by key and generation.
    Export(ExportArgs),
    /// Run an NDJSON file of events (and operator actions) through the pipeline on event time, into
    /// a fresh database, and write every loop as `export` does.
    Replay(ReplayArgs),
    /// Replay one NDJSON file under two configurations and list the loops they treat differently.
    Diff(DiffArgs),
    /// Measure the embedded pipeline end to end and stage by stage.
    Bench(crate::bench::BenchArgs),
    /// Produce events to the Kafka topics of the distributed mode: generated ones (accounts first),
    /// or the lines of an NDJSON file.
    Produce(ProduceArgs),
    /// Create, list and revoke the API tokens of `[server] auth = "tokens"`, in the configured
    /// storage (the SQLite file, or PostgreSQL); a running server sees changes at once.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token. Its secret is printed once, alone on standard output (the id and the rest on
    /// standard error); only its SHA-256 is stored.
    Create(TokenCreateArgs),
    /// List every token: id, name, scopes, team, times and status. Never a secret or a hash.
    List(TokenListArgs),
    /// Revoke a token: from now on its requests get 401. The token stays listed, as revoked.
    Revoke(TokenRevokeArgs),
}

/// Where tokens are stored: the configured storage.
#[derive(Debug, Args)]
pub struct TokenStoreArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// SQLite database file (overrides storage.path; the embedded mode).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Scopes: ingest (POST /v1/events), read (every GET of /v1 and POST /v1/explain), act (POST \
/v1/loops/{id}/actions), admin (everything). A token with --team sees and acts on that team's queues \
(routes.toml) and their loops only. Example:
  sigloop token create --scope read,act --team cs-enterprise --expires 90d --name ana.lima")]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub store: TokenStoreArgs,
    /// Comma-separated scopes: ingest, read, act, admin.
    #[arg(long, value_name = "SCOPES")]
    pub scope: String,
    /// Restrict the token to one team of routes.toml (its queues and their loops).
    #[arg(long)]
    pub team: Option<String>,
    /// Expiry: a duration from now (30d, 12h) or an RFC 3339 time (default: never).
    #[arg(long, value_name = "DURATION|TIME")]
    pub expires: Option<String>,
    /// The actor recorded for the token's actions (default: the token's id).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenListArgs {
    #[command(flatten)]
    pub store: TokenStoreArgs,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    pub store: TokenStoreArgs,
    /// The token's id (`tok_...`, as `token list` shows it).
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Kafka bootstrap servers (overrides kafka.brokers).
    #[arg(long)]
    pub brokers: Option<String>,
    /// NDJSON file of events, or - for stdin (default: generated events).
    #[arg(long)]
    pub file: Option<String>,
    #[command(flatten)]
    pub stream: StreamArgs,
}

/// The generated stream of `gen` and `produce`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    #[arg(long, default_value_t = 100)]
    pub accounts: usize,
    #[arg(long, default_value_t = 1000)]
    pub events: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl StreamArgs {
    pub fn options(&self) -> crate::gen::GenOptions {
        crate::gen::GenOptions {
            accounts: self.accounts,
            events: self.events,
            seed: self.seed,
            ..crate::gen::GenOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Directory with sigloop.toml, taxonomy.toml, signals.toml, routes.toml (default: ./config if it
    /// exists, else the embedded defaults).
    #[arg(long, env = "SIGLOOP_CONFIG_DIR")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.config.as_deref(), std::env::vars())?)
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Address to listen on (overrides server.listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// SQLite database file (overrides storage.path).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Feed a generated stream while serving.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Output file (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// NDJSON file, or - for stdin.
    pub file: String,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Events per request (at most 10,000).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Answer each request only once its events are processed.
    #[arg(long)]
    pub wait: bool,
    /// API token with the `ingest` scope, for a server with `auth = "tokens"`.
    #[arg(long, env = "SIGLOOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// NDJSON file, or - for stdin.
    pub file: String,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Indent the JSON.
    #[arg(long)]
    pub pretty: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// SQLite database file (overrides storage.path).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Output file (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
A line whose JSON object has a top-level \"loop_id\" is an operator action, in the form the log \
stores it: {\"loop_id\": ID, \"action\": \"acknowledge\"|\"start\"|\"resolve\"|\"close\"|\"reopen\"|\"assign\"|\"comment\", \
\"actor\": NAME, \"note\": TEXT or null, \"time\": MILLIS} (plus \"reason\" for close, \"owner\" for assign). \
Every other line is a CloudEvents event. Actions apply in file order; the clock is the largest event \
or action time so far.")]
pub struct ReplayArgs {
    /// NDJSON file of events and action lines.
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,
    /// Directory with taxonomy.toml, signals.toml, routes.toml (and optionally sigloop.toml); a
    /// missing file means the embedded one (default: the embedded configuration).
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// SQLite database to create and keep; it must not exist yet (default: a temporary one, removed
    /// afterwards).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Output file (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit with status 2 when a line was rejected or an action refused (they are always reported
    /// on stderr).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Loops are matched by key and generation. Each difference is one line, sorted by key: opened only by \
B, opened only by A, closed differently (state or close reason), re-routed (queue), re-owned (owner); \
then a summary line of counts. The exit status is 0 whether or not there are differences, and \
non-zero only on errors.")]
pub struct DiffArgs {
    /// NDJSON file of events and action lines, as for `replay`.
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,
    /// Configuration directory; give it twice: A, then B.
    #[arg(long = "config", value_name = "DIR", required = true, num_args = 1)]
    pub configs: Vec<PathBuf>,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("Failed to start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Demo(mut args) => {
                args.demo = true;
                // Keep generated data out of the real database unless asked.
                args.db
                    .get_or_insert_with(|| PathBuf::from("sigloop-demo.db"));
                serve(args).await
            }
            Command::Gen(args) => generate(args),
            Command::Ingest(args) => ingest(args).await,
            Command::Explain(args) => explain(args),
            Command::Export(args) => export(args).await,
            Command::Replay(args) => replay(args).await,
            Command::Diff(args) => diff(args).await,
            Command::Bench(args) => crate::bench::run(args).await,
            Command::Produce(args) => produce(args).await,
            Command::Token(command) => token(command).await,
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.config.load()?;
    if let Some(listen) = args.listen {
        config.settings.server.listen = listen;
    }
    if let Some(db) = args.db {
        config.settings.storage.path = db;
    }
    crate::telemetry::init_tracing(&config.settings.log);
    let application = Application::build(config).await?;
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone());
    if args.demo {
        let port = application.port();
        tracing::info!("Demo: feeding generated events; open http://127.0.0.1:{port}/v1/queues");
        tokio::spawn(feed_demo(
            application.state().clone(),
            shutdown.child_token(),
        ));
    }
    application.run_until_stopped(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Feeds about 400 events per second through the same ingest path as HTTP.
async fn feed_demo(state: crate::api::AppState, shutdown: CancellationToken) {
    let options = crate::gen::GenOptions {
        accounts: 300,
        events: 1_000_000,
        seed: now_millis() as u64,
        start: now_millis() - 21 * crate::domain::MILLIS_PER_DAY,
    };
    let mut events = crate::gen::generate(&options);
    loop {
        let batch: Vec<String> = events.by_ref().take(100).collect();
        if batch.is_empty() {
            return;
        }
        let items: Vec<&[u8]> = batch.iter().map(String::as_bytes).collect();
        if let Err(error) = state
            .inner
            .ingestor
            .ingest(&items, "demo", now_millis())
            .await
        {
            tracing::error!(error = %error, "The demo feeder failed to append events.");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

fn generate(args: GenArgs) -> anyhow::Result<ExitCode> {
    let options = args.stream.options();
    match args.out {
        Some(path) => {
            let file = std::fs::File::create(&path)
                .with_context(|| format!("Failed to create {}", path.display()))?;
            let mut out = BufWriter::new(file);
            crate::gen::write_ndjson(&options, &mut out)?;
            out.flush()?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            crate::gen::write_ndjson(&options, &mut out)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.config.load()?;
    if let Some(brokers) = args.brokers {
        config.settings.kafka.brokers = brokers;
    }
    let producer = crate::kafka::producer::EventProducer::new(&config.settings.kafka)
        .context("Failed to create the Kafka producer")?;
    let started = std::time::Instant::now();
    let totals = match &args.file {
        Some(file) => {
            let reader = open_input(file)?;
            crate::kafka::producer::produce_lines(&producer, reader.lines(), 10_000).await?
        }
        None => {
            let lines = crate::gen::generate(&args.stream.options()).map(Ok);
            crate::kafka::producer::produce_lines(&producer, lines, 10_000).await?
        }
    };
    eprintln!(
        "sigloop produce: {} events produced to {} ({} rejected lines) in {:.1} s",
        totals.produced,
        config.settings.kafka.brokers,
        totals.rejected,
        started.elapsed().as_secs_f64()
    );
    Ok(if totals.rejected > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn open_input(file: &str) -> anyhow::Result<Box<dyn BufRead + Send>> {
    if file == "-" {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    let opened = std::fs::File::open(file).with_context(|| format!("Failed to open {file}"))?;
    Ok(Box::new(std::io::BufReader::new(opened)))
}

async fn ingest(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let reader = open_input(&args.file)?;
    let batch_size = args.batch_size.clamp(1, 10_000);
    let totals = crate::ingest::client::send_ndjson(
        reader,
        &args.url,
        batch_size,
        args.wait,
        args.token.as_deref(),
    )
    .await?;
    eprintln!(
        "sigloop ingest: {} accepted, {} duplicates, {} rejected in {} requests",
        totals.accepted, totals.duplicates, totals.rejected, totals.requests
    );
    Ok(if totals.rejected > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Explains each event against a fresh in-memory state, then applies it, so later events see the
/// account directory and loops the earlier ones built. Nothing is stored.
fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let core = Core::new(&config).map_err(|problems| crate::config::ConfigError { problems })?;
    let mut state = CoreState::default();
    let reader = open_input(&args.file)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut rejected = 0;
    for (index, line) in reader.lines().enumerate() {
        let line = line.context("Failed to read the input")?;
        if line.trim().is_empty() {
            continue;
        }
        let value = match crate::decode::decode_event(line.as_bytes()) {
            Ok(event) => {
                let now = state.clock.max(event.time);
                let explanation = core.explain(&state, &event, now);
                let entry = LogEntry {
                    seq: state.offset + 1,
                    kind: EntryKind::Event,
                    source: event.source.clone(),
                    id: event.id.clone(),
                    payload: line.clone(),
                };
                core.process_batch(&mut state, &[entry], BatchClock::EventTime);
                serde_json::json!({"line": index + 1, "explanation": explanation})
            }
            Err(rejection) => {
                rejected += 1;
                serde_json::json!({"line": index + 1, "rejected": rejection})
            }
        };
        if args.pretty {
            serde_json::to_writer_pretty(&mut out, &value)?;
        } else {
            serde_json::to_writer(&mut out, &value)?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(if rejected > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let path = args.db.unwrap_or(config.settings.storage.path);
    if !path.exists() {
        anyhow::bail!("no database at {}", path.display());
    }
    let storage = SqliteStorage::open(&path, config.settings.storage.synchronous)
        .await
        .with_context(|| format!("Failed to open the database {}", path.display()))?;
    let loops = storage.export().await?;
    write_export(&loops, args.out.as_deref())?;
    storage.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Writes loops in the canonical form to `out` or stdout: one loop detail view per line, in the
/// order given (storage's export order: key, then generation). `export` and `replay` share it, so
/// their bytes are the same.
fn write_export(loops: &[LoopDetail], out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let mut out: Box<dyn Write> = match out {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("Failed to create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout())),
    };
    for detail in loops {
        serde_json::to_writer(&mut out, &crate::api::views::loop_detail_view(detail))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = crate::replay::load_config(args.config.as_deref())?;
    let outcome = crate::replay::replay(&config, &args.events, args.db.as_deref()).await?;
    for problem in outcome
        .report
        .rejected
        .iter()
        .chain(&outcome.report.refused)
    {
        eprintln!("sigloop replay: {problem}");
    }
    write_export(&outcome.loops, args.out.as_deref())?;
    eprintln!(
        "sigloop replay: {}",
        outcome.report.summary(outcome.loops.len())
    );
    Ok(if args.strict && !outcome.report.is_clean() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

async fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let [config_a, config_b] = args.configs.as_slice() else {
        anyhow::bail!(
            "diff takes exactly two --config directories (A, then B); got {}",
            args.configs.len()
        );
    };
    let (side_a, side_b, loop_diff) = crate::replay::diff(&args.events, config_a, config_b).await?;
    // Rejected lines do not depend on the configuration (decoding does not read it): report them
    // once. Refused actions can differ, so each side reports its own.
    for problem in &side_a.report.rejected {
        eprintln!("sigloop diff: {problem}");
    }
    for (label, side) in [("A", &side_a), ("B", &side_b)] {
        for problem in &side.report.refused {
            eprintln!("sigloop diff: under {label}: {problem}");
        }
        eprintln!(
            "sigloop diff: {label} ({}): {}",
            side.config_dir.display(),
            side.report.summary(side.loops)
        );
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        let mut value = serde_json::to_value(&loop_diff)?;
        let object = value.as_object_mut().expect("a diff is an object");
        object.insert("a".to_owned(), side_a.to_json());
        object.insert("b".to_owned(), side_b.to_json());
        object.insert("summary".to_owned(), loop_diff.counts());
        serde_json::to_writer(&mut out, &value)?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(loop_diff.render_text(side_a.loops, side_b.loops).as_bytes())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

async fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let store = match &command {
        TokenCommand::Create(args) => &args.store,
        TokenCommand::List(args) => &args.store,
        TokenCommand::Revoke(args) => &args.store,
    };
    let mut config = store.config.load()?;
    if let Some(db) = &store.db {
        config.settings.storage.path = db.clone();
    }
    // Everything else this command says is on stdout and stderr; the log stays quiet.
    let database = crate::app::Database::open(&config.settings.storage).await?;
    let storage = database.storage();
    let outcome = match command {
        TokenCommand::Create(args) => create_token(storage.as_ref(), &config, args).await,
        TokenCommand::List(args) => list_tokens(storage.as_ref(), args.json).await,
        TokenCommand::Revoke(args) => revoke_token(storage.as_ref(), &args.id).await,
    };
    database.close().await;
    outcome
}

async fn create_token(
    storage: &dyn Storage,
    config: &Config,
    args: TokenCreateArgs,
) -> anyhow::Result<ExitCode> {
    use crate::api::auth;
    let now = now_millis();
    let scopes = auth::Scope::parse_list(&args.scope).map_err(anyhow::Error::msg)?;
    if let Some(team) = &args.team {
        if config.routes.team(team).is_none() {
            let known: Vec<&str> = config
                .routes
                .teams
                .iter()
                .map(|team| team.name.as_str())
                .collect();
            anyhow::bail!(
                "team `{team}` is not a team of routes.toml (teams: {})",
                known.join(", ")
            );
        }
    }
    let expires_at = args
        .expires
        .as_deref()
        .map(|value| auth::parse_expiry(value, now))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let (id, secret) = auth::generate_token();
    let name = args.name.unwrap_or_else(|| id.clone());
    auth::validate_name(&name).map_err(anyhow::Error::msg)?;
    let token = crate::storage::NewToken {
        id: id.clone(),
        secret_hash: auth::hash_secret(&secret),
        name,
        scopes: scopes
            .iter()
            .map(|scope| scope.as_str().to_owned())
            .collect(),
        team: args.team,
        created_at: now,
        expires_at,
    };
    storage
        .create_token(&token)
        .await
        .context("Failed to store the token")?;
    println!("{secret}");
    eprintln!(
        "sigloop token: created {id} (name {}; scopes {}; team {}; expires {}). The secret above \
         is shown only this once: only its hash is stored. Send it as `Authorization: Bearer <secret>`.",
        token.name,
        token.scopes.join(","),
        token.team.as_deref().unwrap_or("any"),
        expires_at.map_or_else(|| "never".to_owned(), crate::domain::format_millis),
    );
    if config.settings.server.auth != crate::config::settings::AuthMode::Tokens {
        eprintln!(
            "sigloop token: note: server.auth is \"open\" in this configuration; tokens are \
             checked only with server.auth = \"tokens\" (SIGLOOP__SERVER__AUTH=tokens)."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A token's status at `now`: `active`, `expired` or `revoked`.
fn token_status(row: &crate::storage::TokenRow, now: i64) -> &'static str {
    if row.revoked_at.is_some() {
        "revoked"
    } else if row
        .token
        .expires_at
        .is_some_and(|expires_at| expires_at <= now)
    {
        "expired"
    } else {
        "active"
    }
}

async fn list_tokens(storage: &dyn Storage, json: bool) -> anyhow::Result<ExitCode> {
    let rows = storage
        .tokens()
        .await
        .context("Failed to read the tokens")?;
    let now = now_millis();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if json {
        for row in &rows {
            let token = &row.token;
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({
                    "id": token.id,
                    "name": token.name,
                    "scopes": token.scopes,
                    "team": token.team,
                    "created_at": crate::domain::format_millis(token.created_at),
                    "expires_at": token.expires_at.map(crate::domain::format_millis),
                    "revoked_at": row.revoked_at.map(crate::domain::format_millis),
                    "status": token_status(row, now),
                }),
            )?;
            out.write_all(b"\n")?;
        }
    } else {
        let mut table = vec![[
            "ID".to_owned(),
            "NAME".to_owned(),
            "SCOPES".to_owned(),
            "TEAM".to_owned(),
            "CREATED".to_owned(),
            "EXPIRES".to_owned(),
            "STATUS".to_owned(),
        ]];
        let time = |millis: Option<i64>| {
            millis.map_or_else(|| "-".to_owned(), crate::domain::format_millis)
        };
        for row in &rows {
            let token = &row.token;
            table.push([
                token.id.clone(),
                token.name.clone(),
                token.scopes.join(","),
                token.team.clone().unwrap_or_else(|| "-".to_owned()),
                time(Some(token.created_at)),
                time(token.expires_at),
                token_status(row, now).to_owned(),
            ]);
        }
        let mut widths = [0_usize; 7];
        for line in &table {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for line in &table {
            let cells: Vec<String> = line
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            writeln!(out, "{}", cells.join("  ").trim_end())?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

async fn revoke_token(storage: &dyn Storage, id: &str) -> anyhow::Result<ExitCode> {
    let now = now_millis();
    let Some(row) = storage
        .revoke_token(id, now)
        .await
        .context("Failed to revoke the token")?
    else {
        anyhow::bail!("no token with id {id} (`sigloop token list` shows them)");
    };
    let revoked_at = row.revoked_at.unwrap_or(now);
    if revoked_at < now {
        eprintln!(
            "sigloop token: {id} ({}) was already revoked at {}",
            row.token.name,
            crate::domain::format_millis(revoked_at)
        );
    } else {
        eprintln!("sigloop token: revoked {id} ({})", row.token.name);
    }
    Ok(ExitCode::SUCCESS)
}
