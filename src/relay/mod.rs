//! The outbox relay: committed loop events, in commit order, to a sink (the Kafka loops and
//! dead-letter topics, or a webhook).
//!
//! The processor writes loop events into the outbox in the same transaction as the loops they
//! describe (a transactional outbox), so an event goes out if and only if its change committed. For
//! each sink one instance at a time relays (it holds the sink's lease in the database): it hands the
//! events after the sink's cursor to the sink in order, then moves the cursor past what was
//! delivered. A crash or a failed delivery between the two sends the undelivered events again, so
//! delivery is at least once; each event carries its outbox id, so a receiver can drop a repeat.
//! Failures back off exponentially (0.2 s doubling to 6.4 s) and retry from the cursor.

pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::pipeline::now_millis;
use crate::storage::{OutboxRow, Storage, StorageError};
use crate::telemetry::Metrics;

/// How long a relay's lease lasts without renewal; another instance takes over after it.
const LEASE: Duration = Duration::from_secs(15);

/// Events per round.
const BATCH: u32 = 2_000;

/// Where a relay delivers.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The sink's name in the cursor table (`kafka`, `webhook:NAME`).
    fn name(&self) -> &str;

    /// Delivers `rows` in order. Returns how many, from the first, are delivered (or deliberately
    /// skipped, as events a webhook does not want), and the error that stopped it, if any.
    async fn deliver(&self, rows: &[OutboxRow]) -> (usize, Result<(), String>);
}

pub struct Relay<S: Sink> {
    pub storage: Arc<dyn Storage>,
    pub sink: S,
    /// This instance's name in the lease.
    pub holder: String,
    pub metrics: Arc<Metrics>,
    /// How long to wait when there is nothing to relay.
    pub idle: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("delivery failed: {0}")]
    Delivery(String),
}

impl<S: Sink> Relay<S> {
    pub fn new(storage: Arc<dyn Storage>, sink: S, holder: String, metrics: Arc<Metrics>) -> Self {
        Relay {
            storage,
            sink,
            holder,
            metrics,
            idle: Duration::from_millis(100),
        }
    }

    /// Relays until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            let wait = match self.relay_once().await {
                Ok(0) => {
                    failures = 0;
                    self.idle
                }
                Ok(_) => {
                    failures = 0;
                    Duration::ZERO
                }
                Err(error) => {
                    failures = (failures + 1).min(6);
                    tracing::warn!(sink = self.sink.name(), error = %error, "Outbox relay failed; retrying.");
                    Duration::from_millis(100 << failures)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// One round: takes the lease, delivers what follows the cursor, moves the cursor past what was
    /// delivered. Returns how many events it delivered (0 also when another instance holds the
    /// lease).
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let now = now_millis();
        let name = self.sink.name();
        let Some(delivered) = self
            .storage
            .claim_outbox(name, &self.holder, now, now + LEASE.as_millis() as i64)
            .await?
        else {
            return Ok(0);
        };
        let rows = self.storage.outbox_after(delivered, BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let (count, outcome) = self.sink.deliver(&rows).await;
        if count > 0 {
            self.storage
                .advance_outbox(name, &self.holder, rows[count - 1].id)
                .await?;
            self.metrics
                .outbox_delivered
                .with_label_values(&[name])
                .inc_by(count as u64);
        }
        outcome.map_err(RelayError::Delivery)?;
        Ok(count)
    }
}

/// The loop event's JSON with its outbox id added as `id`.
pub fn with_outbox_id(payload: &str, id: i64) -> String {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(mut object)) => {
            object.insert("id".to_owned(), id.into());
            serde_json::Value::Object(object).to_string()
        }
        _ => payload.to_owned(),
    }
}
