use std::borrow::Cow;

use serde_json::{json, Value};

use super::wire::{WireEvent, WireValue};
use super::*;
use crate::domain::{
    AccountId, AccountUpserted, SurveyKind, SurveyResponded, TicketOpened, TicketPriority,
    TicketReopened, TicketSolved, TicketUpdated, UsageMetric, UsageMilestone,
};

/// 2024-05-01T12:00:00Z in milliseconds since the epoch.
const MAY_FIRST_NOON: i64 = 1_714_564_800_000;

fn envelope(event_type: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": "evt-1",
        "source": "zendesk/acme",
        "type": event_type,
        "time": "2024-05-01T12:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn decode_value(value: &Value) -> Result<Event, Rejection> {
    decode_event(value.to_string().as_bytes())
}

fn decoded_data(event_type: &str, data: Value) -> EventData {
    match decode_value(&envelope(event_type, data)) {
        Ok(event) => {
            assert_eq!(event.id, "evt-1");
            assert_eq!(event.source, "zendesk/acme");
            assert_eq!(event.time, MAY_FIRST_NOON);
            event.data
        }
        Err(rejection) => panic!("expected {event_type} to decode, got {rejection}"),
    }
}

fn rejection_of(value: &Value) -> Rejection {
    match decode_value(value) {
        Ok(event) => panic!("expected a rejection, decoded {event:?}"),
        Err(rejection) => rejection,
    }
}

fn rejection_of_bytes(bytes: &[u8]) -> Rejection {
    match decode_event(bytes) {
        Ok(event) => panic!("expected a rejection, decoded {event:?}"),
        Err(rejection) => rejection,
    }
}

/// Asserts the code and that the message names what it should.
fn assert_rejected(value: &Value, code: RejectionCode, message_part: &str) {
    let rejection = rejection_of(value);
    assert_eq!(rejection.code, code, "{rejection}");
    assert!(
        rejection.message.contains(message_part),
        "message {:?} should contain {message_part:?}",
        rejection.message
    );
}

fn with_data_field(event_type: &str, data: Value, field: &str, field_value: Value) -> Value {
    let mut data = data;
    data[field] = field_value;
    envelope(event_type, data)
}

fn without_data_field(event_type: &str, data: Value, field: &str) -> Value {
    let mut data = data;
    data.as_object_mut().map(|object| object.remove(field));
    envelope(event_type, data)
}

fn ticket_data() -> Value {
    json!({"ticket_id": "T-1", "account_id": "acme"})
}

fn survey_data(kind: &str, score: Value) -> Value {
    json!({"response_id": "R-1", "account_id": "acme", "kind": kind, "score": score})
}

fn account(id: &str) -> AccountId {
    AccountId::parse(id).expect("test account ids are valid")
}

/// A realistic ticket.opened of about 500 bytes, as the benchmark example also uses.
const TYPICAL_TICKET_OPENED: &str = r#"{"specversion":"1.0","id":"zd-4f1c2a9e-7b3d-4e21-9c55-1a2b3c4d5e6f","source":"https://acme.zendesk.com/api/v2","type":"ticket.opened","time":"2024-05-01T12:00:00.123Z","datacontenttype":"application/json","data":{"ticket_id":"ZD-1048576","account_id":"acct-00042","subject":"Invoice shows the wrong amount","body":"Hi team, our March invoice charged us for 120 seats but we only have 95 active users. Can you check the billing and send a corrected invoice?","priority":"high","channel":"email","requester":"jane.doe@example.com","product_area":"billing","journey_stage":"renewal"}}"#;

// ---- Every event type decodes ----

#[test]
fn ticket_opened_decodes_with_all_fields() {
    let data = decoded_data(
        "ticket.opened",
        json!({
            "ticket_id": "T-1", "account_id": "acme", "subject": "Invoice wrong",
            "body": "We were charged twice.", "priority": "urgent", "channel": "email",
            "requester": "jane@example.com", "product_area": "billing", "journey_stage": "renewal",
        }),
    );
    assert_eq!(
        data,
        EventData::TicketOpened(TicketOpened {
            ticket_id: "T-1".into(),
            account_id: account("acme"),
            subject: Some("Invoice wrong".into()),
            body: Some("We were charged twice.".into()),
            priority: Some(TicketPriority::Urgent),
            channel: Some("email".into()),
            requester: Some("jane@example.com".into()),
            product_area: Some("billing".into()),
            journey_stage: Some("renewal".into()),
        })
    );
}

#[test]
fn ticket_updated_decodes_with_all_fields() {
    let data = decoded_data(
        "ticket.updated",
        json!({"ticket_id": "T-1", "account_id": "acme", "status": "pending", "priority": "low",
               "comment": "Waiting on customer."}),
    );
    assert_eq!(
        data,
        EventData::TicketUpdated(TicketUpdated {
            ticket_id: "T-1".into(),
            account_id: account("acme"),
            status: Some("pending".into()),
            priority: Some(TicketPriority::Low),
            comment: Some("Waiting on customer.".into()),
        })
    );
}

#[test]
fn ticket_solved_decodes_with_all_fields() {
    let data = decoded_data(
        "ticket.solved",
        json!({"ticket_id": "T-1", "account_id": "acme", "resolution": "Refunded."}),
    );
    assert_eq!(
        data,
        EventData::TicketSolved(TicketSolved {
            ticket_id: "T-1".into(),
            account_id: account("acme"),
            resolution: Some("Refunded.".into()),
        })
    );
}

#[test]
fn ticket_reopened_decodes_with_all_fields() {
    let data = decoded_data("ticket.reopened", ticket_data());
    assert_eq!(
        data,
        EventData::TicketReopened(TicketReopened {
            ticket_id: "T-1".into(),
            account_id: account("acme"),
        })
    );
}

