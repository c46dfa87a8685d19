//! The processor in the distributed mode: batches come from the Kafka consumer thread instead of
//! the log table, and each commit carries the partitions' new offsets.
//!
//! The core, the pipelined commit and the reload after a failure are the embedded processor's. What
//! differs is where reading resumes: a failed commit bumps the seek epoch so that the consumer thread
//! goes back to the stored offsets (and batches it read before are dropped), and a rebalance goes
//! through here so that revoked partitions are committed before they are released and assigned ones
//! start from the database's offsets, with the state reloaded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::core::ownership::Ownership;
use super::core::{BatchEffects, EntryKind, LogEntry, OffsetAdvance};
use super::{InFlight, Processor};
use crate::journey::TRACKED_WINDOWS;
use crate::kafka::source::{Feed, FeedBatch, Partition, SourceShared};
use crate::storage::StoredOffset;

enum Step {
    Feed(Feed),
    Idle,
    /// Time for the journey detectors to judge the fleet's merged figures.
    Fleet,
    Closed,
}

impl Processor {
    /// Runs until the consumer thread has left the group and closed the feed; a batch in flight is
    /// committed before it returns.
    pub async fn run_feed(self, mut feed: mpsc::Receiver<Feed>, source: Arc<SourceShared>) {
        let idle = Duration::from_millis(self.settings.batch_millis.max(1));
        let mut failures: u32 = 0;
        let mut in_flight: Option<InFlight> = None;
        let mut epoch = source.epoch.load(Ordering::SeqCst);
        // Where processing has got to in each partition this instance owns: the `from` of the
        // next advance (`None` while nothing is stored for it).
        let mut positions: BTreeMap<Partition, Option<i64>> = BTreeMap::new();
        // (source, id) of the events of the batch committing now: not stored yet, but seen.
        let mut in_flight_seen: Vec<(String, String)> = Vec::new();
        // The accounts this instance acts for, put back into the state after every reload.
        let mut ownership = Some(Ownership {
            partitions: BTreeSet::new(),
            count: 1,
        });
        self.own(&ownership);
        let judges_fleet = self.core.judges_fleet();
        let mut fleet_judged = Instant::now();
        loop {
            let fleet_due = judges_fleet && fleet_judged.elapsed() >= self.fleet_evaluation;
            let step = if fleet_due {
                Step::Fleet
            } else {
                tokio::select! {
                    next = feed.recv() => next.map_or(Step::Closed, Step::Feed),
                    _ = tokio::time::sleep(idle) => Step::Idle,
                }
            };
            let batch = match step {
                Step::Closed => break,
                Step::Feed(Feed::Batch(batch)) => {
                    if batch.epoch != epoch {
                        // Read before the seek back that a failed commit asked for.
                        continue;
                    }
                    batch
                }
                Step::Feed(Feed::Revoked { done }) => {
                    if let Some(commit) = in_flight.take() {
                        self.settle(commit, &source, &mut epoch, &mut positions)
                            .await;
                    }
                    positions.clear();
                    // Until the next assignment this instance owns nothing: no timer fires here.
                    ownership = Some(Ownership {
                        partitions: BTreeSet::new(),
                        count: 1,
                    });
                    self.own(&ownership);
                    source.forget(&self.metrics);
                    let _ = done.send(());
                    continue;
                }
                Step::Feed(Feed::Assigned {
                    partitions,
                    partition_count,
                    reply,
                }) => {
                    if let Some(commit) = in_flight.take() {
                        self.settle(commit, &source, &mut epoch, &mut positions)
                            .await;
                    }
                    // Another instance may have moved these accounts on since this one last saw them.
                    self.reload().await;
                    ownership = Some(Ownership {
                        partitions: partitions.iter().map(|(_, partition)| *partition).collect(),
                        count: partition_count,
                    });
                    self.own(&ownership);
                    let stored = self.stored_offsets().await;
                    positions = partitions
                        .into_iter()
                        .map(|partition| {
                            let next = stored_position(&stored, &partition);
                            (partition, next)
                        })
                        .collect();
                    // The lag of every partition taken shows at once, before its first commit.
                    let positions_now: Vec<(Partition, i64)> = positions
                        .iter()
                        .map(|(partition, next)| (partition.clone(), next.unwrap_or(0)))
                        .collect();
                    source.committed(&positions_now, &self.metrics);
                    let _ = reply.send(stored);
                    continue;
                }
                Step::Fleet => {
                    fleet_judged = Instant::now();
                    // The figures are read with nothing of this instance's in flight, so that
                    // they hold all its own events processed so far.
                    if let Some(commit) = in_flight.take() {
                        if !self
                            .settle(commit, &source, &mut epoch, &mut positions)
                            .await
                        {
                            self.back_off(&mut failures, &CancellationToken::new())
                                .await;
                            continue;
                        }
                    }
                    if let Some(effects) = self.judge_fleet().await {
                        in_flight_seen.clear();
                        in_flight = Some(self.start_commit(effects, 0));
                    }
                    continue;
                }
                Step::Idle => {
                    if let Some(commit) = in_flight.take() {
                        if !self
                            .settle(commit, &source, &mut epoch, &mut positions)
                            .await
                        {
                            self.back_off(&mut failures, &CancellationToken::new())
                                .await;
                        }
                        continue;
                    }
                    if !self.timer_due() {
                        continue;
                    }
                    FeedBatch {
                        epoch,
                        entries: Vec::new(),
                        ends: BTreeMap::new(),
                    }
                }
            };
            // Events already stored as seen, or in the batch still committing, are repeats.
            let keys = event_keys(&batch.entries);
            let mut seen = match self.storage.seen_events(&keys).await {
                Ok(seen) => seen,
                Err(error) => {
                    tracing::error!(error = %error, "Failed to look up seen events; reading the batch again.");
                    if let Some(commit) = in_flight.take() {
                        self.settle(commit, &source, &mut epoch, &mut positions)
                            .await;
                    }
                    self.rewind(&source, &mut epoch, &mut positions).await;
                    self.back_off(&mut failures, &CancellationToken::new())
                        .await;
                    continue;
                }
            };
            seen.extend(in_flight_seen.iter().cloned());
            self.state.lock().expect("core state lock").seen = seen.into_iter().collect();
            let clock = self.batch_clock();
            let core = Arc::clone(&self.core);
            let state = Arc::clone(&self.state);
            let batch_len = batch.entries.len();
            let entries = batch.entries;
            let mut effects = tokio::task::spawn_blocking(move || {
                let mut state = state.lock().expect("core state lock");
                core.process_batch(&mut state, &entries, clock)
            })
            .await
            .expect("the pure core does not panic");
            // The state in memory is ahead of the database here: a crash must lose only this.
            crate::failpoint::hit("mid_batch");
            effects.source_offsets = batch
                .ends
                .into_iter()
                .map(|(partition, next)| {
                    let from = positions.insert(partition.clone(), Some(next)).flatten();
                    OffsetAdvance {
                        topic: partition.0,
                        partition: partition.1,
                        from,
                        to: next,
                    }
                })
                .collect();
            if let Some(commit) = in_flight.take() {
                if !self
                    .settle(commit, &source, &mut epoch, &mut positions)
                    .await
                {
                    // This batch was processed on top of effects that did not commit; `settle`
                    // reloaded the state and asked the consumer to read it again.
                    self.back_off(&mut failures, &CancellationToken::new())
                        .await;
                    continue;
                }
                failures = 0;
            }
            in_flight_seen = effects.seen.clone();
            in_flight = Some(self.start_commit(effects, batch_len));
        }
        if let Some(commit) = in_flight.take() {
            self.settle(commit, &source, &mut epoch, &mut positions)
                .await;
        }
        tracing::info!("The processor stopped after its last committed batch.");
    }

