//! The consumer group: Kafka messages, in batches, to the processor; positions from the database.
//!
//! A dedicated thread owns the librdkafka consumer and polls it. It hands the processor whole
//! batches through a bounded channel, so a slow commit blocks the thread and the consumer stops
//! fetching (backpressure) instead of buffering without bound. Kafka's own group offsets are never
//! used: on assignment the thread asks the processor, which reloads the committed state and reads
//! the stored offsets, and assigns the partitions at those offsets; on revocation it waits until
//! the processor has committed (or dropped) everything it was handed before letting the partitions
//! go. When a commit fails, the processor asks the thread to seek back to the stored offsets; an
//! epoch number tells both sides which batches were read before that seek and must be dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::config::settings::{KafkaSettings, ProcessorSettings};
use crate::pipeline::core::LogEntry;
use crate::storage::StoredOffset;
use crate::telemetry::Metrics;

/// A topic and partition.
pub type Partition = (String, i32);

/// What the consumer thread hands the processor, in order.
pub enum Feed {
    /// Messages read since the last batch, with where each partition's reading ended.
    Batch(FeedBatch),
    /// The group takes these partitions away: commit or drop what was handed over, then reply.
    Revoked { done: oneshot::Sender<()> },
    /// The group gives these partitions: reload the committed state, then reply with the stored
    /// offsets to start from.
    Assigned {
        partitions: Vec<Partition>,
        /// Partitions per topic (the topics are co-partitioned), for account ownership.
        partition_count: i32,
        reply: oneshot::Sender<Vec<StoredOffset>>,
    },
}

pub struct FeedBatch {
    /// The seek epoch the messages were read in; a batch of an older epoch is dropped.
    pub epoch: u64,
    pub entries: Vec<LogEntry>,
    /// For each partition read, the next offset after the batch's last message from it.
    pub ends: BTreeMap<Partition, i64>,
}

/// State the consumer thread and the processor share.
#[derive(Default)]
pub struct SourceShared {
    /// Bumped by the processor when it needs the thread to seek back to `reseek`'s offsets.
    pub epoch: AtomicU64,
    pub reseek: Mutex<Vec<StoredOffset>>,
    /// Per partition: the broker's high watermark (from librdkafka's statistics) and the offset
    /// committed in the database, from which the lag gauge is computed.
    high_watermarks: Mutex<HashMap<Partition, i64>>,
    committed: Mutex<HashMap<Partition, i64>>,
    /// Set when the thread stopped, so that readiness can tell.
    pub stopped: AtomicBool,
}

impl SourceShared {
    /// Records committed positions and refreshes the lag gauge.
    pub fn committed(&self, positions: &[(Partition, i64)], metrics: &Metrics) {
        let mut committed = self.committed.lock().expect("committed positions lock");
        for (partition, next) in positions {
            committed.insert(partition.clone(), *next);
        }
        drop(committed);
        self.publish_lag(metrics);
    }

    /// Forgets partitions this instance no longer owns (their lag is another instance's to report).
    pub fn forget(&self, metrics: &Metrics) {
        let mut committed = self.committed.lock().expect("committed positions lock");
        for (topic, partition) in committed.keys() {
            let _ = metrics
                .kafka_consumer_lag
                .remove_label_values(&[topic, &partition.to_string()]);
        }
        committed.clear();
    }

    fn publish_lag(&self, metrics: &Metrics) {
        let committed = self.committed.lock().expect("committed positions lock");
        let high = self.high_watermarks.lock().expect("high watermarks lock");
        for (partition, position) in committed.iter() {
            if let Some(high) = high.get(partition) {
                metrics
                    .kafka_consumer_lag
                    .with_label_values(&[&partition.0, &partition.1.to_string()])
                    .set((high - position).max(0) as f64);
            }
        }
    }
}