#[test]
fn usage_metric_decodes_with_all_fields() {
    let data = decoded_data(
        "usage.metric",
        json!({"account_id": "acme", "metric": "api_errors", "value": 12.5, "user_id": "u-7"}),
    );
    assert_eq!(
        data,
        EventData::UsageMetric(UsageMetric {
            account_id: account("acme"),
            metric: "api_errors".into(),
            value: 12.5,
            user_id: Some("u-7".into()),
        })
    );
}

#[test]
fn usage_milestone_decodes_with_all_fields() {
    let data = decoded_data(
        "usage.milestone",
        json!({"account_id": "acme", "milestone": "onboarding.first_integration", "user_id": "u-7"}),
    );
    assert_eq!(
        data,
        EventData::UsageMilestone(UsageMilestone {
            account_id: account("acme"),
            milestone: "onboarding.first_integration".into(),
            user_id: Some("u-7".into()),
        })
    );
}

#[test]
fn survey_responded_decodes_with_all_fields() {
    let data = decoded_data(
        "survey.responded",
        json!({"response_id": "R-1", "account_id": "acme", "kind": "nps", "score": 3,
               "comment": "Too slow.", "journey_stage": "onboarding", "touchpoint": "in-app",
               "user_id": "u-7"}),
    );
    assert_eq!(
        data,
        EventData::SurveyResponded(SurveyResponded {
            response_id: "R-1".into(),
            account_id: account("acme"),
            kind: SurveyKind::Nps,
            score: 3,
            comment: Some("Too slow.".into()),
            journey_stage: Some("onboarding".into()),
            touchpoint: Some("in-app".into()),
            user_id: Some("u-7".into()),
        })
    );
}

#[test]
fn account_upserted_decodes_with_all_fields() {
    let data = decoded_data(
        "account.upserted",
        json!({"account_id": "acme", "name": "Acme Inc.", "tier": "enterprise", "arr": 120000,
               "region": "emea", "segment": "mid-market", "csm": "sam@example.com",
               "lifecycle_stage": "onboarding", "started_at": "2024-05-01T14:00:00+02:00"}),
    );
    assert_eq!(
        data,
        EventData::AccountUpserted(AccountUpserted {
            account_id: account("acme"),
            name: Some("Acme Inc.".into()),
            tier: Some("enterprise".into()),
            arr: Some(120_000.0),
            region: Some("emea".into()),
            segment: Some("mid-market".into()),
            csm: Some("sam@example.com".into()),
            lifecycle_stage: Some("onboarding".into()),
            started_at: Some(MAY_FIRST_NOON),
        })
    );
}

#[test]
fn every_event_type_decodes_with_only_its_required_fields() {
    let cases = [
        ("ticket.opened", ticket_data()),
        ("ticket.updated", ticket_data()),
        ("ticket.solved", ticket_data()),
        ("ticket.reopened", ticket_data()),
        (
            "usage.metric",
            json!({"account_id": "acme", "metric": "active_users", "value": 0}),
        ),
        (
            "usage.milestone",
            json!({"account_id": "acme", "milestone": "onboarding.first_integration"}),
        ),
        ("survey.responded", survey_data("csat", json!(5))),
        ("account.upserted", json!({"account_id": "acme"})),
    ];
    for (event_type, data) in cases {
        let decoded = decoded_data(event_type, data);
        assert_eq!(decoded.event_type().as_str(), event_type);
        assert_eq!(decoded.account_id().as_str(), "acme");
    }
    assert_eq!(
        decoded_data("ticket.opened", ticket_data()),
        EventData::TicketOpened(TicketOpened {
            ticket_id: "T-1".into(),
            account_id: account("acme"),
            subject: None,
            body: None,
            priority: None,
            channel: None,
            requester: None,
            product_area: None,
            journey_stage: None,
        })
    );
    assert_eq!(
        decoded_data("account.upserted", json!({"account_id": "acme"})),
        EventData::AccountUpserted(AccountUpserted {
            account_id: account("acme"),
            name: None,
            tier: None,
            arr: None,
            region: None,
            segment: None,
            csm: None,
            lifecycle_stage: None,
            started_at: None,
        })
    );
}

#[test]
fn optional_fields_given_as_null_decode_as_absent() {
    let data = decoded_data(
        "ticket.opened",
        json!({"ticket_id": "T-1", "account_id": "acme", "subject": null, "priority": null}),
    );
    let EventData::TicketOpened(ticket) = data else {
        panic!("expected a ticket.opened");
    };
    assert_eq!(ticket.subject, None);
    assert_eq!(ticket.priority, None);
}

#[test]
fn a_typical_ticket_opened_decodes() {
    let event = decode_event(TYPICAL_TICKET_OPENED.as_bytes()).expect("the typical event decodes");
    assert_eq!(event.id, "zd-4f1c2a9e-7b3d-4e21-9c55-1a2b3c4d5e6f");
    assert_eq!(event.time, MAY_FIRST_NOON + 123);
    assert_eq!(event.account_id().as_str(), "acct-00042");
    assert!((450..=600).contains(&TYPICAL_TICKET_OPENED.len()));
}

// ---- Envelope attributes ----

#[test]
fn other_cloudevents_attributes_and_unknown_data_fields_are_ignored() {
    let mut event = envelope(
        "ticket.reopened",
        json!({"ticket_id": "T-1", "account_id": "acme", "reopened_by": {"name": "x"},
               "score": "not a number here", "tags": [1, 2, 3]}),
    );
    event["subject"] = json!("ticket/T-1");
    event["traceparent"] = json!("00-abc-def-01");
    event["myextension"] = json!({"nested": [true, null]});
    assert!(decode_value(&event).is_ok());
}