    /// Waits for a commit. On success records the partitions' committed offsets; on failure puts
    /// the committed state back and sends the consumer back to the stored offsets under a new epoch.
    async fn settle(
        &self,
        commit: InFlight,
        source: &SourceShared,
        epoch: &mut u64,
        positions: &mut BTreeMap<Partition, Option<i64>>,
    ) -> bool {
        if let Some(effects) = self.finish(commit).await {
            let committed: Vec<(Partition, i64)> = effects
                .source_offsets
                .iter()
                .map(|advance| ((advance.topic.clone(), advance.partition), advance.to))
                .collect();
            source.committed(&committed, &self.metrics);
            return true;
        }
        self.rewind(source, epoch, positions).await;
        false
    }

    /// Puts the committed state back and sends the consumer back to the stored offsets under a new
    /// epoch, so that everything read since the last commit is read again.
    async fn rewind(
        &self,
        source: &SourceShared,
        epoch: &mut u64,
        positions: &mut BTreeMap<Partition, Option<i64>>,
    ) {
        let ownership = self
            .state
            .lock()
            .expect("core state lock")
            .ownership
            .clone();
        self.reload().await;
        self.own(&ownership);
        let stored = self.stored_offsets().await;
        for (partition, position) in positions.iter_mut() {
            *position = stored_position(&stored, partition);
        }
        *source.reseek.lock().expect("reseek lock") = stored;
        *epoch += 1;
        source.epoch.store(*epoch, Ordering::SeqCst);
    }