/// The librdkafka callbacks: rebalances go through the processor, statistics feed the lag gauge.
struct SourceContext {
    feed: mpsc::Sender<Feed>,
    shared: Arc<SourceShared>,
    metrics: Arc<Metrics>,
    /// Bumped at every rebalance, so the polling loop drops a partial batch read before it.
    rebalances: AtomicU64,
    /// The inbound topics.
    topics: Vec<String>,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let mut high = self
            .shared
            .high_watermarks
            .lock()
            .expect("high watermarks lock");
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                // librdkafka reports partition -1 for messages not yet assigned a partition.
                if *partition >= 0 && stats.hi_offset >= 0 {
                    high.insert((topic.clone(), *partition), stats.hi_offset);
                }
            }
        }
        drop(high);
        self.shared.publish_lag(&self.metrics);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<Partition> = tpl
                    .elements()
                    .iter()
                    .map(|element| (element.topic().to_owned(), element.partition()))
                    .collect();
                tracing::info!(partitions = ?partitions, "Partitions assigned; loading their state.");
                let partition_count = self.partition_count(consumer);
                let (reply, offsets) = oneshot::channel();
                let stored = match self.feed.blocking_send(Feed::Assigned {
                    partitions: partitions.clone(),
                    partition_count,
                    reply,
                }) {
                    Ok(()) => offsets.blocking_recv().unwrap_or_default(),
                    // The processor is gone: sigloop is stopping, so take nothing.
                    Err(_) => return,
                };
                let stored: HashMap<Partition, i64> = stored
                    .into_iter()
                    .map(|offset| ((offset.topic, offset.partition), offset.next_offset))
                    .collect();
                for (topic, partition) in &partitions {
                    let offset = match stored.get(&(topic.clone(), *partition)) {
                        Some(next) => Offset::Offset(*next),
                        None => Offset::Beginning,
                    };
                    if let Err(error) = tpl.set_partition_offset(topic, *partition, offset) {
                        tracing::error!(topic, partition, error = %error, "Failed to set a partition's start offset.");
                    }
                }
                if let Err(error) = consumer.assign(tpl) {
                    tracing::error!(error = %error, "Failed to assign partitions.");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(
                    count = tpl.count(),
                    "Partitions revoked; finishing the batch in flight."
                );
                let (done, finished) = oneshot::channel();
                if self.feed.blocking_send(Feed::Revoked { done }).is_ok() {
                    let _ = finished.blocking_recv();
                }
                if let Err(error) = consumer.unassign() {
                    tracing::error!(error = %error, "Failed to release revoked partitions.");
                }
            }
            other => {
                tracing::error!(error = ?other, "Rebalance failed; releasing every partition.");
                let (done, finished) = oneshot::channel();
                if self.feed.blocking_send(Feed::Revoked { done }).is_ok() {
                    let _ = finished.blocking_recv();
                }
                let _ = consumer.unassign();
            }
        }
    }
}

impl SourceContext {
    /// The partition count of the inbound topics, read from the broker's metadata. Accounts are
    /// owned by partition number across topics, so the counts must agree: a mismatch is logged as
    /// an error (events of one account would meet in different instances) and the largest wins.
    fn partition_count(&self, consumer: &BaseConsumer<Self>) -> i32 {
        let mut counts = BTreeMap::new();
        for topic in &self.topics {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
                Ok(metadata) => {
                    if let Some(found) = metadata.topics().first() {
                        counts.insert(topic.clone(), found.partitions().len() as i32);
                    }
                }
                Err(error) => {
                    tracing::error!(topic, error = %error, "Failed to read a topic's partition count.")
                }
            }
        }
        let distinct: BTreeSet<i32> = counts.values().copied().collect();
        if distinct.len() > 1 {
            tracing::error!(
                counts = ?counts,
                "The inbound topics have different partition counts: an account's events can reach different instances. Give every inbound topic the same number of partitions."
            );
        }
        distinct.last().copied().unwrap_or(1)
    }
}