#[test]
fn attributes_may_come_in_any_order() {
    let bytes = br#"{"data":{"account_id":"acme","ticket_id":"T-1"},"time":"2024-05-01T12:00:00Z",
        "type":"ticket.reopened","source":"s","id":"e","specversion":"1.0"}"#;
    let event = decode_event(bytes).expect("member order does not matter in JSON");
    assert_eq!(event.event_type(), EventType::TicketReopened);
}

#[test]
fn escaped_strings_decode_to_their_text() {
    let bytes =
        br#"{"specversion":"1.0","id":"evt-\u0031","source":"zen\/desk","type":"ticket.opened",
        "time":"2024-05-01T12:00:00Z","data":{"ticket_id":"T-\"1\"","account_id":"acm\u00e9",
        "subject":"Line one\nLine two \ud83d\ude00","body":"tab\there, backslash \\ done"}}"#;
    let event = decode_event(bytes).expect("escaped strings are valid");
    assert_eq!(event.id, "evt-1");
    assert_eq!(event.source, "zen/desk");
    let EventData::TicketOpened(ticket) = event.data else {
        panic!("expected a ticket.opened");
    };
    assert_eq!(ticket.ticket_id, "T-\"1\"");
    assert_eq!(ticket.account_id.as_str(), "acmé");
    assert_eq!(ticket.subject.as_deref(), Some("Line one\nLine two 😀"));
    assert_eq!(ticket.body.as_deref(), Some("tab\there, backslash \\ done"));
}

#[test]
fn unescaped_strings_are_borrowed_from_the_input_on_the_fast_path() {
    let text = r#"{"id":"plain","source":"with\u0020escape"}"#;
    let wire: WireEvent<'_> = serde_json::from_str(text).expect("a readable envelope");
    assert!(matches!(
        wire.id,
        Some(WireValue::Text(Cow::Borrowed("plain")))
    ));
    assert!(matches!(
        wire.source,
        Some(WireValue::Text(Cow::Owned(ref text))) if text == "with escape"
    ));
}

#[test]
fn time_with_an_offset_and_fractional_seconds_becomes_utc_millis() {
    let mut event = envelope("ticket.reopened", ticket_data());
    event["time"] = json!("2024-05-01T14:00:00.123456+02:00");
    assert_eq!(
        decode_value(&event).expect("valid time").time,
        MAY_FIRST_NOON + 123
    );
    event["time"] = json!("1970-01-01T00:00:00Z");
    assert_eq!(decode_value(&event).expect("the epoch is valid").time, 0);
}

#[test]
fn ids_of_exactly_256_bytes_pass_and_257_bytes_are_too_large() {
    let mut event = envelope("ticket.reopened", ticket_data());
    event["id"] = json!("e".repeat(256));
    event["data"]["account_id"] = json!("a".repeat(256));
    event["data"]["ticket_id"] = json!("t".repeat(256));
    assert!(decode_value(&event).is_ok());

    for field in ["id", "source"] {
        let mut long = event.clone();
        long[field] = json!("x".repeat(257));
        assert_rejected(&long, RejectionCode::TooLarge, field);
    }
    for field in ["account_id", "ticket_id"] {
        let mut long = event.clone();
        long["data"][field] = json!("x".repeat(257));
        assert_rejected(
            &long,
            RejectionCode::TooLarge,
            &format!("data.{field} must be at most 256 bytes, got 257 bytes"),
        );
    }
}

#[test]
fn multibyte_ids_are_measured_in_bytes() {
    // 128 two-byte characters are 256 bytes; one more is 258.
    let mut event = envelope("ticket.reopened", ticket_data());
    event["data"]["account_id"] = json!("é".repeat(128));
    assert!(decode_value(&event).is_ok());
    event["data"]["account_id"] = json!("é".repeat(129));
    assert_rejected(&event, RejectionCode::TooLarge, "data.account_id");
}

// ---- Every rejection code, from realistic bad input ----

#[test]
fn input_that_is_not_json_is_invalid_json() {
    for bytes in [
        &b""[..],
        b"   ",
        b"not json",
        b"{\"specversion\": \"1.0\",",
        b"{\"id\": 'single quotes'}",
        b"{} {}",
        b"{\"id\": \"\xff\xfe\"}",
    ] {
        let rejection = rejection_of_bytes(bytes);
        assert_eq!(rejection.code, RejectionCode::InvalidJson, "{rejection}");
        assert!(rejection.message.starts_with("the event is not valid JSON"));
        assert_eq!(rejection.id, None);
    }
}

#[test]
fn json_that_is_not_an_object_is_invalid_json() {
    let array = json!([
        "1.0",
        "evt-1",
        "src",
        "ticket.reopened",
        "2024-05-01T12:00:00Z",
        {}
    ]);
    assert_rejected(
        &array,
        RejectionCode::InvalidJson,
        "the event must be a JSON object, got an array",
    );
    assert_rejected(&json!(42), RejectionCode::InvalidJson, "got a number");
    assert_rejected(&json!("event"), RejectionCode::InvalidJson, "got a string");
    assert_rejected(&Value::Null, RejectionCode::InvalidJson, "got null");
}

#[test]
fn invalid_utf8_even_in_an_ignored_attribute_is_invalid_json() {
    let mut bytes = TYPICAL_TICKET_OPENED.as_bytes().to_vec();
    let position = TYPICAL_TICKET_OPENED
        .find("application/json")
        .expect("the typical event has a datacontenttype");
    bytes[position] = 0xff;
    let rejection = rejection_of_bytes(&bytes);
    assert_eq!(rejection.code, RejectionCode::InvalidJson);
    assert!(rejection.message.starts_with("the event is not valid JSON"));
}

