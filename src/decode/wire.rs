//! Wire types: the CloudEvents JSON shape, private to `decode` (STYLE.md item 5).
//!
//! Every attribute and data field is read as an optional [`WireValue`], a JSON value that remembers its
//! JSON type and borrows strings from the input where it can. serde therefore never fails on a field
//! of the wrong type: the checks in `fields.rs` see every field, in a fixed order, and name the field
//! and the code precisely, so the fast path needs no second opinion. serde fails only on input that is
//! not a JSON object or that repeats a member, which the slow path in `mod.rs` sorts out.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::Deserialize as DeriveDeserialize;
use serde_json::value::RawValue;

use crate::domain::EventType;

/// One JSON value as read from the wire. Strings borrow from the input unless they hold escapes;
/// arrays and objects are skipped, since no field of events v1 takes one and only the JSON type matters
/// for the message that rejects them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum WireValue<'a> {
    Text(Cow<'a, str>),
    Number(f64),
    Boolean,
    Array,
    Object,
    Null,
}

impl WireValue<'_> {
    /// The JSON type, as a message names it: "got a number".
    pub(super) fn json_type(&self) -> &'static str {
        match self {
            WireValue::Text(_) => "a string",
            WireValue::Number(_) => "a number",
            WireValue::Boolean => "a boolean",
            WireValue::Array => "an array",
            WireValue::Object => "an object",
            WireValue::Null => "null",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for WireValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WireValueVisitor(PhantomData))
    }
}

struct WireValueVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for WireValueVisitor<'a> {
    type Value = WireValue<'a>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(WireValue::Text(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(WireValue::Text(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(WireValue::Text(Cow::Owned(value)))
    }

    fn visit_bool<E>(self, _value: bool) -> Result<Self::Value, E> {
        Ok(WireValue::Boolean)
    }

    // JSON numbers arrive as u64, i64 or f64; every number field of events v1 fits an f64 (scores are
    // range-checked, usage values and arr are f64 in the domain), so one representation is enough.
    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(WireValue::Number(value as f64))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(WireValue::Number(value as f64))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
        Ok(WireValue::Number(value))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(WireValue::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(WireValue::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(WireValue::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(WireValue::Object)
    }
}

/// A field as read: `None` when absent or JSON null, which decode treats alike.
pub(super) type WireField<'a> = Option<WireValue<'a>>;

/// The CloudEvents 1.0 structured-mode envelope. Other attributes (datacontenttype, subject,
/// extensions) are skipped.
pub(super) struct WireEvent<'a> {
    pub specversion: WireField<'a>,
    pub id: WireField<'a>,
    pub source: WireField<'a>,
    pub event_type: WireField<'a>,
    pub time: WireField<'a>,
    /// `None` when absent or null.
    pub data: Option<WireData<'a>>,
}

