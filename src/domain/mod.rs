//! Domain types shared by every stage of the core.
//!
//! Wire types (the CloudEvents JSON of `decode`, the request bodies of `api`) never travel past their
//! module: they are parsed into these types, whose constructors enforce the invariants the core relies
//! on. Times are milliseconds since the Unix epoch (UTC); the core never reads the wall clock.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. Event times and clock readings share this unit.
pub type Millis = i64;

pub const MILLIS_PER_DAY: Millis = 86_400_000;

/// Longest identifier (event id, account id, ticket id, ...) accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// An account identifier: non-empty, at most [`MAX_ID_BYTES`] bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(value: &str) -> Result<AccountId, IdError> {
        validate_id(value).map(|()| AccountId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_BYTES} bytes")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// The rule every identifier in an event follows.
pub fn validate_id(value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty);
    }
    if value.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong);
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

/// Ticket priority as the source system states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketPriority {
    Low,
    Normal,
    High,
    Urgent,
}

impl TicketPriority {
    pub const ALL: [TicketPriority; 4] = [
        TicketPriority::Low,
        TicketPriority::Normal,
        TicketPriority::High,
        TicketPriority::Urgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TicketPriority::Low => "low",
            TicketPriority::Normal => "normal",
            TicketPriority::High => "high",
            TicketPriority::Urgent => "urgent",
        }
    }

    pub fn parse(value: &str) -> Option<TicketPriority> {
        TicketPriority::ALL
            .into_iter()
            .find(|priority| priority.as_str() == value)
    }
}

/// The kind of survey a response answers, with its score range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SurveyKind {
    Nps,
    Csat,
    Ces,
}

impl SurveyKind {
    pub const ALL: [SurveyKind; 3] = [SurveyKind::Nps, SurveyKind::Csat, SurveyKind::Ces];

    pub fn as_str(self) -> &'static str {
        match self {
            SurveyKind::Nps => "nps",
            SurveyKind::Csat => "csat",
            SurveyKind::Ces => "ces",
        }
    }

    pub fn parse(value: &str) -> Option<SurveyKind> {
        SurveyKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
    }

    /// Inclusive score range: NPS 0-10, CSAT 1-5, CES 1-7.
    pub fn score_range(self) -> (u8, u8) {
        match self {
            SurveyKind::Nps => (0, 10),
            SurveyKind::Csat => (1, 5),
            SurveyKind::Ces => (1, 7),
        }
    }
}

/// The eight event types of events v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "ticket.opened")]
    TicketOpened,
    #[serde(rename = "ticket.updated")]
    TicketUpdated,
    #[serde(rename = "ticket.solved")]
    TicketSolved,
    #[serde(rename = "ticket.reopened")]
    TicketReopened,
    #[serde(rename = "usage.metric")]
    UsageMetric,
    #[serde(rename = "usage.milestone")]
    UsageMilestone,
    #[serde(rename = "survey.responded")]
    SurveyResponded,
    #[serde(rename = "account.upserted")]
    AccountUpserted,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::TicketOpened,
        EventType::TicketUpdated,
        EventType::TicketSolved,
        EventType::TicketReopened,
        EventType::UsageMetric,
        EventType::UsageMilestone,
        EventType::SurveyResponded,
        EventType::AccountUpserted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TicketOpened => "ticket.opened",
            EventType::TicketUpdated => "ticket.updated",
            EventType::TicketSolved => "ticket.solved",
            EventType::TicketReopened => "ticket.reopened",
            EventType::UsageMetric => "usage.metric",
            EventType::UsageMilestone => "usage.milestone",
            EventType::SurveyResponded => "survey.responded",
            EventType::AccountUpserted => "account.upserted",
        }
    }

    pub fn parse(value: &str) -> Option<EventType> {
        EventType::ALL
            .into_iter()
            .find(|event_type| event_type.as_str() == value)
    }

    pub fn is_ticket(self) -> bool {
        matches!(
            self,
            EventType::TicketOpened
                | EventType::TicketUpdated
                | EventType::TicketSolved
                | EventType::TicketReopened
        )
    }
}