#[test]
fn data_before_type_decodes_and_is_checked_the_same_way() {
    let type_last = |data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"evt-1","source":"s","time":"2024-05-01T12:00:00Z",
               "data":{data},"type":"survey.responded"}}"#
        )
    };
    let type_first = |data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"evt-1","source":"s","type":"survey.responded",
               "time":"2024-05-01T12:00:00Z","data":{data}}}"#
        )
    };
    for data in [
        r#"{"response_id":"R-1","account_id":"acme","kind":"ces","score":7}"#,
        r#"{"response_id":"R-1","account_id":"acme","kind":"ces","score":8}"#,
        r#"{"response_id":"R-1","account_id":"acme","kind":"ces","score":"7"}"#,
        r#"{"response_id":"R-1","account_id":"acme","kind":"ces"}"#,
        r#"{"response_id":"R-1","account_id":"acme","account_id":"acme"}"#,
        r#"["R-1","acme","ces",7]"#,
        r#""R-1""#,
        "null",
    ] {
        let first = decode_event(type_first(data).as_bytes());
        let last = decode_event(type_last(data).as_bytes());
        match (&first, &last) {
            (Ok(first), Ok(last)) => assert_eq!(first, last),
            (Err(first), Err(last)) => {
                assert_eq!(first.code, last.code, "{data}");
                assert_eq!(first.id, last.id, "{data}");
            }
            _ => panic!("{data}: {first:?} but {last:?}"),
        }
    }
}

#[test]
fn a_repeated_data_member_is_invalid_json() {
    let bytes = br#"{"specversion":"1.0","id":"evt-1","source":"s","type":"ticket.reopened",
        "time":"2024-05-01T12:00:00Z","data":{"ticket_id":"T-1","account_id":"a"},"data":null}"#;
    let rejection = rejection_of_bytes(bytes);
    assert_eq!(rejection.code, RejectionCode::InvalidJson);
    assert!(
        rejection.message.contains("duplicate field `data`"),
        "{rejection}"
    );
}

#[test]
fn a_number_too_large_for_a_double_is_invalid_json() {
    let bytes = br#"{"specversion":"1.0","id":"e","source":"s","type":"usage.metric",
        "time":"2024-05-01T12:00:00Z","data":{"account_id":"a","metric":"m","value":1e400}}"#;
    assert_eq!(rejection_of_bytes(bytes).code, RejectionCode::InvalidJson);
}

#[test]
fn a_repeated_attribute_is_invalid_json_and_keeps_the_id() {
    let bytes =
        br#"{"specversion":"1.0","id":"evt-1","source":"s","source":"t","type":"ticket.reopened",
        "time":"2024-05-01T12:00:00Z","data":{"ticket_id":"T-1","account_id":"acme"}}"#;
    let rejection = rejection_of_bytes(bytes);
    assert_eq!(rejection.code, RejectionCode::InvalidJson);
    assert_eq!(rejection.id.as_deref(), Some("evt-1"));
    assert!(
        rejection.message.contains("duplicate field `source`"),
        "{rejection}"
    );
}

#[test]
fn a_repeated_data_field_is_invalid_json() {
    let bytes = br#"{"specversion":"1.0","id":"evt-1","source":"s","type":"ticket.reopened",
        "time":"2024-05-01T12:00:00Z","data":{"ticket_id":"T-1","account_id":"a","account_id":"b"}}"#;
    let rejection = rejection_of_bytes(bytes);
    assert_eq!(rejection.code, RejectionCode::InvalidJson);
    assert_eq!(rejection.id.as_deref(), Some("evt-1"));
    assert!(
        rejection
            .message
            .starts_with("the event could not be read: duplicate field `account_id`"),
        "{rejection}"
    );
}

#[test]
fn an_unknown_type_is_unknown_type() {
    let event = envelope("ticket.deleted", ticket_data());
    let rejection = rejection_of(&event);
    assert_eq!(rejection.code, RejectionCode::UnknownType);
    assert_eq!(rejection.id.as_deref(), Some("evt-1"));
    assert!(rejection
        .message
        .starts_with("type must be one of ticket.opened"));
    assert!(rejection.message.ends_with("got \"ticket.deleted\""));
    // Type names are case-sensitive, as CloudEvents attribute values are.
    assert_rejected(
        &envelope("Ticket.Opened", ticket_data()),
        RejectionCode::UnknownType,
        "Ticket.Opened",
    );
}

#[test]
fn a_type_that_is_not_a_string_is_invalid_field() {
    let mut event = envelope("ticket.opened", ticket_data());
    event["type"] = json!(3);
    assert_rejected(
        &event,
        RejectionCode::InvalidField,
        "type must be a string, got a number",
    );
}

#[test]
fn each_missing_or_null_attribute_is_missing_field() {
    for attribute in ["specversion", "id", "source", "type", "time", "data"] {
        let mut event = envelope("ticket.reopened", ticket_data());
        event.as_object_mut().map(|object| object.remove(attribute));
        assert_rejected(
            &event,
            RejectionCode::MissingField,
            &format!("{attribute} is required"),
        );
        event[attribute] = Value::Null;
        assert_rejected(
            &event,
            RejectionCode::MissingField,
            &format!("{attribute} is required"),
        );
    }
}

#[test]
fn a_specversion_other_than_1_0_is_invalid_field() {
    for specversion in [json!("0.3"), json!("1.0.2"), json!(1.0)] {
        let mut event = envelope("ticket.reopened", ticket_data());
        event["specversion"] = specversion;
        assert_rejected(&event, RejectionCode::InvalidField, "specversion must be");
    }
}

