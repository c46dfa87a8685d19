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
}

/// Source of operator actions in the log.
pub const ACTION_SOURCE: &str = "sigloop.actions";

#[derive(Clone)]
pub struct Ingestor {
    pub storage: Arc<dyn Storage>,
    pub metrics: Arc<Metrics>,
    pub appended: Arc<Notify>,
}

impl Ingestor {
    /// Validates `items` (raw JSON of one event each) and appends the valid ones durably. Returns
    /// only after the commit; a storage error means nothing of the request was written.
    pub async fn ingest(
        &self,
        items: &[&[u8]],
        transport: &str,
        received_at: i64,
    ) -> Result<IngestReport, StorageError> {
        let mut report = IngestReport::default();
        let mut entries = Vec::with_capacity(items.len());
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