/// One validated input record. Immutable once decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// CloudEvents `source`: the system that produced the event.
    pub source: String,
    /// CloudEvents `id`, unique per source.
    pub id: String,
    /// Event time (CloudEvents `time`).
    pub time: Millis,
    pub data: EventData,
}

impl Event {
    pub fn event_type(&self) -> EventType {
        self.data.event_type()
    }

    pub fn account_id(&self) -> &AccountId {
        self.data.account_id()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventData {
    TicketOpened(TicketOpened),
    TicketUpdated(TicketUpdated),
    TicketSolved(TicketSolved),
    TicketReopened(TicketReopened),
    UsageMetric(UsageMetric),
    UsageMilestone(UsageMilestone),
    SurveyResponded(SurveyResponded),
    AccountUpserted(AccountUpserted),
}

impl EventData {
    pub fn event_type(&self) -> EventType {
        match self {
            EventData::TicketOpened(_) => EventType::TicketOpened,
            EventData::TicketUpdated(_) => EventType::TicketUpdated,
            EventData::TicketSolved(_) => EventType::TicketSolved,
            EventData::TicketReopened(_) => EventType::TicketReopened,
            EventData::UsageMetric(_) => EventType::UsageMetric,
            EventData::UsageMilestone(_) => EventType::UsageMilestone,
            EventData::SurveyResponded(_) => EventType::SurveyResponded,
            EventData::AccountUpserted(_) => EventType::AccountUpserted,
        }
    }

    pub fn account_id(&self) -> &AccountId {
        match self {
            EventData::TicketOpened(data) => &data.account_id,
            EventData::TicketUpdated(data) => &data.account_id,
            EventData::TicketSolved(data) => &data.account_id,
            EventData::TicketReopened(data) => &data.account_id,
            EventData::UsageMetric(data) => &data.account_id,
            EventData::UsageMilestone(data) => &data.account_id,
            EventData::SurveyResponded(data) => &data.account_id,
            EventData::AccountUpserted(data) => &data.account_id,
        }
    }

    /// The free-text fields the taxonomy's text rules look at, by field name, in a fixed order.
    pub fn text_fields(&self) -> Vec<(&'static str, &str)> {
        let candidates: [(&'static str, Option<&String>); 2] = match self {
            EventData::TicketOpened(data) => [
                ("subject", data.subject.as_ref()),
                ("body", data.body.as_ref()),
            ],
            EventData::TicketUpdated(data) => [("comment", data.comment.as_ref()), ("", None)],
            EventData::TicketSolved(data) => [("resolution", data.resolution.as_ref()), ("", None)],
            EventData::SurveyResponded(data) => [("comment", data.comment.as_ref()), ("", None)],
            EventData::TicketReopened(_)
            | EventData::UsageMetric(_)
            | EventData::UsageMilestone(_)
            | EventData::AccountUpserted(_) => [("", None), ("", None)],
        };
        candidates
            .into_iter()
            .filter_map(|(name, value)| {
                value
                    .filter(|text| !text.is_empty())
                    .map(|text| (name, text.as_str()))
            })
            .collect()
    }

    /// A structured field by name, for the taxonomy's field rules. `type` is the event type.
    pub fn structured_field(&self, name: &str) -> Option<&str> {
        if name == "type" {
            return Some(self.event_type().as_str());
        }
        match (self, name) {
            (EventData::TicketOpened(data), "priority") => {
                data.priority.map(TicketPriority::as_str)
            }
            (EventData::TicketOpened(data), "channel") => data.channel.as_deref(),
            (EventData::TicketOpened(data), "product_area") => data.product_area.as_deref(),
            (EventData::TicketOpened(data), "journey_stage") => data.journey_stage.as_deref(),
            (EventData::TicketUpdated(data), "priority") => {
                data.priority.map(TicketPriority::as_str)
            }
            (EventData::TicketUpdated(data), "status") => data.status.as_deref(),
            (EventData::UsageMetric(data), "metric") => Some(data.metric.as_str()),
            (EventData::UsageMilestone(data), "milestone") => Some(data.milestone.as_str()),
            (EventData::SurveyResponded(data), "kind") => Some(data.kind.as_str()),
            (EventData::SurveyResponded(data), "journey_stage") => data.journey_stage.as_deref(),
            (EventData::SurveyResponded(data), "touchpoint") => data.touchpoint.as_deref(),
            _ => None,
        }
    }

    /// References into the source system that let a user open the original record.
    pub fn source_reference(&self) -> Option<(&'static str, &str)> {
        match self {
            EventData::TicketOpened(data) => Some(("ticket_id", data.ticket_id.as_str())),
            EventData::TicketUpdated(data) => Some(("ticket_id", data.ticket_id.as_str())),
            EventData::TicketSolved(data) => Some(("ticket_id", data.ticket_id.as_str())),
            EventData::TicketReopened(data) => Some(("ticket_id", data.ticket_id.as_str())),
            EventData::SurveyResponded(data) => Some(("response_id", data.response_id.as_str())),
            EventData::UsageMetric(_)
            | EventData::UsageMilestone(_)
            | EventData::AccountUpserted(_) => None,
        }
    }

    /// The journey stage the event names itself, if any.
    pub fn journey_stage(&self) -> Option<&str> {
        match self {
            EventData::TicketOpened(data) => data.journey_stage.as_deref(),
            EventData::SurveyResponded(data) => data.journey_stage.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketOpened {
    pub ticket_id: String,
    pub account_id: AccountId,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub priority: Option<TicketPriority>,
    pub channel: Option<String>,
    pub requester: Option<String>,
    pub product_area: Option<String>,
    pub journey_stage: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketUpdated {
    pub ticket_id: String,
    pub account_id: AccountId,
    pub status: Option<String>,
    pub priority: Option<TicketPriority>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketSolved {
    pub ticket_id: String,
    pub account_id: AccountId,
    pub resolution: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketReopened {
    pub ticket_id: String,
    pub account_id: AccountId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageMetric {
    pub account_id: AccountId,
    pub metric: String,
    /// Always finite.
    pub value: f64,
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageMilestone {
    pub account_id: AccountId,
    pub milestone: String,
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurveyResponded {
    pub response_id: String,
    pub account_id: AccountId,
    pub kind: SurveyKind,
    /// Within `kind.score_range()`.
    pub score: u8,
    pub comment: Option<String>,
    pub journey_stage: Option<String>,
    pub touchpoint: Option<String>,
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountUpserted {
    pub account_id: AccountId,
    pub name: Option<String>,
    pub tier: Option<String>,
    /// Annual recurring revenue; finite and not negative.
    pub arr: Option<f64>,
    pub region: Option<String>,
    pub segment: Option<String>,
    pub csm: Option<String>,
    pub lifecycle_stage: Option<String>,
    pub started_at: Option<Millis>,
}

/// Formats a millisecond timestamp as RFC 3339 UTC with millisecond precision.
pub fn format_millis(millis: Millis) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(millis) {
        Some(time) => time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => millis.to_string(),
    }
}

/// Serde helper: a millisecond timestamp as RFC 3339 text.
pub fn serialize_millis<S: serde::Serializer>(
    millis: &Millis,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_millis(*millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_reject_empty_long_and_control_characters() {
        assert_eq!(AccountId::parse(""), Err(IdError::Empty));
        assert_eq!(AccountId::parse(&"a".repeat(257)), Err(IdError::TooLong));
        assert_eq!(AccountId::parse("a\nb"), Err(IdError::ControlCharacter));
        assert_eq!(AccountId::parse("acme-1").unwrap().as_str(), "acme-1");
    }

    #[test]
    fn event_type_names_round_trip() {
        for event_type in EventType::ALL {
            assert_eq!(EventType::parse(event_type.as_str()), Some(event_type));
        }
        assert_eq!(EventType::parse("ticket.deleted"), None);
    }

    #[test]
    fn millis_format_as_rfc3339_utc() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
    }
}
