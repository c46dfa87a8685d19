//! The Kafka sink of the outbox relay ([`crate::relay`]): loop events to the loops topic, keyed by
//! the loop's key so that one loop's events stay in order on one partition, and the processor's dead
//! letters to the dead-letter topic, with their original value and the error in headers.

use rdkafka::producer::FutureProducer;

use super::producer::{produce_all, Outgoing};
use crate::config::settings::KafkaSettings;
use crate::pipeline::core::DEAD_LETTER;
use crate::relay::{with_outbox_id, Sink};
use crate::storage::OutboxRow;

/// The sink name of the Kafka relay in the outbox cursor table.
pub const SINK: &str = "kafka";

pub struct KafkaSink {
    producer: FutureProducer,
    loops_topic: String,
    dead_letter_topic: String,
}

impl KafkaSink {
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<KafkaSink> {
        Ok(KafkaSink {
            producer: super::producer_config(settings).create().map_err(|error| {
                anyhow::anyhow!("Failed to create the outbox producer: {error}")
            })?,
            loops_topic: settings.topics.loops.clone(),
            dead_letter_topic: settings.topics.dead_letters.clone(),
        })
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

#[async_trait::async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        SINK
    }

    /// All or nothing: the messages are produced in order with the idempotent producer, and the
    /// cursor moves only when the broker acknowledged every one.
    async fn deliver(&self, rows: &[OutboxRow]) -> (usize, Result<(), String>) {
        let messages: Vec<Message<'_>> = rows.iter().map(|row| self.message(row)).collect();
        let outgoing: Vec<Outgoing<'_>> = messages
            .iter()
            .map(|message| Outgoing {
                topic: message.topic,
                key: &message.key,
                value: &message.value,
                headers: message.headers.clone(),
            })
            .collect();
        match produce_all(&self.producer, &outgoing).await {
            Ok(_) => (rows.len(), Ok(())),
            Err(error) => (0, Err(format!("producing to Kafka failed: {error}"))),
        }
    }
}

struct Message<'a> {
    topic: &'a str,
    key: String,
    value: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}
