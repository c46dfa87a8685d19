//! The distributed mode's Kafka edge: the consumer group that feeds the processor (`source`), the
//! producer behind `POST /v1/events` (`producer`) and the outbox relay's sink for the loops and
//! dead-letter topics (`relay`). `sigloop bench --kafka` lives with the other benchmark, in
//! `bench::kafka`.
//!
//! This module holds what they share: client settings and the pure translation of a Kafka message
//! (CloudEvents structured or binary mode) into a log entry for the core.

pub mod producer;
pub mod relay;
pub mod source;

use rdkafka::config::ClientConfig;

use crate::config::settings::{KafkaSettings, KafkaTopics};
use crate::domain::EventType;
use crate::pipeline::core::{EntryKind, LogEntry};

/// Consumer settings chosen for throughput and for offsets kept in the database.
///
/// - `enable.auto.commit=false`: the database holds the offsets (committed with each batch).
/// - `enable.auto.offset.store=false`: nothing is stored in Kafka's offset store either.
/// - `fetch.queue.backoff.ms=10`: librdkafka's default of 1000 ms makes the fetcher wait a second
///   whenever its queue is full, which cut consume-and-process throughput about threefold in a trial.
/// - `partition.assignment.strategy=range`: with co-partitioned topics every instance gets the same
///   partition numbers of each topic, so an account's tickets, usage and surveys meet in one instance.
pub fn consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.min.messages", "200000")
        .set("fetch.wait.max.ms", "50")
        .set("statistics.interval.ms", "1000")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    for (key, value) in &settings.consumer {
        config.set(key, value);
    }
    config
}

/// Producer settings: acknowledged by every in-sync replica and idempotent, so that a retry never
/// writes a message twice or out of order. The partitioner is the Java client's (murmur2), so
/// that an account's events land on the same partition whichever client produced them.
pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000");
    for (key, value) in &settings.producer {
        config.set(key, value);
    }
    config
}

/// The topic an event of this type is produced to.
pub fn topic_for(event_type: EventType, topics: &KafkaTopics) -> &str {
    match event_type {
        EventType::TicketOpened
        | EventType::TicketUpdated
        | EventType::TicketSolved
        | EventType::TicketReopened => &topics.tickets,
        EventType::UsageMetric | EventType::UsageMilestone => &topics.usage,
        EventType::SurveyResponded => &topics.surveys,
        EventType::AccountUpserted => &topics.accounts,
    }
}

/// The CloudEvents attributes carried as `ce_*` headers in the binary mode.
const BINARY_ATTRIBUTES: [&str; 6] = ["specversion", "id", "source", "type", "time", "subject"];

/// One Kafka message turned into a log entry for the core.
///
/// In the structured mode the value is the whole CloudEvent, as over HTTP. In the binary mode
/// (a `ce_specversion` header) the attributes are `ce_*` headers and the value is `data`; the
/// entry's payload is the same event in the structured form, so the core decodes one format. The
/// entry's source and id say where the message is (`topic`, `partition:offset`), which is what a
/// dead letter needs to find the original; the event's own ids are inside the payload.
pub fn entry_from_message(
    topic: &str,
    partition: i32,
    offset: i64,
    headers: &[(&str, &[u8])],
    value: Option<&[u8]>,
    actions_topic: &str,
) -> LogEntry {
    let kind = if topic == actions_topic {
        EntryKind::Action
    } else {
        EntryKind::Event
    };
    let value = value.unwrap_or_default();
    let binary = headers.iter().any(|(name, _)| *name == "ce_specversion");
    let payload = if binary && kind == EntryKind::Event {
        structured_from_binary(headers, value)
    } else {
        String::from_utf8_lossy(value).into_owned()
    };
    LogEntry {
        seq: 0,
        kind,
        source: topic.to_owned(),
        id: format!("{partition}:{offset}"),
        payload,
    }
}

/// The structured form of a binary-mode CloudEvent. A `data` value that is not JSON is kept as a
/// JSON string, so that the decoder rejects it with its usual error rather than this code guessing.
fn structured_from_binary(headers: &[(&str, &[u8])], value: &[u8]) -> String {
    let mut event = serde_json::Map::new();
    for attribute in BINARY_ATTRIBUTES {
        let header = format!("ce_{attribute}");
        if let Some((_, bytes)) = headers.iter().find(|(name, _)| *name == header) {
            event.insert(
                attribute.to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()),
            );
        }
    }
    let data = serde_json::from_slice::<serde_json::Value>(value)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(value).into_owned()));
    event.insert("data".to_owned(), data);
    serde_json::Value::Object(event).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_event;

    #[test]
    fn a_structured_message_is_the_event_itself() {
        let value = br#"{"specversion":"1.0","id":"t1","source":"zendesk","type":"ticket.opened","time":"2026-01-01T00:00:00Z","data":{"ticket_id":"1","account_id":"a"}}"#;
        let entry = entry_from_message(
            "sigloop.tickets",
            3,
            42,
            &[],
            Some(value),
            "sigloop.actions",
        );
        assert_eq!(entry.kind, EntryKind::Event);
        assert_eq!(entry.source, "sigloop.tickets");
        assert_eq!(entry.id, "3:42");
        let event = decode_event(entry.payload.as_bytes()).expect("the event decodes");
        assert_eq!(event.id, "t1");
    }

    #[test]
    fn a_binary_message_becomes_the_same_event_in_structured_form() {
        let headers: [(&str, &[u8]); 5] = [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"t1"),
            ("ce_source", b"zendesk"),
            ("ce_type", b"ticket.opened"),
            ("ce_time", b"2026-01-01T00:00:00Z"),
        ];
        let value = br#"{"ticket_id":"1","account_id":"a","subject":"Login broken"}"#;
        let entry = entry_from_message(
            "sigloop.tickets",
            0,
            7,
            &headers,
            Some(value),
            "sigloop.actions",
        );
        let event = decode_event(entry.payload.as_bytes()).expect("the event decodes");
        assert_eq!(event.id, "t1");
        assert_eq!(event.source, "zendesk");
        assert_eq!(event.account_id().as_str(), "a");
    }

    #[test]
    fn a_binary_message_whose_data_is_not_json_is_rejected_by_the_decoder() {
        let headers: [(&str, &[u8]); 5] = [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"t1"),
            ("ce_source", b"zendesk"),
            ("ce_type", b"ticket.opened"),
            ("ce_time", b"2026-01-01T00:00:00Z"),
        ];
        let entry = entry_from_message(
            "sigloop.tickets",
            0,
            7,
            &headers,
            Some(b"not json"),
            "sigloop.actions",
        );
        assert!(decode_event(entry.payload.as_bytes()).is_err());
    }

    #[test]
    fn a_message_on_the_actions_topic_is_an_action_entry() {
        let entry =
            entry_from_message("sigloop.actions", 1, 2, &[], Some(b"{}"), "sigloop.actions");
        assert_eq!(entry.kind, EntryKind::Action);
    }

    #[test]
    fn a_message_without_a_value_is_an_empty_payload_that_the_decoder_rejects() {
        let entry = entry_from_message("sigloop.tickets", 1, 2, &[], None, "sigloop.actions");
        assert!(decode_event(entry.payload.as_bytes()).is_err());
    }
}