/// A running consumer thread.
pub struct Source {
    pub shared: Arc<SourceShared>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Subscribes to the inbound topics and starts the consumer thread, which feeds `feed` until
/// `stop` is set; then it leaves the group (revoking through the processor) and ends.
pub fn start(
    settings: &KafkaSettings,
    processor: &ProcessorSettings,
    feed: mpsc::Sender<Feed>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Source> {
    let shared = Arc::new(SourceShared::default());
    let context = SourceContext {
        feed: feed.clone(),
        shared: Arc::clone(&shared),
        metrics,
        rebalances: AtomicU64::new(0),
        topics: settings
            .topics
            .inbound()
            .iter()
            .map(|topic| (*topic).to_owned())
            .collect(),
    };
    let consumer: BaseConsumer<SourceContext> = super::consumer_config(settings)
        .create_with_context(context)
        .map_err(|error| anyhow::anyhow!("Failed to create the Kafka consumer: {error}"))?;
    let topics = settings.topics.inbound();
    consumer
        .subscribe(&topics)
        .map_err(|error| anyhow::anyhow!("Failed to subscribe to {topics:?}: {error}"))?;
    let batch_size = processor.batch_size;
    let batch_time = Duration::from_millis(processor.batch_millis.max(1));
    let actions_topic = settings.topics.actions.clone();
    let thread_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("sigloop-kafka-consumer".to_owned())
        .spawn(move || {
            poll_loop(
                &consumer,
                &feed,
                &thread_shared,
                &actions_topic,
                batch_size,
                batch_time,
                &stop,
            );
            // Dropping the consumer leaves the group; its revocation goes through the processor,
            // which is still reading the feed.
            drop(consumer);
            thread_shared.stopped.store(true, Ordering::SeqCst);
            tracing::info!("The Kafka consumer left the group.");
        })?;
    Ok(Source { shared, thread })
}

fn poll_loop(
    consumer: &BaseConsumer<SourceContext>,
    feed: &mpsc::Sender<Feed>,
    shared: &SourceShared,
    actions_topic: &str,
    batch_size: usize,
    batch_time: Duration,
    stop: &AtomicBool,
) {
    let mut epoch = shared.epoch.load(Ordering::SeqCst);
    let mut entries: Vec<LogEntry> = Vec::with_capacity(batch_size);
    let mut ends: BTreeMap<Partition, i64> = BTreeMap::new();
    let mut first_at: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let wanted = shared.epoch.load(Ordering::SeqCst);
        if wanted != epoch {
            // A commit failed: what was read since is dropped and reading restarts at the stored
            // offsets, which the processor put in `reseek` before bumping the epoch.
            entries.clear();
            ends.clear();
            first_at = None;
            reseek(consumer, &shared.reseek.lock().expect("reseek lock"));
            epoch = wanted;
        }
        let rebalances = consumer.context().rebalances.load(Ordering::SeqCst);
        let wait = match first_at {
            Some(first) => batch_time.saturating_sub(first.elapsed()),
            None => Duration::from_millis(100),
        };
        let polled = consumer.poll(wait);
        if consumer.context().rebalances.load(Ordering::SeqCst) != rebalances {
            // What was read before the rebalance belongs to the old assignment: the partitions'
            // next owner (perhaps this instance again) reads it from the stored offsets.
            entries.clear();
            ends.clear();
            first_at = None;
        }
        match polled {
            Some(Ok(message)) => {
                let headers: Vec<(&str, &[u8])> = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .filter_map(|header| header.value.map(|value| (header.key, value)))
                            .collect()
                    })
                    .unwrap_or_default();
                entries.push(super::entry_from_message(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    &headers,
                    message.payload(),
                    actions_topic,
                ));
                ends.insert(
                    (message.topic().to_owned(), message.partition()),
                    message.offset() + 1,
                );
                first_at.get_or_insert_with(Instant::now);
            }
            Some(Err(error)) => {
                tracing::warn!(error = %error, "The Kafka consumer reported an error.");
            }
            None => {}
        }
        let due = first_at.is_some_and(|first| first.elapsed() >= batch_time);
        if entries.len() >= batch_size || (due && !entries.is_empty()) {
            let batch = FeedBatch {
                epoch,
                entries: std::mem::replace(&mut entries, Vec::with_capacity(batch_size)),
                ends: std::mem::take(&mut ends),
            };
            first_at = None;
            if feed.blocking_send(Feed::Batch(batch)).is_err() {
                return;
            }
        }
    }
}

/// Moves every assigned partition back to its stored offset (the beginning when none is stored).
fn reseek(consumer: &BaseConsumer<SourceContext>, stored: &[StoredOffset]) {
    let assignment = match consumer.assignment() {
        Ok(assignment) => assignment,
        Err(error) => {
            tracing::error!(error = %error, "Failed to read the assignment to seek back.");
            return;
        }
    };
    let mut positions = TopicPartitionList::new();
    for element in assignment.elements() {
        let offset = stored
            .iter()
            .find(|offset| {
                offset.topic == element.topic() && offset.partition == element.partition()
            })
            .map_or(Offset::Beginning, |offset| {
                Offset::Offset(offset.next_offset)
            });
        if let Err(error) =
            positions.add_partition_offset(element.topic(), element.partition(), offset)
        {
            tracing::error!(error = %error, "Failed to list a partition to seek back.");
        }
    }
    if positions.count() == 0 {
        return;
    }
    // Re-assigning at explicit offsets also discards what librdkafka had already fetched.
    if let Err(error) = consumer.assign(&positions) {
        tracing::error!(error = %error, "Failed to seek back to the stored offsets.");
    }
}
