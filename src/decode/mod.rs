//! decode: CloudEvents 1.0 JSON in, validated [`Event`]s or bounded [`Rejection`]s out.
//!
//! The first stage of the core and the edge where wire types stop (STYLE.md item 5): nothing past this
//! module sees JSON. Bad input is data (DESIGN.md invariant 4): every rejection carries one code from
//! the fixed set [`RejectionCode::ALL`], used as a metric label and stored with the dead letter, and a
//! sentence that names the field; serde's own wording appears only inside that sentence.
//!
//! How an event is read, and why:
//!
//! - **Fast path.** One serde pass over the borrowed input into private wire structs (`wire.rs`) whose
//!   fields are `WireValue`s: strings borrow from the input unless they hold escapes, and a field of
//!   the wrong JSON type is read rather than refused. When `type` precedes `data` (the usual order),
//!   `data` is read into the wire struct of that type in the same pass; otherwise it is kept as a
//!   `RawValue` and read once `type` is known. The checks in `fields.rs` then see every field in a
//!   fixed order, so the fast path alone gives the precise code and message for every missing,
//!   mistyped, empty, oversized or out-of-range field, and the first problem in that order wins
//!   whatever the order of the members in the input. The processor re-decodes every logged event, so
//!   this is the path that must be cheap: about 1 µs for a 500-byte ticket.opened.
//! - **Slow path.** Only when serde cannot read the input at all: it is not UTF-8, not JSON, not a
//!   JSON object, or repeats a member (serde refuses duplicates, which a `serde_json::Value` would
//!   silently resolve to the last one). It parses a `serde_json::Value` to tell these apart and to
//!   recover the event's id. All of them are `invalid_json`.
//!
//! [`split_body`] cuts a request body into events for the HTTP API and file ingest.

mod fields;
mod wire;

#[cfg(test)]
mod tests;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::domain::{validate_id, Event, EventData, EventType};
use fields::Problem;
use wire::{TypedData, WireData, WireEvent, WireValue};

/// Longest free-text field (subject, body, comment, ...) accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The fixed set of rejection codes (used as metric labels and stored with dead letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    InvalidJson,
    UnknownType,
    MissingField,
    InvalidField,
    OutOfRange,
    TooLarge,
    InvalidTime,
}

impl RejectionCode {
    pub const ALL: [RejectionCode; 7] = [
        RejectionCode::InvalidJson,
        RejectionCode::UnknownType,
        RejectionCode::MissingField,
        RejectionCode::InvalidField,
        RejectionCode::OutOfRange,
        RejectionCode::TooLarge,
        RejectionCode::InvalidTime,
    ];

    /// The code as it appears in metric labels, HTTP answers and dead-letter rows.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::InvalidJson => "invalid_json",
            RejectionCode::UnknownType => "unknown_type",
            RejectionCode::MissingField => "missing_field",
            RejectionCode::InvalidField => "invalid_field",
            RejectionCode::OutOfRange => "out_of_range",
            RejectionCode::TooLarge => "too_large",
            RejectionCode::InvalidTime => "invalid_time",
        }
    }

    /// One sentence for the README and the OpenAPI document.
    pub fn describe(self) -> &'static str {
        match self {
            RejectionCode::InvalidJson => {
                "The event or request body is not valid JSON, the event is not a JSON object, \
                 or an object repeats a field."
            }
            RejectionCode::UnknownType => {
                "The event's type is not one of the eight event types of events v1."
            }
            RejectionCode::MissingField => "A required attribute or data field is absent or null.",
            RejectionCode::InvalidField => {
                "A field has the wrong JSON type, is empty, contains control characters, or is \
                 not one of its allowed values (specversion, priority, survey kind, whole-number \
                 score)."
            }
            RejectionCode::OutOfRange => {
                "A number lies outside its range: a survey score outside its kind's scale, or a \
                 negative arr."
            }
            RejectionCode::TooLarge => {
                "An identifier is longer than 256 bytes, a text field is longer than 64 KiB, or \
                 a request holds more events than allowed."
            }
            RejectionCode::InvalidTime => {
                "A time is not an RFC 3339 timestamp, or lies before 1970 or after 9999."
            }
        }
    }
}

