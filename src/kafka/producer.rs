//! Producing to Kafka: the events of `POST /v1/events` and operator actions, answered only after
//! the broker acknowledged them (acks=all), and the shared "send many in order" helper.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::settings::{KafkaSettings, KafkaTopics};
use crate::domain::EventType;

/// One message to produce.
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub value: &'a [u8],
    pub headers: Vec<(&'static str, String)>,
}

/// Where the broker put a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Produces `messages` in order and waits until the broker acknowledged every one; returns where
/// each went.
///
/// Every message is enqueued before any acknowledgement is awaited, so a request costs one round
/// trip rather than one per message; librdkafka's idempotent producer keeps them in order per
/// partition across retries. When the local queue is full, the acknowledgements so far are awaited
/// and enqueuing resumes.
pub async fn produce_all(
    producer: &FutureProducer,
    messages: &[Outgoing<'_>],
) -> Result<Vec<Placed>, KafkaError> {
    let mut placed = Vec::with_capacity(messages.len());
    let mut pending = Vec::with_capacity(messages.len());
    for message in messages {
        loop {
            let mut headers = OwnedHeaders::new();
            for (name, value) in &message.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_str()),
                });
            }
            let record = FutureRecord::to(message.topic)
                .key(message.key)
                .payload(message.value)
                .headers(headers);
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push((message.topic, delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    await_all(&mut pending, &mut placed).await?;
                    if pending.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                Err((error, _)) => {
                    await_all(&mut pending, &mut placed).await.ok();
                    return Err(error);
                }
            }
        }
    }
    await_all(&mut pending, &mut placed).await?;
    Ok(placed)
}

async fn await_all(
    pending: &mut Vec<(&str, rdkafka::producer::DeliveryFuture)>,
    placed: &mut Vec<Placed>,
) -> Result<(), KafkaError> {
    let mut first_error = None;
    for (topic, delivery) in pending.drain(..) {
        let outcome = match delivery.await {
            Ok(Ok(delivery)) => {
                placed.push(Placed {
                    topic: topic.to_owned(),
                    partition: delivery.partition,
                    offset: delivery.offset,
                });
                Ok(())
            }
            Ok(Err((error, _))) => Err(error),
            // The producer went away with the message undelivered.
            Err(_) => Err(KafkaError::Canceled),
        };
        if let Err(error) = outcome {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The producer of `POST /v1/events` and of operator actions in the distributed mode.
pub struct EventProducer {
    producer: FutureProducer,
    topics: KafkaTopics,
}

/// An event to produce: its type picks the topic and its account is the key, so one account's
/// events stay in order on one partition.
pub struct OutgoingEvent<'a> {
    pub event_type: EventType,
    pub account_id: &'a str,
    /// The CloudEvent in the structured mode, as received.
    pub payload: &'a str,
}

impl EventProducer {
    pub fn new(settings: &KafkaSettings) -> Result<EventProducer, KafkaError> {
        Ok(EventProducer {
            producer: super::producer_config(settings).create()?,
            topics: settings.topics.clone(),
        })
    }

    /// Produces the events and returns once the broker acknowledged all of them. On an error some
    /// may have been written already; the caller answers with an error and a client's retry can
    /// write those again.
    pub async fn produce_events(
        &self,
        events: &[OutgoingEvent<'_>],
    ) -> Result<Vec<Placed>, KafkaError> {
        let messages: Vec<Outgoing<'_>> = events
            .iter()
            .map(|event| Outgoing {
                topic: super::topic_for(event.event_type, &self.topics),
                key: event.account_id,
                value: event.payload.as_bytes(),
                headers: vec![("content-type", CLOUDEVENTS_JSON.to_owned())],
            })
            .collect();
        produce_all(&self.producer, &messages).await
    }

    /// Produces an operator action keyed like the events of its loop's account (or, for a loop
    /// without one, by the loop's key), so that it is ordered with them.
    pub async fn produce_action(
        &self,
        key: &str,
        payload: &str,
    ) -> Result<Vec<Placed>, KafkaError> {
        let message = Outgoing {
            topic: &self.topics.actions,
            key,
            value: payload.as_bytes(),
            headers: vec![("content-type", "application/json".to_owned())],
        };
        produce_all(&self.producer, std::slice::from_ref(&message)).await
    }
}

/// The content type of a structured-mode CloudEvent.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// What `sigloop produce` sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProduceTotals {
    pub produced: u64,
    /// Lines that are not valid events; reported by line number and not sent.
    pub rejected: u64,
}

/// Produces NDJSON event lines to their topics, `chunk` at a time, each chunk acknowledged before
/// the next is read. Invalid lines are reported on stderr with their line number and skipped.
pub async fn produce_lines(
    producer: &EventProducer,
    lines: impl Iterator<Item = std::io::Result<String>>,
    chunk: usize,
) -> anyhow::Result<ProduceTotals> {
    let mut totals = ProduceTotals::default();
    let mut pending: Vec<(EventType, String, String)> = Vec::with_capacity(chunk);
    for (index, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match crate::decode::decode_event(line.as_bytes()) {
            Ok(event) => {
                pending.push((
                    event.event_type(),
                    event.account_id().as_str().to_owned(),
                    line,
                ));
            }
            Err(rejection) => {
                totals.rejected += 1;
                eprintln!(
                    "line {}: {}: {}",
                    index + 1,
                    rejection.code.as_str(),
                    rejection.message
                );
            }
        }
        if pending.len() >= chunk {
            totals.produced += send_chunk(producer, &mut pending).await?;
        }
    }
    totals.produced += send_chunk(producer, &mut pending).await?;
    Ok(totals)
}

async fn send_chunk(
    producer: &EventProducer,
    pending: &mut Vec<(EventType, String, String)>,
) -> anyhow::Result<u64> {
    let events: Vec<OutgoingEvent<'_>> = pending
        .iter()
        .map(|(event_type, account_id, payload)| OutgoingEvent {
            event_type: *event_type,
            account_id,
            payload,
        })
        .collect();
    producer
        .produce_events(&events)
        .await
        .map_err(|error| anyhow::anyhow!("The broker did not acknowledge the events: {error}"))?;
    let sent = pending.len() as u64;
    pending.clear();
    Ok(sent)
}