#[test]
fn empty_or_mistyped_ids_and_sources_are_invalid_field() {
    for attribute in ["id", "source"] {
        for (value, message) in [
            (json!(""), "must not be empty"),
            (json!(42), "must be a string, got a number"),
            (json!(["x"]), "must be a string, got an array"),
            (
                json!("evt\n1"),
                "must not contain control characters, got \"evt\\n1\"",
            ),
        ] {
            let mut event = envelope("ticket.reopened", ticket_data());
            event[attribute] = value;
            assert_rejected(
                &event,
                RejectionCode::InvalidField,
                &format!("{attribute} {message}"),
            );
        }
    }
}

#[test]
fn a_rejection_carries_the_id_only_when_it_is_a_valid_id() {
    let mut event = envelope("ticket.reopened", json!({"ticket_id": "T-1"}));
    assert_eq!(rejection_of(&event).id.as_deref(), Some("evt-1"));
    event["id"] = json!("x".repeat(257));
    assert_eq!(rejection_of(&event).id, None);
    event["id"] = json!(7);
    assert_eq!(rejection_of(&event).id, None);
}

#[test]
fn a_time_that_is_not_rfc_3339_is_invalid_time() {
    for time in [
        "yesterday",
        "2024-05-01",
        "2024-05-01 12:00:00",
        "2024-05-01T12:00:00",
        "2024-13-01T12:00:00Z",
        "2024-02-30T12:00:00Z",
        "1714564800",
    ] {
        let mut event = envelope("ticket.reopened", ticket_data());
        event["time"] = json!(time);
        assert_rejected(
            &event,
            RejectionCode::InvalidTime,
            "time must be an RFC 3339 time",
        );
    }
}

#[test]
fn a_time_before_1970_or_after_9999_is_invalid_time() {
    for time in [
        "1969-12-31T23:59:59.999Z",
        "1970-01-01T01:00:00+02:00",
        "9999-12-31T23:00:00-02:00",
    ] {
        let mut event = envelope("ticket.reopened", ticket_data());
        event["time"] = json!(time);
        assert_rejected(
            &event,
            RejectionCode::InvalidTime,
            "time must lie between the years 1970 and 9999",
        );
    }
    let mut event = envelope("ticket.reopened", ticket_data());
    event["time"] = json!("9999-12-31T23:59:59Z");
    assert!(decode_value(&event).is_ok());
}

#[test]
fn a_time_that_is_not_a_string_is_invalid_field() {
    let mut event = envelope("ticket.reopened", ticket_data());
    event["time"] = json!(1_714_564_800);
    assert_rejected(
        &event,
        RejectionCode::InvalidField,
        "time must be a string, got a number",
    );
}

#[test]
fn data_that_is_not_an_object_is_invalid_field() {
    for (data, json_type) in [
        (json!("T-1"), "a string"),
        (json!(["T-1", "acme"]), "an array"),
        (json!(1), "a number"),
        (json!(true), "a boolean"),
    ] {
        assert_rejected(
            &envelope("ticket.reopened", data),
            RejectionCode::InvalidField,
            &format!("data must be a JSON object, got {json_type}"),
        );
    }
}

#[test]
fn each_missing_or_null_required_data_field_is_missing_field() {
    let cases = [
        (
            "ticket.opened",
            ticket_data(),
            vec!["ticket_id", "account_id"],
        ),
        (
            "ticket.updated",
            ticket_data(),
            vec!["ticket_id", "account_id"],
        ),
        (
            "ticket.solved",
            ticket_data(),
            vec!["ticket_id", "account_id"],
        ),
        (
            "ticket.reopened",
            ticket_data(),
            vec!["ticket_id", "account_id"],
        ),
        (
            "usage.metric",
            json!({"account_id": "acme", "metric": "active_users", "value": 3}),
            vec!["account_id", "metric", "value"],
        ),
        (
            "usage.milestone",
            json!({"account_id": "acme", "milestone": "first_login"}),
            vec!["account_id", "milestone"],
        ),
        (
            "survey.responded",
            survey_data("nps", json!(9)),
            vec!["response_id", "account_id", "kind", "score"],
        ),
        (
            "account.upserted",
            json!({"account_id": "acme"}),
            vec!["account_id"],
        ),
    ];
    for (event_type, data, required) in cases {
        assert!(decode_value(&envelope(event_type, data.clone())).is_ok());
        for field in required {
            let expected = format!("data.{field} is required but is missing or null");
            assert_rejected(
                &without_data_field(event_type, data.clone(), field),
                RejectionCode::MissingField,
                &expected,
            );
            assert_rejected(
                &with_data_field(event_type, data.clone(), field, Value::Null),
                RejectionCode::MissingField,
                &expected,
            );
        }
    }
}

