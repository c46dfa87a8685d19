//! The checks every attribute and data field goes through, and the per-type builders that apply them.
//!
//! Fields are checked in a fixed order (the envelope's attributes, then `data`'s fields in the order
//! DESIGN.md lists them), and the first problem wins, so an event with several problems is always
//! rejected with the same code and message.

use chrono::{DateTime, Datelike, Utc};

use super::wire::{
    WireAccountUpserted, WireField, WireSurveyResponded, WireTicketOpened, WireTicketReopened,
    WireTicketSolved, WireTicketUpdated, WireUsageMetric, WireUsageMilestone, WireValue,
};
use super::{RejectionCode, MAX_TEXT_BYTES};
use crate::domain::{
    validate_id, AccountId, AccountUpserted, IdError, Millis, SurveyKind, SurveyResponded,
    TicketOpened, TicketPriority, TicketReopened, TicketSolved, TicketUpdated, UsageMetric,
    UsageMilestone, MAX_ID_BYTES,
};

/// What is wrong with one field: the code and the sentence that names the field. The caller adds the
/// event's id to make a [`super::Rejection`].
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Problem {
    pub code: RejectionCode,
    pub message: String,
}

impl Problem {
    pub(super) fn new(code: RejectionCode, message: String) -> Problem {
        Problem { code, message }
    }
}

/// Longest part of an offending value that a message repeats, in bytes: messages go into HTTP
/// answers, logs and dead-letter rows, so they stay short whatever the input.
const QUOTE_BYTES: usize = 64;

/// The value as a message shows it: quoted, escaped, and cut short at a character boundary.
pub(super) fn quote(value: &str) -> String {
    if value.len() <= QUOTE_BYTES {
        return format!("{value:?}");
    }
    let mut end = QUOTE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &value[..end], value.len())
}

/// A number as a message shows it, short even for 1e300.
pub(super) fn number_text(value: f64) -> String {
    if value.abs() < 1e15 {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

fn missing(name: &str) -> Problem {
    Problem::new(
        RejectionCode::MissingField,
        format!("{name} is required but is missing or null"),
    )
}

fn wrong_type(name: &str, expected: &str, value: &WireValue<'_>) -> Problem {
    Problem::new(
        RejectionCode::InvalidField,
        format!("{name} must be {expected}, got {}", value.json_type()),
    )
}

/// A string field: `None` when absent or null, the text when a string, invalid_field otherwise.
fn text<'v>(name: &str, field: &'v WireField<'_>) -> Result<Option<&'v str>, Problem> {
    match field {
        None => Ok(None),
        Some(WireValue::Text(text)) => Ok(Some(text)),
        Some(other) => Err(wrong_type(name, "a string", other)),
    }
}

fn required_text<'v>(name: &str, field: &'v WireField<'_>) -> Result<&'v str, Problem> {
    text(name, field)?.ok_or_else(|| missing(name))
}

/// A number field: `None` when absent or null, the number when a JSON number, invalid_field otherwise.
fn number(name: &str, field: &WireField<'_>) -> Result<Option<f64>, Problem> {
    match field {
        None => Ok(None),
        // serde_json refuses numbers that overflow an f64, so this only guards the domain's promise.
        Some(WireValue::Number(number)) if number.is_finite() => Ok(Some(*number)),
        Some(other) => Err(wrong_type(name, "a finite number", other)),
    }
}

fn required_number(name: &str, field: &WireField<'_>) -> Result<f64, Problem> {
    number(name, field)?.ok_or_else(|| missing(name))
}

fn check_id(name: &str, value: &str) -> Result<(), Problem> {
    validate_id(value).map_err(|error| id_problem(name, value, error))
}

fn id_problem(name: &str, value: &str, error: IdError) -> Problem {
    match error {
        IdError::Empty => Problem::new(
            RejectionCode::InvalidField,
            format!("{name} must not be empty"),
        ),
        IdError::TooLong => Problem::new(
            RejectionCode::TooLarge,
            format!(
                "{name} must be at most {MAX_ID_BYTES} bytes, got {} bytes",
                value.len()
            ),
        ),
        IdError::ControlCharacter => Problem::new(
            RejectionCode::InvalidField,
            format!(
                "{name} must not contain control characters, got {}",
                quote(value)
            ),
        ),
    }
}

/// An identifier (event id, source, ticket_id, account_id, ...), borrowed from the wire value.
pub(super) fn required_id_text<'v>(
    name: &str,
    field: &'v WireField<'_>,
) -> Result<&'v str, Problem> {
    let value = required_text(name, field)?;
    check_id(name, value)?;
    Ok(value)
}

fn required_id(name: &str, field: &WireField<'_>) -> Result<String, Problem> {
    required_id_text(name, field).map(str::to_owned)
}

fn optional_id(name: &str, field: &WireField<'_>) -> Result<Option<String>, Problem> {
    match text(name, field)? {
        None => Ok(None),
        Some(value) => check_id(name, value).map(|()| Some(value.to_owned())),
    }
}