/// Why one event (or a whole request body) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize)]
#[error("{code:?}: {message}")]
pub struct Rejection {
    pub code: RejectionCode,
    /// The event's id when it could be read: a string that is itself a valid id.
    pub id: Option<String>,
    pub message: String,
}

/// Decodes one CloudEvents 1.0 structured-mode JSON object.
pub fn decode_event(bytes: &[u8]) -> Result<Event, Rejection> {
    // Anything but an object goes straight to the slow path, which says what it is instead.
    if first_non_whitespace(bytes) != Some(b'{') {
        return Err(reject_unreadable(bytes, None));
    }
    // JSON text is UTF-8 (RFC 8259). Checking the whole input once is cheaper than serde_json's
    // check of each string it reads from a byte slice, and refuses bad bytes in skipped members too.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(reject_unreadable(bytes, None));
    };
    let mut wire: WireEvent<'_> = match serde_json::from_str(text) {
        Ok(wire) => wire,
        Err(error) => return Err(reject_unreadable(bytes, Some(error))),
    };
    // `data` that preceded `type` is read now, before any check, so that a repeated data field is
    // refused whatever the order of the event's members.
    if let (Some(WireData::Raw(raw)), Some(event_type)) = (&wire.data, known_type(&wire)) {
        match wire::read_data(event_type, raw) {
            Ok(data) => wire.data = data,
            Err(error) => return Err(reject_unreadable(bytes, Some(error))),
        }
    }
    decode_wire(&wire).map_err(|problem| Rejection {
        code: problem.code,
        id: readable_id(&wire.id),
        message: problem.message,
    })
}

fn known_type(wire: &WireEvent<'_>) -> Option<EventType> {
    match &wire.event_type {
        Some(WireValue::Text(text)) => EventType::parse(text),
        _ => None,
    }
}

/// The checks, in their fixed order: the envelope's attributes, then `data`.
fn decode_wire(wire: &WireEvent<'_>) -> Result<Event, Problem> {
    fields::check_specversion(&wire.specversion)?;
    let id = fields::required_id_text("id", &wire.id)?;
    let source = fields::required_id_text("source", &wire.source)?;
    let event_type = fields::required_event_type(&wire.event_type)?;
    let time = fields::required_time("time", &wire.time)?;
    let data = match &wire.data {
        None => {
            return Err(Problem::new(
                RejectionCode::MissingField,
                "data is required but is missing or null".to_owned(),
            ))
        }
        Some(WireData::NotObject(json_type)) => {
            return Err(Problem::new(
                RejectionCode::InvalidField,
                format!("data must be a JSON object, got {json_type}"),
            ))
        }
        Some(WireData::Typed(typed)) => typed,
        // Not reached: decode_event reads raw data as soon as the type is known, and an unknown
        // type was refused above. Refusing rather than panicking keeps decode total.
        Some(WireData::Raw(_)) => {
            return Err(Problem::new(
                RejectionCode::InvalidField,
                format!("data could not be read as {}", event_type.as_str()),
            ))
        }
    };
    Ok(Event {
        source: source.to_owned(),
        id: id.to_owned(),
        time,
        data: build_data(data)?,
    })
}

fn build_data(data: &TypedData<'_>) -> Result<EventData, Problem> {
    Ok(match data {
        TypedData::TicketOpened(wire) => EventData::TicketOpened(fields::ticket_opened(wire)?),
        TypedData::TicketUpdated(wire) => EventData::TicketUpdated(fields::ticket_updated(wire)?),
        TypedData::TicketSolved(wire) => EventData::TicketSolved(fields::ticket_solved(wire)?),
        TypedData::TicketReopened(wire) => {
            EventData::TicketReopened(fields::ticket_reopened(wire)?)
        }
        TypedData::UsageMetric(wire) => EventData::UsageMetric(fields::usage_metric(wire)?),
        TypedData::UsageMilestone(wire) => {
            EventData::UsageMilestone(fields::usage_milestone(wire)?)
        }
        TypedData::SurveyResponded(wire) => {
            EventData::SurveyResponded(fields::survey_responded(wire)?)
        }
        TypedData::AccountUpserted(wire) => {
            EventData::AccountUpserted(fields::account_upserted(wire)?)
        }
    })
}

