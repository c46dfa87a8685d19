//! Ingest: validated events into the durable log, rejected ones into dead letters, in one transaction.
//!
//! The HTTP handler, the demo feeder and the benchmark all come through [`Ingestor::ingest`], so
//! every path validates, deduplicates, dead-letters and counts the same way. `client` is the other
//! side: `sigloop ingest FILE` sending NDJSON to a running server.

pub mod client;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Notify;

use crate::decode::{self, Rejection, RejectionCode};
use crate::kafka::producer::{EventProducer, OutgoingEvent};
use crate::pipeline::core::{ActionRequest, EntryKind};
use crate::storage::{AppendEntry, NewDeadLetter, Storage, StorageError};
use crate::telemetry::Metrics;

/// One rejected event of a request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RejectedEvent {
    pub index: usize,
    pub id: Option<String>,
    pub code: RejectionCode,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<RejectedEvent>,
    /// The largest log sequence number this request appended.
    #[serde(skip)]
    pub last_seq: Option<i64>,
    /// Distributed mode: where the broker put each accepted event.
    #[serde(skip)]
    pub placed: Vec<crate::kafka::producer::Placed>,
}

/// Source of operator actions in the log.
pub const ACTION_SOURCE: &str = "sigloop.actions";

#[derive(Clone)]
pub struct Ingestor {
    pub storage: Arc<dyn Storage>,
    pub metrics: Arc<Metrics>,
    pub appended: Arc<Notify>,
    /// The distributed mode's log is Kafka: accepted events and actions are produced there.
    pub producer: Option<Arc<EventProducer>>,
}