fn required_account_id(field: &WireField<'_>) -> Result<AccountId, Problem> {
    let name = "data.account_id";
    let value = required_text(name, field)?;
    AccountId::parse(value).map_err(|error| id_problem(name, value, error))
}

/// A free-text field: any string up to [`MAX_TEXT_BYTES`], empty included.
fn optional_text(name: &str, field: &WireField<'_>) -> Result<Option<String>, Problem> {
    match text(name, field)? {
        None => Ok(None),
        Some(value) if value.len() > MAX_TEXT_BYTES => Err(Problem::new(
            RejectionCode::TooLarge,
            format!(
                "{name} must be at most {MAX_TEXT_BYTES} bytes, got {} bytes",
                value.len()
            ),
        )),
        Some(value) => Ok(Some(value.to_owned())),
    }
}

fn optional_priority(field: &WireField<'_>) -> Result<Option<TicketPriority>, Problem> {
    let name = "data.priority";
    match text(name, field)? {
        None => Ok(None),
        Some(value) => TicketPriority::parse(value).map(Some).ok_or_else(|| {
            Problem::new(
                RejectionCode::InvalidField,
                format!(
                    "{name} must be one of low, normal, high, urgent, got {}",
                    quote(value)
                ),
            )
        }),
    }
}

fn required_kind(field: &WireField<'_>) -> Result<SurveyKind, Problem> {
    let name = "data.kind";
    let value = required_text(name, field)?;
    SurveyKind::parse(value).ok_or_else(|| {
        Problem::new(
            RejectionCode::InvalidField,
            format!("{name} must be one of nps, csat, ces, got {}", quote(value)),
        )
    })
}

fn required_score(field: &WireField<'_>, kind: SurveyKind) -> Result<u8, Problem> {
    let name = "data.score";
    let score = match field {
        Some(WireValue::Number(number)) => *number,
        Some(other) => return Err(wrong_type(name, "a whole number", other)),
        None => return Err(missing(name)),
    };
    if score.fract() != 0.0 {
        return Err(Problem::new(
            RejectionCode::InvalidField,
            format!("{name} must be a whole number, got {}", number_text(score)),
        ));
    }
    let (lowest, highest) = kind.score_range();
    if score < f64::from(lowest) || score > f64::from(highest) {
        let article = match kind {
            SurveyKind::Nps => "an",
            SurveyKind::Csat | SurveyKind::Ces => "a",
        };
        return Err(Problem::new(
            RejectionCode::OutOfRange,
            format!(
                "{name} must be between {lowest} and {highest} for {article} {} survey, got {}",
                kind.as_str(),
                number_text(score)
            ),
        ));
    }
    // Whole and within 0..=10, so the conversion is exact.
    Ok(score as u8)
}

fn optional_arr(field: &WireField<'_>) -> Result<Option<f64>, Problem> {
    let name = "data.arr";
    match number(name, field)? {
        None => Ok(None),
        Some(arr) if arr < 0.0 => Err(Problem::new(
            RejectionCode::OutOfRange,
            format!("{name} must not be negative, got {}", number_text(arr)),
        )),
        // Adding zero turns -0.0 into 0.0, so equal inputs store equal values.
        Some(arr) => Ok(Some(arr + 0.0)),
    }
}

/// An RFC 3339 time between the years 1970 and 9999 (UTC), as milliseconds since the epoch.
fn parse_time(name: &str, value: &str) -> Result<Millis, Problem> {
    let parsed = DateTime::parse_from_rfc3339(value).map_err(|error| {
        Problem::new(
            RejectionCode::InvalidTime,
            format!(
                "{name} must be an RFC 3339 time such as 2024-05-01T12:00:00Z, got {} ({error})",
                quote(value)
            ),
        )
    })?;
    let utc = parsed.with_timezone(&Utc);
    if !(1970..=9999).contains(&utc.year()) {
        return Err(Problem::new(
            RejectionCode::InvalidTime,
            format!(
                "{name} must lie between the years 1970 and 9999 (UTC), got {}",
                quote(value)
            ),
        ));
    }
    Ok(utc.timestamp_millis())
}

pub(super) fn required_time(name: &str, field: &WireField<'_>) -> Result<Millis, Problem> {
    parse_time(name, required_text(name, field)?)
}

fn optional_time(name: &str, field: &WireField<'_>) -> Result<Option<Millis>, Problem> {
    match text(name, field)? {
        None => Ok(None),
        Some(value) => parse_time(name, value).map(Some),
    }
}

/// `specversion`, which must be the string "1.0".
pub(super) fn check_specversion(field: &WireField<'_>) -> Result<(), Problem> {
    let name = "specversion";
    let value = required_text(name, field)?;
    if value == "1.0" {
        Ok(())
    } else {
        Err(Problem::new(
            RejectionCode::InvalidField,
            format!("{name} must be \"1.0\", got {}", quote(value)),
        ))
    }
}

