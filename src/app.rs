//! Start-up: builds the application from a [`Config`] and runs it until shutdown.
//!
//! `main` and the tests build the same `Application`; tests listen on port 0 with a fresh database.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::settings::{AuthMode, StorageBackend, StorageSettings};
use crate::config::Config;
use crate::ingest::Ingestor;
use crate::kafka::producer::EventProducer;
use crate::kafka::relay::KafkaSink;
use crate::pipeline::core::Core;
use crate::pipeline::{now_millis, ActionOutcomes, Processor};
use crate::relay::webhook::WebhookSink;
use crate::relay::Relay;
use crate::storage::{PostgresStorage, SqliteStorage, Storage};
use crate::telemetry::Metrics;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    processor: Processor,
    database: Database,
}

/// The concrete store, kept to close it at the end.
pub(crate) enum Database {
    Sqlite(Arc<SqliteStorage>),
    Postgres(Arc<PostgresStorage>),
}

impl Database {
    /// The configured store (`storage.backend`), migrated: the server's, and the commands' that
    /// work on its data (`sigloop token`).
    pub(crate) async fn open(settings: &StorageSettings) -> anyhow::Result<Database> {
        Ok(match settings.backend {
            StorageBackend::Sqlite => {
                let path: PathBuf = settings.path.clone();
                Database::Sqlite(Arc::new(
                    SqliteStorage::open(&path, settings.synchronous)
                        .await
                        .with_context(|| {
                            format!("Failed to open the database {}", path.display())
                        })?,
                ))
            }
            StorageBackend::Postgres => Database::Postgres(Arc::new(
                PostgresStorage::connect(&settings.url, settings.pool_size)
                    .await
                    .context("Failed to connect to the PostgreSQL database (storage.url)")?,
            )),
        })
    }

