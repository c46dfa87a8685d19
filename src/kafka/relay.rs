//! The outbox relay: committed loop events to the loops topic, dead letters to the dead-letter topic.
//!
//! The processor writes loop events into the outbox in the same transaction as the loops they
//! describe (a transactional outbox), so an event is published if and only if its change committed.
//! One instance at a time relays (it holds the sink's lease in the database); it produces the events
//! after its cursor in order with the idempotent producer, then moves the cursor. A crash between the
//! two re-sends the last events: delivery is at least once, and each event carries its outbox id so
//! that a consumer can drop a repeat. Loop events are keyed by the loop's key, so one loop's events
//! stay in order on one partition.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use super::producer::{produce_all, Outgoing};
use crate::config::settings::KafkaSettings;
use crate::pipeline::core::DEAD_LETTER;
use crate::pipeline::now_millis;
use crate::storage::{OutboxRow, Storage, StorageError};
use crate::telemetry::Metrics;

/// The sink name of the Kafka relay in the outbox cursor table.
pub const SINK: &str = "kafka";

/// How long a relay's lease lasts without renewal; another instance takes over after it.
const LEASE: Duration = Duration::from_secs(15);

/// Events per produce round.
const BATCH: u32 = 2_000;

pub struct Relay {
    pub storage: Arc<dyn Storage>,
    pub producer: FutureProducer,
    pub loops_topic: String,
    pub dead_letter_topic: String,
    /// This instance's name in the lease.
    pub holder: String,
    pub metrics: Arc<Metrics>,
    /// How long to wait when there is nothing to relay.
    pub idle: Duration,
}

impl Relay {
    pub fn new(
        settings: &KafkaSettings,
        storage: Arc<dyn Storage>,
        holder: String,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Relay> {
        Ok(Relay {
            storage,
            producer: super::producer_config(settings).create().map_err(|error| {
                anyhow::anyhow!("Failed to create the outbox producer: {error}")
            })?,
            loops_topic: settings.topics.loops.clone(),
            dead_letter_topic: settings.topics.dead_letters.clone(),
            holder,
            metrics,
            idle: Duration::from_millis(100),
        })
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
                    tracing::warn!(error = %error, "Outbox relay failed; retrying.");
                    Duration::from_millis(100 << failures)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// One round: takes the lease, produces what follows the cursor, moves the cursor. Returns how
    /// many events it delivered (0 also when another instance holds the lease).
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let now = now_millis();
        let Some(delivered) = self
            .storage
            .claim_outbox(SINK, &self.holder, now, now + LEASE.as_millis() as i64)
            .await?
        else {
            return Ok(0);
        };
        let rows = self.storage.outbox_after(delivered, BATCH).await?;
        let Some(last) = rows.last().map(|row| row.id) else {
            return Ok(0);
        };
        let messages: Vec<Message> = rows.iter().map(|row| self.message(row)).collect();
        let outgoing: Vec<Outgoing<'_>> = messages
            .iter()
            .map(|message| Outgoing {
                topic: message.topic,
                key: &message.key,
                value: &message.value,
                headers: message.headers.clone(),
            })
            .collect();
        produce_all(&self.producer, &outgoing)
            .await
            .map_err(|error| RelayError::Kafka(error.to_string()))?;
        self.storage
            .advance_outbox(SINK, &self.holder, last)
            .await?;
        self.metrics
            .outbox_delivered
            .with_label_values(&[SINK])
            .inc_by(rows.len() as u64);
        Ok(rows.len())
    }

    fn message(&self, row: &OutboxRow) -> Message<'_> {
        let event = &row.event;
        if event.event == DEAD_LETTER {
            // The original value goes out unchanged; what went wrong is in headers.
            let detail: serde_json::Value =
                serde_json::from_str(&event.payload).unwrap_or_default();
            let text = |field: &str| detail[field].as_str().unwrap_or_default().to_owned();
            return Message {
                topic: &self.dead_letter_topic,
                key: text("id"),
                value: text("value").into_bytes(),
                headers: vec![
                    ("sigloop-error-code", text("code")),
                    ("sigloop-error-message", text("message")),
                    ("sigloop-source-topic", text("source")),
                    ("sigloop-source-position", text("id")),
                    ("sigloop-outbox-id", row.id.to_string()),
                ],
            };
        }
        Message {
            topic: &self.loops_topic,
            key: event.loop_key.clone(),
            value: with_outbox_id(&event.payload, row.id).into_bytes(),
            headers: vec![
                ("content-type", "application/json".to_owned()),
                ("sigloop-event", event.event.clone()),
                ("sigloop-outbox-id", row.id.to_string()),
            ],
        }
    }
}

struct Message<'a> {
    topic: &'a str,
    key: String,
    value: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

/// The loop event's JSON with its outbox id added as `id`.
fn with_outbox_id(payload: &str, id: i64) -> String {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(mut object)) => {
            object.insert("id".to_owned(), id.into());
            serde_json::Value::Object(object).to_string()
        }
        _ => payload.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("producing to Kafka failed: {0}")]
    Kafka(String),
}
