//! The processor: the thin async shell around the pure core.
//!
//! It reads the log in batches after its committed offset, runs [`core::Core::process_batch`] on a
//! blocking thread, and commits the effects with the new offset in one transaction. Only then does it
//! publish the offset, so `?wait=true` callers and action requests see effects that are durable.

pub mod core;
mod feed;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use self::core::{ActionOutcome, BatchClock, BatchEffects, Core, CoreState};
use crate::config::settings::{ClockMode, ProcessorSettings};
use crate::storage::Storage;
use crate::telemetry::Metrics;

/// Outcomes of action entries, by log sequence number, until the API request that appended them
/// collects them.
pub type ActionOutcomes = Arc<Mutex<BTreeMap<i64, ActionOutcome>>>;

/// Outcomes nobody collected (their request timed out) are dropped past this many.
const MAX_PENDING_OUTCOMES: usize = 10_000;

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A batch whose commit is running.
struct InFlight {
    handle: tokio::task::JoinHandle<(BatchEffects, Result<(), crate::storage::StorageError>)>,
    started: Instant,
    batch_len: usize,
}

pub struct Processor {
    pub core: Arc<Core>,
    pub state: Arc<Mutex<CoreState>>,
    pub storage: Arc<dyn Storage>,
    pub metrics: Arc<Metrics>,
    pub settings: ProcessorSettings,
    pub clock_mode: ClockMode,
    /// The distributed mode: how often the journey detectors judge the fleet's merged figures.
    pub fleet_evaluation: Duration,
    /// Appends wake the processor through this.
    pub appended: Arc<Notify>,
    /// The committed offset, published after every commit.
    pub committed: watch::Sender<i64>,
    pub outcomes: ActionOutcomes,
    /// Set while commits keep failing, so that readiness reports a stalled processor.
    pub stalled: Arc<std::sync::atomic::AtomicBool>,
}

impl Processor {
    /// Runs until `shutdown`; a batch in flight is finished and committed before it returns.
    ///
    /// Commits are pipelined: while batch k commits (on SQLite's thread), batch k+1 is read and
    /// processed against the in-memory state that already holds k's effects. Commits stay in log
    /// order, one at a time; if one fails, the batch processed behind it is dropped with the rest of
    /// the in-memory state, which is reloaded from the last commit.
    pub async fn run(self, shutdown: CancellationToken) {
        let idle = Duration::from_millis(self.settings.batch_millis.max(1));
        let mut failures: u32 = 0;
        let mut in_flight: Option<InFlight> = None;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let offset = self.state.lock().expect("core state lock").offset;
            let read_started = Instant::now();
            let entries = match self
                .storage
                .read_log(offset, self.settings.batch_size)
                .await
            {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::error!(error = %error, "Failed to read the event log; retrying.");
                    if let Some(commit) = in_flight.take() {
                        if self.finish(commit).await.is_none() {
                            self.reload().await;
                        }
                    }
                    self.back_off(&mut failures, &shutdown).await;
                    continue;
                }
            };
            // A loop deadline that passed on the live clock fires without waiting for an event: an
            // empty batch on the clock applies it.
            let timer_due = self.timer_due();
            if entries.is_empty() && !timer_due {
                if let Some(commit) = in_flight.take() {
                    if self.finish(commit).await.is_some() {
                        failures = 0;
                    } else {
                        self.reload().await;
                        self.back_off(&mut failures, &shutdown).await;
                    }
                    continue;
                }
                tokio::select! {
                    _ = self.appended.notified() => {}
                    _ = tokio::time::sleep(idle) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let span = tracing::info_span!(
                "batch",
                first_seq = entries.first().map(|entry| entry.seq),
                size = entries.len()
            );
            let read_elapsed = read_started.elapsed();
            let clock = self.batch_clock();
            let core = Arc::clone(&self.core);
            let state = Arc::clone(&self.state);
            let batch_len = entries.len();
            let process_started = Instant::now();
            let effects = tokio::task::spawn_blocking(move || {
                let mut state = state.lock().expect("core state lock");
                core.process_batch(&mut state, &entries, clock)
            })
            .await
            .expect("the pure core does not panic");
            let process_elapsed = process_started.elapsed();
            if let Some(commit) = in_flight.take() {
                if self.finish(commit).await.is_none() {
                    // This batch was processed on top of effects that did not commit: drop both.
                    self.reload().await;
                    self.back_off(&mut failures, &shutdown).await;
                    continue;
                }
                failures = 0;
            }
            {
                let _entered = span.enter();
                tracing::debug!(
                    read_ms = read_elapsed.as_secs_f64() * 1000.0,
                    process_ms = process_elapsed.as_secs_f64() * 1000.0,
                    "Processed a batch; committing it."
                );
            }
            in_flight = Some(self.start_commit(effects, batch_len));
        }
        if let Some(commit) = in_flight.take() {
            self.finish(commit).await;
        }
        tracing::info!("The processor stopped after its last committed batch.");
    }