#[test]
fn a_data_field_of_the_wrong_json_type_is_invalid_field() {
    let cases = [
        (
            "ticket.opened",
            ticket_data(),
            "account_id",
            json!(42),
            "a string, got a number",
        ),
        (
            "ticket.opened",
            ticket_data(),
            "subject",
            json!(["a"]),
            "a string, got an array",
        ),
        (
            "ticket.opened",
            ticket_data(),
            "body",
            json!({"html": "<p>"}),
            "a string, got an object",
        ),
        (
            "ticket.opened",
            ticket_data(),
            "channel",
            json!(false),
            "a string, got a boolean",
        ),
        (
            "ticket.opened",
            ticket_data(),
            "priority",
            json!(1),
            "a string, got a number",
        ),
        (
            "ticket.updated",
            ticket_data(),
            "status",
            json!(2),
            "a string, got a number",
        ),
        (
            "usage.metric",
            json!({"account_id": "acme", "metric": "m", "value": 1}),
            "value",
            json!("12"),
            "a finite number, got a string",
        ),
        (
            "usage.metric",
            json!({"account_id": "acme", "metric": "m", "value": 1}),
            "user_id",
            json!(7),
            "a string, got a number",
        ),
        (
            "account.upserted",
            json!({"account_id": "acme"}),
            "arr",
            json!("120k"),
            "a finite number, got a string",
        ),
        (
            "account.upserted",
            json!({"account_id": "acme"}),
            "started_at",
            json!(1_714_564_800),
            "a string, got a number",
        ),
    ];
    for (event_type, data, field, value, message) in cases {
        assert_rejected(
            &with_data_field(event_type, data, field, value),
            RejectionCode::InvalidField,
            &format!("data.{field} must be {message}"),
        );
    }
}

#[test]
fn empty_or_control_character_ids_in_data_are_invalid_field() {
    assert_rejected(
        &with_data_field("ticket.reopened", ticket_data(), "ticket_id", json!("")),
        RejectionCode::InvalidField,
        "data.ticket_id must not be empty",
    );
    assert_rejected(
        &with_data_field(
            "ticket.reopened",
            ticket_data(),
            "account_id",
            json!("ac\u{7}me"),
        ),
        RejectionCode::InvalidField,
        "data.account_id must not contain control characters",
    );
    assert_rejected(
        &with_data_field(
            "usage.milestone",
            json!({"account_id": "acme", "milestone": "m"}),
            "user_id",
            json!("u\t1"),
        ),
        RejectionCode::InvalidField,
        "data.user_id must not contain control characters",
    );
    assert_rejected(
        &with_data_field(
            "usage.metric",
            json!({"account_id": "acme", "metric": "m", "value": 1}),
            "metric",
            json!(""),
        ),
        RejectionCode::InvalidField,
        "data.metric must not be empty",
    );
}

#[test]
fn metric_and_milestone_names_longer_than_256_bytes_are_too_large() {
    assert_rejected(
        &envelope(
            "usage.metric",
            json!({"account_id": "acme", "metric": "m".repeat(257), "value": 1}),
        ),
        RejectionCode::TooLarge,
        "data.metric must be at most 256 bytes",
    );
    assert_rejected(
        &envelope(
            "usage.milestone",
            json!({"account_id": "acme", "milestone": "m".repeat(257)}),
        ),
        RejectionCode::TooLarge,
        "data.milestone must be at most 256 bytes",
    );
}

#[test]
fn free_text_up_to_64_kib_passes_and_longer_is_too_large() {
    let at_limit = "x".repeat(MAX_TEXT_BYTES);
    let over_limit = "x".repeat(MAX_TEXT_BYTES + 1);
    for (event_type, field) in [
        ("ticket.opened", "body"),
        ("ticket.opened", "subject"),
        ("ticket.opened", "requester"),
        ("ticket.updated", "comment"),
        ("ticket.solved", "resolution"),
        ("account.upserted", "name"),
    ] {
        let data = if event_type == "account.upserted" {
            json!({"account_id": "acme"})
        } else {
            ticket_data()
        };
        assert!(decode_value(&with_data_field(
            event_type,
            data.clone(),
            field,
            json!(at_limit)
        ))
        .is_ok());
        assert_rejected(
            &with_data_field(event_type, data, field, json!(over_limit)),
            RejectionCode::TooLarge,
            &format!("data.{field} must be at most 65536 bytes, got 65537 bytes"),
        );
    }
}

#[test]
fn a_priority_outside_the_four_levels_is_invalid_field() {
    for event_type in ["ticket.opened", "ticket.updated"] {
        assert_rejected(
            &with_data_field(event_type, ticket_data(), "priority", json!("critical")),
            RejectionCode::InvalidField,
            "data.priority must be one of low, normal, high, urgent, got \"critical\"",
        );
    }
    assert_rejected(
        &with_data_field("ticket.opened", ticket_data(), "priority", json!("High")),
        RejectionCode::InvalidField,
        "data.priority",
    );
}

#[test]
fn a_survey_kind_outside_nps_csat_ces_is_invalid_field() {
    assert_rejected(
        &envelope("survey.responded", survey_data("ces2", json!(3))),
        RejectionCode::InvalidField,
        "data.kind must be one of nps, csat, ces, got \"ces2\"",
    );
}

#[test]
fn a_score_outside_its_kinds_range_is_out_of_range() {
    for (kind, score, message) in [
        ("nps", 11, "between 0 and 10 for an nps survey, got 11"),
        ("nps", -1, "between 0 and 10 for an nps survey, got -1"),
        ("csat", 0, "between 1 and 5 for a csat survey, got 0"),
        ("csat", 6, "between 1 and 5 for a csat survey, got 6"),
        ("ces", 0, "between 1 and 7 for a ces survey, got 0"),
        ("ces", 8, "between 1 and 7 for a ces survey, got 8"),
    ] {
        assert_rejected(
            &envelope("survey.responded", survey_data(kind, json!(score))),
            RejectionCode::OutOfRange,
            &format!("data.score must be {message}"),
        );
    }
    assert_rejected(
        &envelope("survey.responded", survey_data("nps", json!(1e300))),
        RejectionCode::OutOfRange,
        "got 1e300",
    );
}