/// Why an ingest wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the broker did not acknowledge the events: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl Ingestor {
    /// Validates `items` (raw JSON of one event each) and appends the valid ones durably. Returns
    /// only after the commit; a storage error means nothing of the request was written.
    ///
    /// In the distributed mode the valid events are produced to Kafka instead, and this returns once
    /// the broker acknowledged every one (acks=all); duplicates are not known at this point.
    pub async fn ingest(
        &self,
        items: &[&[u8]],
        transport: &str,
        received_at: i64,
    ) -> Result<IngestReport, IngestError> {
        let mut report = IngestReport::default();
        let mut entries = Vec::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        let mut dead_letters = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let decoded =
                decode::decode_event(item).and_then(|event| match std::str::from_utf8(item) {
                    Ok(text) => Ok((event, text)),
                    Err(error) => Err(Rejection {
                        code: RejectionCode::InvalidJson,
                        id: Some(event.id.clone()),
                        message: format!("event is not valid UTF-8: {error}"),
                    }),
                });
            match decoded {
                Ok((event, text)) => {
                    keys.push((event.event_type(), event.account_id().as_str().to_owned()));
                    entries.push(AppendEntry {
                        kind: EntryKind::Event,
                        event_type: event.event_type().as_str().to_owned(),
                        event_time: event.time,
                        source: event.source,
                        id: event.id,
                        payload: text.to_owned(),
                    });
                }
                Err(rejection) => {
                    dead_letters.push(NewDeadLetter {
                        origin: transport.to_owned(),
                        request_index: Some(index as i64),
                        event_source: None,
                        event_id: rejection.id.clone(),
                        code: rejection.code.as_str().to_owned(),
                        message: rejection.message.clone(),
                        payload: String::from_utf8_lossy(item).into_owned(),
                    });
                    report.rejected.push(RejectedEvent {
                        index,
                        id: rejection.id,
                        code: rejection.code,
                        message: rejection.message,
                    });
                }
            }
        }
        if entries.is_empty() && dead_letters.is_empty() {
            return Ok(report);
        }
        if let Some(producer) = &self.producer {
            return self
                .produce(
                    producer,
                    &entries,
                    &keys,
                    &dead_letters,
                    report,
                    transport,
                    received_at,
                )
                .await;
        }
        let started = Instant::now();
        let outcome = self
            .storage
            .append(&entries, &dead_letters, received_at)
            .await?;
        self.metrics
            .append_seconds
            .observe(started.elapsed().as_secs_f64());
        crate::failpoint::hit("after_append");
        for (entry, seq) in entries.iter().zip(&outcome.seqs) {
            match seq {
                Some(seq) => {
                    report.accepted += 1;
                    report.last_seq = Some(report.last_seq.map_or(*seq, |last| last.max(*seq)));
                    self.metrics
                        .events_in
                        .with_label_values(&[&entry.event_type, transport])
                        .inc();
                }
                None => {
                    report.duplicates += 1;
                    self.metrics.events_duplicate.inc();
                }
            }
        }
        for rejected in &report.rejected {
            self.metrics
                .events_rejected
                .with_label_values(&[rejected.code.as_str()])
                .inc();
        }
        if report.accepted > 0 {
            self.appended.notify_one();
        }
        Ok(report)
    }

    /// The distributed mode's half of [`Ingestor::ingest`]: dead letters into the database, valid
    /// events to Kafka.
    #[allow(clippy::too_many_arguments)]
    async fn produce(
        &self,
        producer: &EventProducer,
        entries: &[AppendEntry],
        keys: &[(crate::domain::EventType, String)],
        dead_letters: &[NewDeadLetter],
        mut report: IngestReport,
        transport: &str,
        received_at: i64,
    ) -> Result<IngestReport, IngestError> {
        if !dead_letters.is_empty() {
            self.storage.append(&[], dead_letters, received_at).await?;
        }
        let events: Vec<OutgoingEvent<'_>> = entries
            .iter()
            .zip(keys)
            .map(|(entry, (event_type, key))| OutgoingEvent {
                event_type: *event_type,
                account_id: key,
                payload: &entry.payload,
            })
            .collect();
        let started = Instant::now();
        report.placed = producer.produce_events(&events).await?;
        self.metrics
            .append_seconds
            .observe(started.elapsed().as_secs_f64());
        report.accepted = events.len();
        for entry in entries {
            self.metrics
                .events_in
                .with_label_values(&[&entry.event_type, transport])
                .inc();
        }
        for rejected in &report.rejected {
            self.metrics
                .events_rejected
                .with_label_values(&[rejected.code.as_str()])
                .inc();
        }
        Ok(report)
    }

    /// The distributed mode's [`Ingestor::append_action`]: produces the action to the actions topic
    /// under `key` (the loop's account, or its key for a journey loop), so that it is ordered with
    /// the account's events, and returns once the broker acknowledged it.
    pub async fn produce_action(
        &self,
        producer: &EventProducer,
        request: &ActionRequest,
        key: &str,
    ) -> Result<(), IngestError> {
        let payload = serde_json::to_string(request).expect("actions serialize");
        producer.produce_action(key, &payload).await?;
        Ok(())
    }

    /// Appends an operator action to the log; returns its sequence number.
    pub async fn append_action(
        &self,
        request: &ActionRequest,
        received_at: i64,
    ) -> Result<i64, StorageError> {
        let payload = serde_json::to_string(request).expect("actions serialize");
        // Action ids only need to be unique in the log; a random suffix makes a clash all but
        // impossible, and a clash is simply retried with another one.
        for _ in 0..3 {
            let entry = AppendEntry {
                kind: EntryKind::Action,
                source: ACTION_SOURCE.to_owned(),
                id: format!(
                    "{}:{}:{:016x}",
                    request.loop_id,
                    received_at,
                    rand::random::<u64>()
                ),
                event_type: format!("action.{}", request.action.name()),
                event_time: request.time,
                payload: payload.clone(),
            };
            let outcome = self
                .storage
                .append(std::slice::from_ref(&entry), &[], received_at)
                .await?;
            if let Some(seq) = outcome.seqs[0] {
                self.appended.notify_one();
                return Ok(seq);
            }
        }
        Err(StorageError::Corrupt(
            "three random action ids in a row were already in the log".to_owned(),
        ))
    }
}