    pub(crate) fn storage(&self) -> Arc<dyn Storage> {
        match self {
            Database::Sqlite(storage) => storage.clone(),
            Database::Postgres(storage) => storage.clone(),
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Database::Sqlite(storage) => storage.close().await,
            Database::Postgres(storage) => storage.close().await,
        }
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        // Before anything is opened: an open API on an address other machines reach is refused.
        if let Some(problem) = config.settings.server.open_listen_problem() {
            anyhow::bail!(problem);
        }
        let core =
            Core::new(&config).map_err(|problems| crate::config::ConfigError { problems })?;
        let database = Database::open(&config.settings.storage).await?;
        let storage = database.storage();
        if config.settings.server.auth == AuthMode::Tokens {
            let now = now_millis();
            let usable = storage
                .tokens()
                .await
                .context("Failed to read the API tokens")?
                .iter()
                .filter(|row| {
                    row.revoked_at.is_none()
                        && row
                            .token
                            .expires_at
                            .is_none_or(|expires_at| expires_at > now)
                })
                .count();
            if usable == 0 {
                tracing::warn!(
                    "server.auth is \"tokens\" and no usable token exists: every /v1 request will \
                     get 401 until one is made with `sigloop token create`."
                );
            } else {
                tracing::info!(
                    tokens = usable,
                    "API tokens are required (server.auth = \"tokens\")."
                );
            }
        }
        let producer = if config.settings.kafka.enabled {
            Some(Arc::new(
                EventProducer::new(&config.settings.kafka)
                    .context("Failed to create the Kafka producer")?,
            ))
        } else {
            None
        };
        let core_state = crate::pipeline::load_state(storage.as_ref(), &core)
            .await
            .context("Failed to load the committed state")?;
        let offset = core_state.offset;
        let listener = TcpListener::bind(&config.settings.server.listen)
            .await
            .with_context(|| format!("Failed to listen on {}", config.settings.server.listen))?;
        let metrics = Arc::new(Metrics::new());
        // Series that alerts watch with rate() or increase() exist from the start at zero, so the
        // first breach or rejection is an increase rather than a new series.
        for queue in &config.routes.queues {
            metrics.sla_breaches.with_label_values(&[&queue.name]);
        }
        for code in crate::decode::RejectionCode::ALL {
            metrics.events_rejected.with_label_values(&[code.as_str()]);
        }
        metrics.processed_offset.set(offset);
        let appended = Arc::new(Notify::new());
        let (committed_sender, committed) = watch::channel(offset);
        let outcomes: ActionOutcomes = Arc::default();
        let core = Arc::new(core);
        let core_state = Arc::new(Mutex::new(core_state));
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let processor = Processor {
            core: Arc::clone(&core),
            state: Arc::clone(&core_state),
            storage: Arc::clone(&storage),
            metrics: Arc::clone(&metrics),
            settings: config.settings.processor.clone(),
            clock_mode: config.settings.clock.mode,
            fleet_evaluation: Duration::from_millis(
                config.settings.journeys.fleet_evaluation_millis,
            ),
            appended: Arc::clone(&appended),
            committed: committed_sender,
            outcomes: Arc::clone(&outcomes),
            stalled: Arc::clone(&stalled),
        };
        let state = AppState {
            inner: Arc::new(api::Inner {
                ingestor: Ingestor {
                    storage: Arc::clone(&storage),
                    metrics: Arc::clone(&metrics),
                    appended,
                    producer,
                },
                storage,
                metrics,
                core,
                core_state,
                committed,
                outcomes,
                config,
                processor_running: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                processor_stalled: stalled,
            }),
        };
        Ok(Application {
            listener,
            state,
            processor,
            database,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|address| address.port())
            .unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves HTTP, runs the processor and the purge task until `shutdown` is cancelled, then drains:
    /// the HTTP server stops taking connections and finishes in-flight requests (the processor keeps
    /// running so that `?wait=true` and action requests get their answers), then the processor
    /// commits its batch in flight and stops, then the database closes. If the processor stops on its
    /// own, the application shuts down and reports it, rather than accept events it cannot process.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            processor,
            database,
        } = self;
        let address = listener
            .local_addr()
            .context("Failed to read the listening address")?;
        tracing::info!(%address, config_version = %state.inner.config.version, "sigloop is listening.");
        let processor_shutdown = CancellationToken::new();
        let kafka = &state.inner.config.settings.kafka;
        // The distributed mode's consumer thread stops on this flag: it leaves the group (its
        // revocation goes through the processor), then closes the feed, which ends the processor.
        let consumer_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut relay_tasks = Vec::new();
        let mut consumer_thread = None;
        for webhook in &state.inner.config.settings.webhooks {
            let secret = match &webhook.secret_env {
                Some(variable) => Some(std::env::var(variable).with_context(|| {
                    format!(
                        "webhook `{}`: the secret variable {variable} is not set",
                        webhook.name
                    )
                })?),
                None => None,
            };
            let sink = WebhookSink::new(webhook, &state.inner.config.routes, secret)?;
            let relay = Relay::new(
                Arc::clone(&state.inner.storage),
                sink,
                instance_name(),
                Arc::clone(&state.inner.metrics),
            );
            relay_tasks.push(tokio::spawn(relay.run(processor_shutdown.clone())));
        }
        let mut processor_task = {
            let running = Arc::clone(&state.inner.processor_running);
            if kafka.enabled {
                // Two batches in the channel: enough to keep the core busy while one commits, and
                // a slow database stops the consumer fetching (backpressure) instead of buffering.
                let (feed, batches) = tokio::sync::mpsc::channel(2);
                let source = crate::kafka::source::start(
                    kafka,
                    &state.inner.config.settings.processor,
                    feed,
                    Arc::clone(&state.inner.metrics),
                    Arc::clone(&consumer_stop),
                )?;
                let relay = Relay::new(
                    Arc::clone(&state.inner.storage),
                    KafkaSink::new(kafka)?,
                    instance_name(),
                    Arc::clone(&state.inner.metrics),
                );
                relay_tasks.push(tokio::spawn(relay.run(processor_shutdown.clone())));
                let shared = Arc::clone(&source.shared);
                consumer_thread = Some(source.thread);
                tokio::spawn(async move {
                    processor.run_feed(batches, shared).await;
                    running.store(false, std::sync::atomic::Ordering::Relaxed);
                })
            } else {
                let token = processor_shutdown.clone();
                tokio::spawn(async move {
                    processor.run(token).await;
                    running.store(false, std::sync::atomic::Ordering::Relaxed);
                })
            }
        };
        let purge_task = tokio::spawn(purge_loop(state.clone(), shutdown.child_token()));
        let router = api::router(state.clone());
        let header_timeout =
            Duration::from_secs(state.inner.config.settings.server.header_timeout_secs);
        let mut server = tokio::spawn(serve(listener, router, header_timeout, shutdown.clone()));
        let mut processor_failed = false;
        let served = tokio::select! {
            served = &mut server => served,
            outcome = &mut processor_task => {
                processor_failed = true;
                state.inner.processor_running.store(false, std::sync::atomic::Ordering::Relaxed);
                if let Err(error) = outcome {
                    tracing::error!(error = %error, "The processor failed; shutting down.");
                }
                shutdown.cancel();
                server.await
            }
        };
        shutdown.cancel();
        consumer_stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if !processor_failed {
            // In the distributed mode the processor ends when the consumer thread has left the
            // group; in the embedded mode, on this token.
            if consumer_thread.is_none() {
                processor_shutdown.cancel();
            }
            let _ = processor_task.await;
        }
        processor_shutdown.cancel();
        if let Some(thread) = consumer_thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        for relay in relay_tasks {
            let _ = relay.await;
        }
        let _ = purge_task.await;
        database.close().await;
        served
            .context("The HTTP server task failed")?
            .context("The HTTP server failed")?;
        if processor_failed {
            anyhow::bail!("the processor stopped unexpectedly; sigloop shut down (see the log)");
        }
        tracing::info!("sigloop stopped.");
        Ok(())
    }
}