#[test]
fn scores_at_each_end_of_their_range_pass() {
    for kind in SurveyKind::ALL {
        let (lowest, highest) = kind.score_range();
        for score in [lowest, highest] {
            let data = decoded_data("survey.responded", survey_data(kind.as_str(), json!(score)));
            let EventData::SurveyResponded(response) = data else {
                panic!("expected a survey.responded");
            };
            assert_eq!((response.kind, response.score), (kind, score));
        }
    }
}

#[test]
fn a_whole_score_written_with_a_fraction_is_accepted() {
    let data = decoded_data("survey.responded", survey_data("nps", json!(9.0)));
    let EventData::SurveyResponded(response) = data else {
        panic!("expected a survey.responded");
    };
    assert_eq!(response.score, 9);
}

#[test]
fn a_fractional_or_string_score_is_invalid_field() {
    assert_rejected(
        &envelope("survey.responded", survey_data("nps", json!(9.5))),
        RejectionCode::InvalidField,
        "data.score must be a whole number, got 9.5",
    );
    assert_rejected(
        &envelope("survey.responded", survey_data("nps", json!("9"))),
        RejectionCode::InvalidField,
        "data.score must be a whole number, got a string",
    );
}

#[test]
fn a_negative_usage_value_is_accepted() {
    let data = decoded_data(
        "usage.metric",
        json!({"account_id": "acme", "metric": "seat_delta", "value": -3}),
    );
    let EventData::UsageMetric(metric) = data else {
        panic!("expected a usage.metric");
    };
    assert_eq!(metric.value, -3.0);
}

#[test]
fn a_negative_arr_is_out_of_range() {
    assert_rejected(
        &envelope("account.upserted", json!({"account_id": "acme", "arr": -5})),
        RejectionCode::OutOfRange,
        "data.arr must not be negative, got -5",
    );
    let data = decoded_data(
        "account.upserted",
        json!({"account_id": "acme", "arr": -0.0}),
    );
    let EventData::AccountUpserted(upserted) = data else {
        panic!("expected an account.upserted");
    };
    assert!(upserted
        .arr
        .is_some_and(|arr| arr == 0.0 && arr.is_sign_positive()));
}

#[test]
fn a_started_at_that_is_not_rfc_3339_is_invalid_time() {
    for started_at in ["last spring", "1969-07-20T20:17:00Z"] {
        assert_rejected(
            &envelope(
                "account.upserted",
                json!({"account_id": "acme", "started_at": started_at}),
            ),
            RejectionCode::InvalidTime,
            "data.started_at must",
        );
    }
}

#[test]
fn the_first_problem_in_field_order_decides_the_code() {
    // Bad specversion, empty id, unknown type, bad time, bad data: specversion is checked first.
    let mut event = envelope("ticket.deleted", json!("oops"));
    event["specversion"] = json!("0.3");
    event["id"] = json!("");
    event["time"] = json!("never");
    assert_eq!(rejection_of(&event).code, RejectionCode::InvalidField);
    event["specversion"] = json!("1.0");
    event["id"] = json!("evt-1");
    assert_eq!(rejection_of(&event).code, RejectionCode::UnknownType);
    event["type"] = json!("ticket.opened");
    assert_eq!(rejection_of(&event).code, RejectionCode::InvalidTime);
    // In data, ticket_id comes before account_id, which comes before the optional fields.
    let event = envelope(
        "ticket.opened",
        json!({"priority": "critical", "account_id": "", "subject": 1}),
    );
    assert_rejected(&event, RejectionCode::MissingField, "data.ticket_id");
}

#[test]
fn messages_quote_long_values_only_in_part() {
    let mut event = envelope("ticket.reopened", ticket_data());
    event["type"] = json!("t".repeat(10_000));
    let rejection = rejection_of(&event);
    assert!(rejection.message.len() < 400, "{}", rejection.message);
    assert!(rejection.message.ends_with("... (10000 bytes)"));
}

#[test]
fn every_rejection_code_has_a_name_and_a_description() {
    let mut names = std::collections::HashSet::new();
    for code in RejectionCode::ALL {
        assert!(names.insert(code.as_str()));
        assert_eq!(
            serde_json::to_value(code).expect("codes serialize"),
            json!(code.as_str())
        );
        assert!(code.describe().ends_with('.'));
    }
    assert_eq!(names.len(), 7);
}

#[test]
fn a_rejection_serializes_with_its_code_in_snake_case() {
    let rejection = rejection_of(&envelope("ticket.reopened", json!({"ticket_id": "T-1"})));
    assert_eq!(
        serde_json::to_value(&rejection).expect("rejections serialize"),
        json!({
            "code": "missing_field",
            "id": "evt-1",
            "message": "data.account_id is required but is missing or null",
        })
    );
    assert_eq!(
        rejection.to_string(),
        "MissingField: data.account_id is required but is missing or null"
    );
}

// ---- Never panics ----

/// A small xorshift generator, so the variants are the same on every run.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn truncated_and_byte_flipped_events_never_panic() {
    let valid_events = [
        TYPICAL_TICKET_OPENED.to_owned(),
        envelope("survey.responded", survey_data("nps", json!(9))).to_string(),
        envelope(
            "account.upserted",
            json!({"account_id": "acme", "arr": 1.5, "started_at": "2024-05-01T12:00:00Z"}),
        )
        .to_string(),
        envelope(
            "usage.metric",
            json!({"account_id": "acme", "metric": "m", "value": 1}),
        )
        .to_string(),
    ];
    let interesting_bytes = [
        b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'-', b'.', b'e', b'n', b' ', 0,
        0x7f, 0xc3, 0xff,
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15;
    for event in &valid_events {
        let bytes = event.as_bytes();
        assert!(decode_event(bytes).is_ok());
        for end in 0..bytes.len() {
            // Every strict prefix of an object lacks its closing brace.
            let rejection = decode_event(&bytes[..end]).expect_err("a prefix is not an event");
            assert_eq!(rejection.code, RejectionCode::InvalidJson);
        }
        for position in 0..bytes.len() {
            for bit in 0..8 {
                let mut variant = bytes.to_vec();
                variant[position] ^= 1 << bit;
                let _ = decode_event(&variant);
            }
            for replacement in interesting_bytes {
                let mut variant = bytes.to_vec();
                variant[position] = replacement;
                let _ = decode_event(&variant);
            }
        }
        for _ in 0..2_000 {
            let mut variant = bytes.to_vec();
            for _ in 0..1 + next_random(&mut state) % 4 {
                let position = (next_random(&mut state) % variant.len() as u64) as usize;
                variant[position] = next_random(&mut state) as u8;
            }
            let first = decode_event(&variant);
            assert_eq!(first, decode_event(&variant), "decoding is deterministic");
        }
    }
}