    /// Starts committing a processed batch on its own task; the next batch is processed meanwhile.
    fn start_commit(&self, effects: BatchEffects, batch_len: usize) -> InFlight {
        let storage = Arc::clone(&self.storage);
        let started = Instant::now();
        let handle = tokio::spawn(async move {
            let result = storage.commit_batch(&effects, now_millis()).await;
            (effects, result)
        });
        InFlight {
            handle,
            started,
            batch_len,
        }
    }

    /// Whether a loop deadline has passed on the live clock: an empty batch on the clock applies it
    /// without waiting for an event.
    fn timer_due(&self) -> bool {
        self.clock_mode == ClockMode::Live && {
            let state = self.state.lock().expect("core state lock");
            self.core
                .next_timer(&state)
                .is_some_and(|due| due <= now_millis())
        }
    }

    /// The clock of the next batch: the wall clock read once, or event time.
    fn batch_clock(&self) -> BatchClock {
        match self.clock_mode {
            ClockMode::Live => BatchClock::Live(now_millis()),
            ClockMode::EventTime => BatchClock::EventTime,
        }
    }

    /// Waits for a commit; on success publishes its offset and returns the committed effects.
    /// `None` when it failed.
    async fn finish(&self, commit: InFlight) -> Option<BatchEffects> {
        let (effects, result) = match commit.handle.await {
            Ok(outcome) => outcome,
            Err(error) => {
                self.metrics.batch_commit_failures.inc();
                tracing::error!(error = %error, "A batch commit task failed.");
                return None;
            }
        };
        match result {
            Ok(()) => {
                self.metrics
                    .batch_commit_seconds
                    .observe(commit.started.elapsed().as_secs_f64());
                self.metrics.batch_size.observe(commit.batch_len as f64);
                self.record(&effects);
                crate::failpoint::hit("after_commit");
                self.committed.send_replace(effects.offset);
                self.stalled
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                Some(effects)
            }
            Err(error) => {
                self.metrics.batch_commit_failures.inc();
                tracing::error!(error = %error, "Failed to commit a batch; reloading the committed state and retrying.");
                None
            }
        }
    }

    /// The in-memory state ran ahead of a failed commit: put the committed one back.
    async fn reload(&self) {
        loop {
            match load_state(self.storage.as_ref(), &self.core).await {
                Ok(committed) => {
                    *self.state.lock().expect("core state lock") = committed;
                    return;
                }
                Err(error) => {
                    tracing::error!(error = %error, "Failed to reload the committed state; retrying.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn back_off(&self, failures: &mut u32, shutdown: &CancellationToken) {
        *failures = (*failures + 1).min(6);
        if *failures >= 3 {
            self.stalled
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let delay = Duration::from_millis(100 * (1 << *failures));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => {}
        }
    }

    fn record(&self, effects: &BatchEffects) {
        let metrics = &self.metrics;
        for (tag, count) in &effects.stats.tags_applied {
            metrics
                .tags_applied
                .with_label_values(&[tag])
                .inc_by(*count);
        }
        for (detector, count) in &effects.stats.signals {
            metrics
                .signals
                .with_label_values(&[detector])
                .inc_by(*count);
        }
        for ((queue, outcome), count) in &effects.stats.loop_changes {
            metrics
                .loops
                .with_label_values(&[queue.as_str(), outcome])
                .inc_by(*count);
        }
        for (queue, count) in &effects.stats.sla_breaches {
            metrics
                .sla_breaches
                .with_label_values(&[queue.as_str()])
                .inc_by(*count);
        }
        metrics.events_duplicate.inc_by(effects.stats.duplicates);
        for latency in &effects.stats.event_to_loop_millis {
            metrics
                .event_to_loop_seconds
                .observe(*latency as f64 / 1000.0);
        }
        for failed in &effects.failed {
            metrics
                .events_rejected
                .with_label_values(&[failed.rejection.code.as_str()])
                .inc();
            tracing::warn!(
                seq = failed.seq,
                code = failed.rejection.code.as_str(),
                "A logged entry could not be processed and became a dead letter."
            );
        }
        metrics.processed_offset.set(effects.offset);
        if !effects.action_outcomes.is_empty() {
            let mut outcomes = self.outcomes.lock().expect("outcomes lock");
            outcomes.extend(effects.action_outcomes.iter().cloned());
            // The oldest are the ones whose requests gave up waiting long ago.
            while outcomes.len() > MAX_PENDING_OUTCOMES {
                outcomes.pop_first();
            }
        }
    }
}

/// The committed state with the journey detectors' windows rebuilt from the stored buckets.
pub async fn load_state(
    storage: &dyn Storage,
    core: &Core,
) -> Result<CoreState, crate::storage::StorageError> {
    let mut state = storage.load_state().await?;
    let snapshot = storage.journey_snapshot(core.journey_lookback()).await?;
    core.restore_journeys(&mut state, &snapshot);
    core.restore_awaiting_survey(&mut state);
    Ok(state)
}