/// The most connections served at once; further clients wait in the listen backlog until one ends.
const MAX_CONNECTIONS: usize = 1024;

/// Serves HTTP/1.1 (with keep-alive) on `listener` until `shutdown` is cancelled, then stops
/// accepting, lets every connection finish its request in flight (idle ones close at once) and
/// returns when the last one has ended: what `axum::serve(..).with_graceful_shutdown(..)` does, plus
/// hyper's header read timeout, which needs a timer that `axum::serve` does not give hyper. Without
/// it a client that sends part of a request head and then nothing holds its connection forever
/// (the request timeout of `api::router` only starts once the head is complete).
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // Every connection's task holds a receiver: `closed()` resolves when the last one has ended.
    let (connections, connection) = watch::channel(());
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
            () = shutdown.cancelled() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                    ) {
                        // Out of file descriptors, say: wait for connections to end (as axum does).
                        tracing::error!(error = %error, "Failed to accept a connection.");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            // HTTP/1 only, as axum::serve without its http2 feature. Not hyper-util's auto builder
            // (what axum::serve uses): it reads the first bytes to pick the protocol before hyper
            // starts, with no timeout, so a client that connects and sends nothing would stay.
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut served = std::pin::pin!(served);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = served.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%remote, error = %error, "A connection ended with an error.");
                        }
                        break;
                    }
                    () = shutdown.cancelled(), if !stopping => {
                        stopping = true;
                        served.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(connection);
            drop(permit);
        });
    }
    drop(connection);
    drop(listener);
    connections.closed().await;
    Ok(())
}

/// Deletes processed events and dead letters older than the retention, at start and then periodically.
async fn purge_loop(state: AppState, shutdown: CancellationToken) {
    let storage_settings = &state.inner.config.settings.storage;
    let retention = i64::from(storage_settings.retention_days) * crate::domain::MILLIS_PER_DAY;
    let journey_retention = i64::from(state.inner.config.settings.journeys.retention_days)
        * crate::domain::MILLIS_PER_DAY;
    let interval = Duration::from_secs(storage_settings.purge_interval_secs);
    loop {
        let now = now_millis();
        match state
            .inner
            .storage
            .purge(now - retention, now - journey_retention)
            .await
        {
            Ok(counts) => {
                state
                    .inner
                    .metrics
                    .purged
                    .with_label_values(&["events"])
                    .inc_by(counts.events);
                state
                    .inner
                    .metrics
                    .purged
                    .with_label_values(&["dead_letters"])
                    .inc_by(counts.dead_letters);
                state
                    .inner
                    .metrics
                    .purged
                    .with_label_values(&["journey_buckets"])
                    .inc_by(counts.journey_buckets);
                if counts.events + counts.dead_letters + counts.journey_buckets > 0 {
                    tracing::info!(
                        events = counts.events,
                        dead_letters = counts.dead_letters,
                        journey_buckets = counts.journey_buckets,
                        "Purged rows past the retention period."
                    );
                }
            }
            Err(error) => tracing::error!(error = %error, "Failed to purge old rows."),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// This process's name in leases: the host name and the process id.
fn instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "sigloop".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub fn shutdown_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("Shutdown requested; draining.");
        token.cancel();
    });
}