/// The slow path: the input is not JSON, not a JSON object, or repeats a field. Parsing it as a
/// `serde_json::Value` tells which, and recovers the event's id when the input is an object.
/// `error` is serde's reason when it read the input as an object and still failed.
fn reject_unreadable(bytes: &[u8], error: Option<serde_json::Error>) -> Rejection {
    let (id, message) = match serde_json::from_slice::<Value>(bytes) {
        Err(parse_error) => (None, format!("the event is not valid JSON: {parse_error}")),
        Ok(Value::Object(object)) => {
            let id = object
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| validate_id(id).is_ok())
                .map(str::to_owned);
            let message = match error {
                Some(error) => format!("the event could not be read: {error}"),
                None => "the event could not be read".to_owned(),
            };
            (id, message)
        }
        Ok(other) => (
            None,
            format!(
                "the event must be a JSON object, got {}",
                json_type_of(&other)
            ),
        ),
    };
    Rejection {
        code: RejectionCode::InvalidJson,
        id,
        message,
    }
}

/// The event's id for a rejection, when it is a string that is itself a valid id.
fn readable_id(field: &Option<WireValue<'_>>) -> Option<String> {
    match field {
        Some(WireValue::Text(id)) if validate_id(id).is_ok() => Some(id.to_string()),
        _ => None,
    }
}

fn first_non_whitespace(bytes: &[u8]) -> Option<u8> {
    bytes
        .iter()
        .copied()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
}

fn json_type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Splits a request body into the raw bytes of each event, in order. `ndjson` = the request's
/// content type was application/x-ndjson: each non-blank line is one item (a line that is not valid
/// JSON is still returned as an item, so that decode_event rejects that line only; a trailing \r is
/// trimmed). Otherwise the body is either one JSON object or a JSON array of objects (each element's
/// bytes come from serde_json's RawValue, without re-serializing).
/// Errors: a body that is not valid JSON at all (non-NDJSON) -> Rejection { code: InvalidJson, .. };
/// more than `max_events` items -> TooLarge.
pub fn split_body<'a>(
    body: &'a [u8],
    ndjson: bool,
    max_events: usize,
) -> Result<Vec<&'a [u8]>, Rejection> {
    if ndjson {
        return split_ndjson(body, max_events);
    }
    let items: Vec<&'a [u8]> = if first_non_whitespace(body) == Some(b'[') {
        let elements: Vec<&'a RawValue> = serde_json::from_slice(body).map_err(body_not_json)?;
        elements
            .into_iter()
            .map(|element| element.get().as_bytes())
            .collect()
    } else {
        // One event. Anything that is JSON but not an object is still handed on, so that
        // decode_event rejects it with its index like any other bad event.
        let element: &'a RawValue = serde_json::from_slice(body).map_err(body_not_json)?;
        vec![element.get().as_bytes()]
    };
    if items.len() > max_events {
        return Err(too_many_events(max_events));
    }
    Ok(items)
}

fn split_ndjson(body: &[u8], max_events: usize) -> Result<Vec<&[u8]>, Rejection> {
    let mut items = Vec::new();
    for line in body.split(|byte| *byte == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if items.len() == max_events {
            return Err(too_many_events(max_events));
        }
        items.push(line);
    }
    Ok(items)
}

fn body_not_json(error: serde_json::Error) -> Rejection {
    Rejection {
        code: RejectionCode::InvalidJson,
        id: None,
        message: format!("the request body is not valid JSON: {error}"),
    }
}

fn too_many_events(max_events: usize) -> Rejection {
    Rejection {
        code: RejectionCode::TooLarge,
        id: None,
        message: format!("the request body holds more than {max_events} events"),
    }
}