    /// Judges the fleet's merged journey figures for the journey loops this instance owns, and
    /// brings other instances' journey loops to its account loops; the effects to commit, or `None`
    /// when it owns no partition, nothing changed, or the figures could not be read (the next turn
    /// tries again).
    async fn judge_fleet(&self) -> Option<BatchEffects> {
        let journeys = self.core.journeys()?;
        let owns_any = self
            .state
            .lock()
            .expect("core state lock")
            .ownership
            .as_ref()
            .is_some_and(|ownership| !ownership.partitions.is_empty());
        if !owns_any {
            return None;
        }
        let fleet = match self
            .storage
            .journey_fleet(journeys.tracked(), TRACKED_WINDOWS)
            .await
        {
            Ok(fleet) => fleet,
            Err(error) => {
                tracing::error!(error = %error, "Failed to read the fleet's journey figures; trying again later.");
                return None;
            }
        };
        let clock = self.batch_clock();
        let core = Arc::clone(&self.core);
        let state = Arc::clone(&self.state);
        let effects = tokio::task::spawn_blocking(move || {
            let mut state = state.lock().expect("core state lock");
            core.judge_fleet(&mut state, &fleet, clock)
        })
        .await
        .expect("the pure core does not panic");
        // Fired markers, links and fixes all leave rows; a batch without any changed nothing.
        (!effects.journey_fired.is_empty() || !effects.history.is_empty()).then_some(effects)
    }

    /// Puts `ownership` into the core state (a reload starts from storage, which knows none).
    fn own(&self, ownership: &Option<Ownership>) {
        let held = ownership
            .as_ref()
            .map_or(0, |ownership| ownership.partitions.len());
        self.metrics
            .kafka_partitions_owned
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        self.state.lock().expect("core state lock").ownership = ownership.clone();
    }

    /// The stored offsets, retried until storage answers: without them nothing can be read.
    async fn stored_offsets(&self) -> Vec<StoredOffset> {
        loop {
            match self.storage.source_offsets().await {
                Ok(stored) => return stored,
                Err(error) => {
                    tracing::error!(error = %error, "Failed to read the stored offsets; retrying.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// (source, id) of each event entry, read without decoding the rest of the event (a payload that
/// does not even have them is left to the core, which dead-letters it).
fn event_keys(entries: &[LogEntry]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Ids {
        source: String,
        id: String,
    }
    entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Event)
        .filter_map(|entry| serde_json::from_str::<Ids>(&entry.payload).ok())
        .map(|ids| (ids.source, ids.id))
        .collect()
}

fn stored_position(stored: &[StoredOffset], partition: &Partition) -> Option<i64> {
    stored
        .iter()
        .find(|offset| offset.topic == partition.0 && offset.partition == partition.1)
        .map(|offset| offset.next_offset)
}