#[test]
fn reordering_an_events_members_never_changes_the_result() {
    // serde_json's Value keeps members sorted by key, so re-serializing puts `data` before `type`,
    // the order that makes decode keep `data` raw until the type is known.
    let valid = envelope(
        "survey.responded",
        json!({"response_id": "R-1", "account_id": "acme", "kind": "ces", "score": 7,
               "comment": "Fine.", "user_id": "u-1"}),
    )
    .to_string();
    let mut state = 0x2545_f491_4f6c_dd1d;
    let mut compared = 0;
    for _ in 0..5_000 {
        let mut variant = valid.as_bytes().to_vec();
        for _ in 0..1 + next_random(&mut state) % 3 {
            let position = (next_random(&mut state) % variant.len() as u64) as usize;
            variant[position] =
                b"\"{}[],:0123456789.-ntrue abckz"[(next_random(&mut state) % 30) as usize];
        }
        let result = decode_event(&variant);
        if matches!(&result, Err(rejection) if rejection.code == RejectionCode::InvalidJson) {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<Value>(&variant) else {
            continue;
        };
        let sorted = serde_json::to_vec(&value).expect("a Value serializes");
        assert_eq!(
            result,
            decode_event(&sorted),
            "{}",
            String::from_utf8_lossy(&variant)
        );
        compared += 1;
    }
    assert!(compared > 1_000, "only {compared} variants were readable");
}

// ---- split_body ----

#[test]
fn ndjson_with_one_malformed_line_yields_every_line() {
    let body = b"{\"id\":\"a\"}\n{not json\r\n\n   \n{\"id\":\"c\"}\r\n";
    let items = split_body(body, true, 10).expect("NDJSON bodies always split");
    assert_eq!(
        items,
        vec![&b"{\"id\":\"a\"}"[..], b"{not json", b"{\"id\":\"c\"}"]
    );
    assert_eq!(
        decode_event(items[1]).expect_err("the bad line").code,
        RejectionCode::InvalidJson
    );
}

#[test]
fn ndjson_without_a_final_newline_keeps_its_last_line() {
    let items = split_body(b"{}\n[]", true, 10).expect("NDJSON bodies always split");
    assert_eq!(items, vec![&b"{}"[..], b"[]"]);
    assert!(split_body(b"", true, 10)
        .expect("an empty body has no events")
        .is_empty());
}

#[test]
fn an_array_body_yields_the_exact_bytes_of_its_elements() {
    let body = b" [ {\"id\": \"a\", \"n\": [1, 2]} ,\n{\"id\":\"b\\u0041\"},  42 ,\"x\"] ";
    let items = split_body(body, false, 10).expect("a valid array");
    assert_eq!(
        items,
        vec![
            &b"{\"id\": \"a\", \"n\": [1, 2]}"[..],
            b"{\"id\":\"b\\u0041\"}",
            b"42",
            b"\"x\""
        ]
    );
    assert!(split_body(b"[]", false, 10)
        .expect("an empty array")
        .is_empty());
}

#[test]
fn a_single_object_body_yields_itself() {
    let body = format!("\n  {TYPICAL_TICKET_OPENED}  \n");
    let items = split_body(body.as_bytes(), false, 1).expect("one event");
    assert_eq!(items, vec![TYPICAL_TICKET_OPENED.as_bytes()]);
    assert!(decode_event(items[0]).is_ok());
}

#[test]
fn a_body_that_is_not_json_is_invalid_json() {
    for body in [&b""[..], b"{\"id\":", b"[{}, {]", b"{} {}", b"nope"] {
        let rejection = split_body(body, false, 10).expect_err("not JSON");
        assert_eq!(rejection.code, RejectionCode::InvalidJson);
        assert_eq!(rejection.id, None);
        assert!(rejection
            .message
            .starts_with("the request body is not valid JSON"));
    }
}

#[test]
fn a_body_over_max_events_is_too_large() {
    assert_eq!(
        split_body(b"[{},{},{}]", false, 3).map(|items| items.len()),
        Ok(3)
    );
    let rejection = split_body(b"[{},{},{},{}]", false, 3).expect_err("four events");
    assert_eq!(rejection.code, RejectionCode::TooLarge);
    assert_eq!(
        rejection.message,
        "the request body holds more than 3 events"
    );
    assert_eq!(
        split_body(b"{}\n{}\n{}\n", true, 3).map(|items| items.len()),
        Ok(3)
    );
    assert_eq!(
        split_body(b"{}\n{}\n\n{}\nnot json\n", true, 3)
            .expect_err("four lines")
            .code,
        RejectionCode::TooLarge
    );
    assert_eq!(
        split_body(b"{}", false, 0).expect_err("zero allowed").code,
        RejectionCode::TooLarge
    );
}
