//! Every field of every typed event, checked against the Salesforce-shaped test vectors.

use super::*;
use crate::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

fn reference() -> Value {
    serde_json::from_str(include_str!("../../tests/data/salesforce-messages.json")).unwrap()
}

fn typed_vectors() -> Value {
    serde_json::from_str(include_str!("../../tests/data/typed-events.json")).unwrap()
}

/// The event on `channel` in the reference vector `name`.
fn reference_event(name: &str, channel: &str) -> Event {
    let batch = reference()[name].as_array().unwrap().clone();
    let message = batch.into_iter().find(|m| m["channel"] == channel).unwrap();
    Event::from_json(&message.to_string()).unwrap()
}

fn typed_event(name: &str) -> Event {
    Event::from_json(&typed_vectors()[name].to_string()).unwrap()
}

fn ms(epoch_ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(epoch_ms)
}

fn date(text: &str) -> SystemTime {
    crate::replay::parse_date(text).unwrap()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn cdc_reference_update_every_field() {
    let event = reference_event(
        "connect_with_events_numeric_ids",
        "/data/AccountChangeEvent",
    );
    let change: ChangeEvent = event.decode().unwrap();
    let h = &change.header;
    assert_eq!(h.entity_name, "Account");
    assert_eq!(h.record_ids, strings(&["001xx000003DGb2AAG"]));
    assert_eq!(h.change_type, ChangeType::Update);
    assert_eq!(
        h.change_origin,
        "com/salesforce/api/soap/58.0;client=SfdcInternalAPI/"
    );
    assert_eq!(h.transaction_key, "0002343d-9d90-e395-ed20-cf416ba652ad");
    assert_eq!(h.sequence_number, 1);
    assert_eq!(h.commit_timestamp, ms(1795849202000));
    assert_eq!(h.commit_number, 10585193272713);
    assert_eq!(h.commit_user, "005xx000001X8UzAAK");
    assert_eq!(h.changed_fields, strings(&["Phone", "LastModifiedDate"]));
    assert!(h.diff_fields.is_empty());
    assert!(h.nulled_fields.is_empty());
    assert!(!h.has_bitmap_fields());
    let fields = change.fields.unwrap();
    assert_eq!(
        Value::Object(fields),
        json!({"Phone": "(415) 555-1212", "LastModifiedDate": "2026-11-28T07:00:02.000Z"}),
        "the header is not a record field"
    );
    assert_eq!(change.replay_id, Some(6));
    assert_eq!(change.schema.as_deref(), Some("IeRuaY6cbI_HsV8Rv1Mc5g"));
}

#[derive(Debug, Deserialize)]
struct Contact {
    #[serde(rename = "Name", default)]
    name: Field<PersonName>,
    #[serde(rename = "MailingAddress", default)]
    mailing_address: Field<Address>,
    #[serde(rename = "Email", default)]
    email: Field<String>,
    #[serde(rename = "Phone", default)]
    phone: Field<String>,
    #[serde(rename = "Description", default)]
    description: Field<String>,
}

#[test]
fn cdc_compound_fields_decode_into_parts() {
    let change: ChangeEvent<Contact> = typed_event("cdc_contact_create_compound").decode().unwrap();
    let h = &change.header;
    assert_eq!(h.entity_name, "Contact");
    assert_eq!(h.record_ids, strings(&["003xx000004TmiQAAS"]));
    assert_eq!(h.change_type, ChangeType::Create);
    assert_eq!(h.change_origin, "com/salesforce/api/rest/60.0");
    assert_eq!(h.transaction_key, "0006f4ad-bd6f-2c9d-fc85-d42a8f5f7f43");
    assert_eq!(h.sequence_number, 1);
    assert_eq!(h.commit_timestamp, ms(1795849300000));
    assert_eq!(h.commit_number, 10585193272800);
    assert_eq!(h.commit_user, "005xx000001X8UzAAK");
    assert!(h.changed_fields.is_empty() && h.diff_fields.is_empty() && h.nulled_fields.is_empty());
    let contact = change.fields.unwrap();
    let name = contact.name.value().unwrap();
    assert_eq!(name.salutation, Field::Value("Ms.".into()));
    assert_eq!(name.first_name, Field::Value("Ada".into()));
    assert_eq!(name.last_name, Field::Value("Lovelace".into()));
    assert!(name.middle_name.is_absent() && name.suffix.is_absent());
    let address = contact.mailing_address.value().unwrap();
    assert_eq!(address.street, Field::Value("1 Market St".into()));
    assert_eq!(address.city, Field::Value("San Francisco".into()));
    assert_eq!(address.postal_code, Field::Value("94105".into()));
    assert_eq!(address.latitude, Field::Value(37.7941));
    assert_eq!(address.longitude, Field::Value(-122.3951));
    for absent in [
        &address.state,
        &address.state_code,
        &address.country,
        &address.country_code,
    ] {
        assert!(absent.is_absent());
    }
    assert!(address.geocode_accuracy.is_absent());
    assert_eq!(contact.email, Field::Value("ada@example.com".into()));
    assert!(contact.phone.is_absent());
    assert!(contact.description.is_absent());
    assert_eq!(change.replay_id, Some(7));
    assert_eq!(change.schema.as_deref(), Some("wl4lPAU2JqNi2rqTDuz-Hg"));
}

#[test]
fn cdc_update_tells_null_from_absent_and_names_compound_parts() {
    let change: ChangeEvent<Contact> = typed_event("cdc_contact_update_nulled").decode().unwrap();
    let h = &change.header;
    assert_eq!(h.entity_name, "Contact");
    assert_eq!(h.change_type, ChangeType::Update);
    assert_eq!(h.change_origin, "");
    assert_eq!(h.transaction_key, "00073f4e-8c60-2d2e-63c0-7f4b2e1b4a11");
    assert_eq!(h.sequence_number, 2);
    assert_eq!(h.commit_timestamp, ms(1795849400000));
    assert_eq!(h.commit_number, 10585193272900);
    assert_eq!(h.commit_user, "005xx000001X8UzAAK");
    assert_eq!(
        h.changed_fields,
        strings(&[
            "MailingAddress.City",
            "Phone",
            "Description",
            "LastModifiedDate"
        ])
    );
    assert_eq!(h.diff_fields, strings(&["Description"]));
    assert_eq!(h.nulled_fields, strings(&["Phone"]));
    assert!(
        h.changed("MailingAddress"),
        "a part names its compound field"
    );
    assert!(h.changed("MailingAddress.City"));
    assert!(!h.changed("Mailing"), "a prefix is not a field");
    assert!(!h.changed("Email"));
    assert!(h.nulled("Phone") && !h.nulled("MailingAddress"));
    assert!(h.diffed("Description"));
    let contact = change.fields.unwrap();
    assert!(contact.phone.is_null());
    assert!(contact.email.is_absent());
    assert!(contact.name.is_absent());
    let address = contact.mailing_address.value().unwrap();
    assert_eq!(address.city, Field::Value("Oakland".into()));
    assert!(address.street.is_absent());
    // A diff field's value is passed through as sent.
    assert_eq!(
        contact.description,
        Field::Value("@@ -1,4 +1,4 @@\n-Old\n+New\n".into())
    );
    assert_eq!(change.replay_id, Some(8));
}

#[test]
fn cdc_gap_event_has_header_and_no_fields() {
    let change: ChangeEvent<Contact> = typed_event("cdc_gap_update").decode().unwrap();
    let h = &change.header;
    assert_eq!(h.entity_name, "Account");
    assert_eq!(
        h.record_ids,
        strings(&["001xx000003DGb2AAG", "001xx000003DGb3AAG"])
    );
    assert_eq!(h.change_type, ChangeType::GapUpdate);
    assert!(h.change_type.is_gap() && !h.change_type.is_overflow());
    assert_eq!(h.change_origin, "");
    assert_eq!(h.transaction_key, "000a1b2c-3d4e-5f60-7182-93a4b5c6d7e8");
    assert_eq!(h.sequence_number, 1);
    assert_eq!(h.commit_timestamp, ms(1795849500000));
    assert_eq!(h.commit_number, 10585193273000);
    assert_eq!(h.commit_user, "005xx000001X8UzAAK");
    assert!(h.changed_fields.is_empty() && h.diff_fields.is_empty() && h.nulled_fields.is_empty());
    assert!(
        change.fields.is_none(),
        "a gap event's nulls are not field values"
    );
    assert_eq!(change.replay_id, Some(9));
    assert_eq!(change.schema.as_deref(), Some("IeRuaY6cbI_HsV8Rv1Mc5g"));
}

#[test]
fn cdc_overflow_event_decodes_without_field_lists() {
    let change: ChangeEvent = typed_event("cdc_gap_overflow").decode().unwrap();
    let h = &change.header;
    assert_eq!(h.entity_name, "Account");
    assert_eq!(h.record_ids, strings(&["000000000000000AAA"]));
    assert_eq!(h.change_type, ChangeType::GapOverflow);
    assert!(h.change_type.is_gap() && h.change_type.is_overflow());
    assert_eq!(
        h.change_origin,
        "com/salesforce/api/soap/58.0;client=DataLoader"
    );
    assert_eq!(h.transaction_key, "000b2c3d-4e5f-6071-8293-a4b5c6d7e8f9");
    assert_eq!(h.sequence_number, 100001);
    assert_eq!(h.commit_timestamp, ms(1795849600000));
    assert_eq!(h.commit_number, 10585193273100);
    assert_eq!(h.commit_user, "005xx000001X8UzAAK");
    assert!(h.changed_fields.is_empty() && h.diff_fields.is_empty() && h.nulled_fields.is_empty());
    assert!(change.fields.is_none());
    assert_eq!(change.replay_id, Some(10));
}

#[test]
fn cdc_unknown_change_type_and_bitmaps_pass_through() {
    let change: ChangeEvent = typed_event("cdc_unknown_change_type_bitmap_fields")
        .decode()
        .unwrap();
    let h = &change.header;
    assert_eq!(h.entity_name, "Order__c");
    assert_eq!(h.record_ids, strings(&["a01xx000000bJdRAAU"]));
    assert_eq!(h.change_type, ChangeType::Other("MERGE".into()));
    assert_eq!(h.change_type.to_string(), "MERGE");
    assert!(!h.change_type.is_gap());
    assert_eq!(h.transaction_key, "000c3d4e-5f60-7182-93a4-b5c6d7e8f900");
    assert_eq!(h.sequence_number, 1);
    assert_eq!(h.commit_timestamp, ms(1795849700000));
    assert_eq!(h.commit_number, 10585193273200);
    assert_eq!(h.commit_user, "005xx000001X8UzAAK");
    assert_eq!(h.changed_fields, strings(&["0x1A", "3-0x04"]));
    assert!(h.diff_fields.is_empty(), "null reads as empty");
    assert_eq!(h.nulled_fields, strings(&["0x02"]));
    assert!(h.has_bitmap_fields());
    assert_eq!(change.fields.unwrap()["Amount__c"], 12.5);
    assert_eq!(change.replay_id, Some(11));
    assert_eq!(change.schema, None);
}

#[test]
fn change_types_round_trip_their_wire_names() {
    for name in [
        "CREATE",
        "UPDATE",
        "DELETE",
        "UNDELETE",
        "GAP_CREATE",
        "GAP_UPDATE",
        "GAP_DELETE",
        "GAP_UNDELETE",
        "GAP_OVERFLOW",
    ] {
        let t = ChangeType::from(name);
        assert!(!matches!(t, ChangeType::Other(_)), "{name}");
        assert_eq!(t.as_str(), name);
        assert_eq!(t.is_gap(), name.starts_with("GAP_"));
    }
}

#[test]
fn push_topic_reference_events_every_field() {
    #[derive(Debug, Deserialize, PartialEq)]
    struct Invoice {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Status__c", default)]
        status: Field<String>,
    }
    let event = reference_event(
        "connect_with_events_numeric_ids",
        "/topic/InvoiceStatementUpdates",
    );
    let updated: PushTopicEvent<Invoice> = event.decode().unwrap();
    assert_eq!(updated.event_type, PushTopicEventType::Updated);
    assert_eq!(updated.created_date, date("2026-11-28T07:00:01.000Z"));
    assert_eq!(updated.replay_id, Some(4201));
    assert_eq!(
        updated.sobject,
        Invoice {
            id: "a00xx000000bJdRAAU".into(),
            name: "INV-0001".into(),
            status: Field::Value("Negotiating".into()),
        }
    );
    let event = reference_event(
        "connect_reply_first_then_event",
        "/topic/InvoiceStatementUpdates",
    );
    let created: PushTopicEvent = event.decode().unwrap();
    assert_eq!(created.event_type, PushTopicEventType::Created);
    assert_eq!(created.created_date, date("2026-11-28T07:00:04.000Z"));
    assert_eq!(created.replay_id, Some(4202));
    assert_eq!(
        Value::Object(created.sobject),
        json!({"Id": "a00xx000000bJdSAAU", "Name": "INV-0002"})
    );
    for (wire, t) in [
        ("deleted", PushTopicEventType::Deleted),
        ("undeleted", PushTopicEventType::Undeleted),
        ("merged", PushTopicEventType::Other("merged".into())),
    ] {
        assert_eq!(PushTopicEventType::from(wire), t);
        assert_eq!(t.as_str(), wire);
    }
}

#[test]
fn platform_reference_events_every_field() {
    #[derive(Debug, Deserialize, PartialEq)]
    struct Order {
        #[serde(rename = "Order_Number__c")]
        number: String,
        #[serde(rename = "Amount__c")]
        amount: f64,
    }
    let event = reference_event("connect_with_events_numeric_ids", "/event/Order_Placed__e");
    let order: PlatformEvent<Order> = event.decode().unwrap();
    assert_eq!(
        order.payload,
        Order {
            number: "ORD-1001".into(),
            amount: 249.5
        }
    );
    assert_eq!(order.created_date, date("2026-11-28T07:00:02.114Z"));
    assert_eq!(order.created_by_id, "005xx000001X8UzAAK");
    assert_eq!(
        order.event_uuid.as_deref(),
        Some("8d2b1e34-3a6b-4a5e-9d32-1f4f0b6b9a11")
    );
    assert_eq!(order.replay_id, Some(17));
    assert_eq!(order.schema.as_deref(), Some("dffQ2QLzDNHqwB8_sHMxdA"));

    let event = reference_event(
        "legacy_platform_event_schema_inside_event",
        "/event/Low_Ink__e",
    );
    let ink: PlatformEvent = event.decode().unwrap();
    assert_eq!(ink.payload["Printer_Model__c"], "XZO-5");
    assert_eq!(
        ink.payload["CreatedById"], "005D0000001cSZs",
        "the whole payload"
    );
    assert_eq!(ink.created_date, date("2017-04-09T18:31:40Z"));
    assert_eq!(ink.created_by_id, "005D0000001cSZs");
    assert_eq!(ink.event_uuid, None);
    assert_eq!(ink.replay_id, Some(3));
    assert_eq!(
        ink.schema.as_deref(),
        Some("ZKrqHF9BvTIrGH4xaSt7yw"),
        "legacy place"
    );
}

#[test]
fn generic_reference_event_every_field() {
    let event = reference_event("connect_with_events_numeric_ids", "/u/Notifications");
    let generic: GenericEvent = event.decode().unwrap();
    assert_eq!(generic.payload, "Broadcast message to all subscribers");
    assert_eq!(generic.created_date, Some(date("2026-11-28T07:00:03.000Z")));
    assert_eq!(generic.replay_id, Some(2));
}

#[test]
fn mismatched_payload_names_channel_replay_id_and_path() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Wrong {
        #[serde(rename = "Amount__c")]
        amount: String,
    }
    let event = reference_event("connect_with_events_numeric_ids", "/event/Order_Placed__e");
    let e = event.decode::<PlatformEvent<Wrong>>().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    let failure = e.decode_failure().unwrap();
    assert_eq!(failure.channel, "/event/Order_Placed__e");
    assert_eq!(failure.replay_id, Some(17));
    assert_eq!(failure.path, "data.payload.Amount__c");
    assert_eq!(
        e.event().unwrap().replay_id(),
        Some(17),
        "the event rides along"
    );
    let text = e.to_string();
    assert!(
        text.contains("/event/Order_Placed__e") && text.contains("17"),
        "{text}"
    );
    assert!(
        text.contains("data.payload.Amount__c") && text.contains("invalid type"),
        "{text}"
    );
    assert!(
        !text.contains("server"),
        "does not blame the server: {text}"
    );

    // A header field of the wrong type, and the wrong family for the channel.
    let mut bad = reference()["connect_with_events_numeric_ids"][2].clone();
    bad["data"]["payload"]["ChangeEventHeader"]["recordIds"] = json!(["ok", 5]);
    let e = Event::from_json(&bad.to_string())
        .unwrap()
        .decode::<ChangeEvent>()
        .unwrap_err();
    assert_eq!(
        e.decode_failure().unwrap().path,
        "data.payload.ChangeEventHeader.recordIds[1]"
    );
    let e = event.decode::<PushTopicEvent>().unwrap_err();
    assert_eq!(e.decode_failure().unwrap().path, "data.event.type");
    let e = event.deserialize::<Wrong>().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert_eq!(e.decode_failure().unwrap().path, "data.payload.Amount__c");
}