/// `data` as the envelope read it.
pub(super) enum WireData<'a> {
    /// Read into the wire struct of the event's type in the same pass, because `type` came first
    /// (the usual order) and names a known type. Boxed because it is many times the size of the
    /// other variants; the allocation costs no measurable time next to the moves it saves.
    Typed(Box<TypedData<'a>>),
    /// Kept raw, because `type` came after `data` or is not a known type; JSON does not order an
    /// object's members. [`read_data`] reads it once the type is known.
    Raw(&'a RawValue),
    /// Not a JSON object; the JSON type it has instead, for the message.
    NotObject(&'static str),
}

/// The wire struct of each event type.
pub(super) enum TypedData<'a> {
    TicketOpened(WireTicketOpened<'a>),
    TicketUpdated(WireTicketUpdated<'a>),
    TicketSolved(WireTicketSolved<'a>),
    TicketReopened(WireTicketReopened<'a>),
    UsageMetric(WireUsageMetric<'a>),
    UsageMilestone(WireUsageMilestone<'a>),
    SurveyResponded(WireSurveyResponded<'a>),
    AccountUpserted(WireAccountUpserted<'a>),
}

/// Reads raw `data` (see [`WireData::Raw`]) into the wire struct of `event_type`. Fails only if
/// `data` repeats a field.
pub(super) fn read_data<'a>(
    event_type: EventType,
    raw: &'a RawValue,
) -> Result<Option<WireData<'a>>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    let data = DataSeed(event_type, PhantomData).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(data)
}

/// The members of the envelope that decode reads; every other member is skipped.
#[derive(DeriveDeserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum EnvelopeKey {
    Specversion,
    Id,
    Source,
    Type,
    Time,
    Data,
    #[serde(other)]
    Other,
}

// Written by hand rather than derived so that `data` is read in the same pass as the rest of the
// event when `type` precedes it: reading it as a RawValue first and again as a struct scanned the
// bulk of every event twice. Like a derived impl, it refuses a repeated member.
impl<'de: 'a, 'a> Deserialize<'de> for WireEvent<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EnvelopeVisitor(PhantomData))
    }
}

struct EnvelopeVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for EnvelopeVisitor<'a> {
    type Value = WireEvent<'a>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a CloudEvents JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Each member is `None` until seen, then `Some(value)`, where the value may itself be
        // `None` for a JSON null: a repeated member is refused even if its first value was null.
        let mut specversion: Option<WireField<'a>> = None;
        let mut id: Option<WireField<'a>> = None;
        let mut source: Option<WireField<'a>> = None;
        let mut event_type: Option<WireField<'a>> = None;
        let mut time: Option<WireField<'a>> = None;
        let mut data: Option<Option<WireData<'a>>> = None;
        while let Some(key) = map.next_key::<EnvelopeKey>()? {
            match key {
                EnvelopeKey::Specversion => read_once(&mut map, &mut specversion, "specversion")?,
                EnvelopeKey::Id => read_once(&mut map, &mut id, "id")?,
                EnvelopeKey::Source => read_once(&mut map, &mut source, "source")?,
                EnvelopeKey::Type => read_once(&mut map, &mut event_type, "type")?,
                EnvelopeKey::Time => read_once(&mut map, &mut time, "time")?,
                EnvelopeKey::Data => {
                    if data.is_some() {
                        return Err(de::Error::duplicate_field("data"));
                    }
                    let known_type = match &event_type {
                        Some(Some(WireValue::Text(text))) => EventType::parse(text),
                        _ => None,
                    };
                    data = Some(match known_type {
                        Some(known_type) => {
                            map.next_value_seed(DataSeed(known_type, PhantomData))?
                        }
                        None => map.next_value::<Option<&'a RawValue>>()?.map(WireData::Raw),
                    });
                }
                EnvelopeKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(WireEvent {
            specversion: specversion.flatten(),
            id: id.flatten(),
            source: source.flatten(),
            event_type: event_type.flatten(),
            time: time.flatten(),
            data: data.flatten(),
        })
    }
}

fn read_once<'de: 'a, 'a, A: MapAccess<'de>>(
    map: &mut A,
    slot: &mut Option<WireField<'a>>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// Reads `data` as the wire struct of a known event type; `None` for null.
struct DataSeed<'a>(EventType, PhantomData<&'a ()>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for DataSeed<'a> {
    type Value = Option<WireData<'a>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        // deserialize_any rather than deserialize_struct: serde_json would read a JSON array into a
        // struct field by field, and `data` must be an object.
        deserializer.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for DataSeed<'a> {
    type Value = Option<WireData<'a>>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let map = MapAccessDeserializer::new(map);
        let typed = match self.0 {
            EventType::TicketOpened => TypedData::TicketOpened(Deserialize::deserialize(map)?),
            EventType::TicketUpdated => TypedData::TicketUpdated(Deserialize::deserialize(map)?),
            EventType::TicketSolved => TypedData::TicketSolved(Deserialize::deserialize(map)?),
            EventType::TicketReopened => TypedData::TicketReopened(Deserialize::deserialize(map)?),
            EventType::UsageMetric => TypedData::UsageMetric(Deserialize::deserialize(map)?),
            EventType::UsageMilestone => TypedData::UsageMilestone(Deserialize::deserialize(map)?),
            EventType::SurveyResponded => {
                TypedData::SurveyResponded(Deserialize::deserialize(map)?)
            }
            EventType::AccountUpserted => {
                TypedData::AccountUpserted(Deserialize::deserialize(map)?)
            }
        };
        Ok(Some(WireData::Typed(Box::new(typed))))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_borrowed_str<E>(self, _value: &'de str) -> Result<Self::Value, E> {
        Ok(Some(WireData::NotObject("a string")))
    }

    fn visit_str<E>(self, _value: &str) -> Result<Self::Value, E> {
        Ok(Some(WireData::NotObject("a string")))
    }

    fn visit_bool<E>(self, _value: bool) -> Result<Self::Value, E> {
        Ok(Some(WireData::NotObject("a boolean")))
    }

    fn visit_u64<E>(self, _value: u64) -> Result<Self::Value, E> {
        Ok(Some(WireData::NotObject("a number")))
    }

    fn visit_i64<E>(self, _value: i64) -> Result<Self::Value, E> {
        Ok(Some(WireData::NotObject("a number")))
    }

    fn visit_f64<E>(self, _value: f64) -> Result<Self::Value, E> {
        Ok(Some(WireData::NotObject("a number")))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some(WireData::NotObject("an array")))
    }
}

// One struct per event type, fields in the order DESIGN.md lists them (which is the order they are
// checked in). Unknown data fields are skipped, for forward compatibility.

#[derive(DeriveDeserialize)]
pub(super) struct WireTicketOpened<'a> {
    #[serde(borrow)]
    pub ticket_id: WireField<'a>,
    #[serde(borrow)]
    pub account_id: WireField<'a>,
    #[serde(borrow)]
    pub subject: WireField<'a>,
    #[serde(borrow)]
    pub body: WireField<'a>,
    #[serde(borrow)]
    pub priority: WireField<'a>,
    #[serde(borrow)]
    pub channel: WireField<'a>,
    #[serde(borrow)]
    pub requester: WireField<'a>,
    #[serde(borrow)]
    pub product_area: WireField<'a>,
    #[serde(borrow)]
    pub journey_stage: WireField<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct WireTicketUpdated<'a> {
    #[serde(borrow)]
    pub ticket_id: WireField<'a>,
    #[serde(borrow)]
    pub account_id: WireField<'a>,
    #[serde(borrow)]
    pub status: WireField<'a>,
    #[serde(borrow)]
    pub priority: WireField<'a>,
    #[serde(borrow)]
    pub comment: WireField<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct WireTicketSolved<'a> {
    #[serde(borrow)]
    pub ticket_id: WireField<'a>,
    #[serde(borrow)]
    pub account_id: WireField<'a>,
    #[serde(borrow)]
    pub resolution: WireField<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct WireTicketReopened<'a> {
    #[serde(borrow)]
    pub ticket_id: WireField<'a>,
    #[serde(borrow)]
    pub account_id: WireField<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct WireUsageMetric<'a> {
    #[serde(borrow)]
    pub account_id: WireField<'a>,
    #[serde(borrow)]
    pub metric: WireField<'a>,
    #[serde(borrow)]
    pub value: WireField<'a>,
    #[serde(borrow)]
    pub user_id: WireField<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct WireUsageMilestone<'a> {
    #[serde(borrow)]
    pub account_id: WireField<'a>,
    #[serde(borrow)]
    pub milestone: WireField<'a>,
    #[serde(borrow)]
    pub user_id: WireField<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct WireSurveyResponded<'a> {
    #[serde(borrow)]
    pub response_id: WireField<'a>,
    #[serde(borrow)]
    pub account_id: WireField<'a>,
    #[serde(borrow)]
    pub kind: WireField<'a>,
    #[serde(borrow)]
    pub score: WireField<'a>,
    #[serde(borrow)]
    pub comment: WireField<'a>,
    #[serde(borrow)]
    pub journey_stage: WireField<'a>,
    #[serde(borrow)]
    pub touchpoint: WireField<'a>,
    #[serde(borrow)]
    pub user_id: WireField<'a>,
}

#[derive(DeriveDeserialize)]
pub(super) struct WireAccountUpserted<'a> {
    #[serde(borrow)]
    pub account_id: WireField<'a>,
    #[serde(borrow)]
    pub name: WireField<'a>,
    #[serde(borrow)]
    pub tier: WireField<'a>,
    #[serde(borrow)]
    pub arr: WireField<'a>,
    #[serde(borrow)]
    pub region: WireField<'a>,
    #[serde(borrow)]
    pub segment: WireField<'a>,
    #[serde(borrow)]
    pub csm: WireField<'a>,
    #[serde(borrow)]
    pub lifecycle_stage: WireField<'a>,
    #[serde(borrow)]
    pub started_at: WireField<'a>,
}