/// `type`, which must name one of the eight event types of events v1.
pub(super) fn required_event_type(
    field: &WireField<'_>,
) -> Result<crate::domain::EventType, Problem> {
    let name = "type";
    let value = required_text(name, field)?;
    crate::domain::EventType::parse(value).ok_or_else(|| {
        Problem::new(
            RejectionCode::UnknownType,
            format!(
                "{name} must be one of ticket.opened, ticket.updated, ticket.solved, \
                 ticket.reopened, usage.metric, usage.milestone, survey.responded, \
                 account.upserted, got {}",
                quote(value)
            ),
        )
    })
}

// The builders: one per event type, each field checked in the order DESIGN.md lists it (a struct
// literal evaluates its fields in source order).

pub(super) fn ticket_opened(wire: &WireTicketOpened<'_>) -> Result<TicketOpened, Problem> {
    Ok(TicketOpened {
        ticket_id: required_id("data.ticket_id", &wire.ticket_id)?,
        account_id: required_account_id(&wire.account_id)?,
        subject: optional_text("data.subject", &wire.subject)?,
        body: optional_text("data.body", &wire.body)?,
        priority: optional_priority(&wire.priority)?,
        channel: optional_text("data.channel", &wire.channel)?,
        requester: optional_text("data.requester", &wire.requester)?,
        product_area: optional_text("data.product_area", &wire.product_area)?,
        journey_stage: optional_text("data.journey_stage", &wire.journey_stage)?,
    })
}

pub(super) fn ticket_updated(wire: &WireTicketUpdated<'_>) -> Result<TicketUpdated, Problem> {
    Ok(TicketUpdated {
        ticket_id: required_id("data.ticket_id", &wire.ticket_id)?,
        account_id: required_account_id(&wire.account_id)?,
        status: optional_text("data.status", &wire.status)?,
        priority: optional_priority(&wire.priority)?,
        comment: optional_text("data.comment", &wire.comment)?,
    })
}

pub(super) fn ticket_solved(wire: &WireTicketSolved<'_>) -> Result<TicketSolved, Problem> {
    Ok(TicketSolved {
        ticket_id: required_id("data.ticket_id", &wire.ticket_id)?,
        account_id: required_account_id(&wire.account_id)?,
        resolution: optional_text("data.resolution", &wire.resolution)?,
    })
}

pub(super) fn ticket_reopened(wire: &WireTicketReopened<'_>) -> Result<TicketReopened, Problem> {
    Ok(TicketReopened {
        ticket_id: required_id("data.ticket_id", &wire.ticket_id)?,
        account_id: required_account_id(&wire.account_id)?,
    })
}

pub(super) fn usage_metric(wire: &WireUsageMetric<'_>) -> Result<UsageMetric, Problem> {
    Ok(UsageMetric {
        account_id: required_account_id(&wire.account_id)?,
        // Metric and milestone names are identifiers too: non-empty, short, no control characters.
        metric: required_id("data.metric", &wire.metric)?,
        value: required_number("data.value", &wire.value)?,
        user_id: optional_id("data.user_id", &wire.user_id)?,
    })
}

pub(super) fn usage_milestone(wire: &WireUsageMilestone<'_>) -> Result<UsageMilestone, Problem> {
    Ok(UsageMilestone {
        account_id: required_account_id(&wire.account_id)?,
        milestone: required_id("data.milestone", &wire.milestone)?,
        user_id: optional_id("data.user_id", &wire.user_id)?,
    })
}

pub(super) fn survey_responded(wire: &WireSurveyResponded<'_>) -> Result<SurveyResponded, Problem> {
    let response_id = required_id("data.response_id", &wire.response_id)?;
    let account_id = required_account_id(&wire.account_id)?;
    let kind = required_kind(&wire.kind)?;
    Ok(SurveyResponded {
        response_id,
        account_id,
        kind,
        score: required_score(&wire.score, kind)?,
        comment: optional_text("data.comment", &wire.comment)?,
        journey_stage: optional_text("data.journey_stage", &wire.journey_stage)?,
        touchpoint: optional_text("data.touchpoint", &wire.touchpoint)?,
        user_id: optional_id("data.user_id", &wire.user_id)?,
    })
}

pub(super) fn account_upserted(wire: &WireAccountUpserted<'_>) -> Result<AccountUpserted, Problem> {
    Ok(AccountUpserted {
        account_id: required_account_id(&wire.account_id)?,
        name: optional_text("data.name", &wire.name)?,
        tier: optional_text("data.tier", &wire.tier)?,
        arr: optional_arr(&wire.arr)?,
        region: optional_text("data.region", &wire.region)?,
        segment: optional_text("data.segment", &wire.segment)?,
        csm: optional_text("data.csm", &wire.csm)?,
        lifecycle_stage: optional_text("data.lifecycle_stage", &wire.lifecycle_stage)?,
        started_at: optional_time("data.started_at", &wire.started_at)?,
    })
}
