//! Publishing the way Salesforce accepts it: over the REST API, with the client's own login,
//! token refresh, hyper client and TLS.
//!
//! Salesforce does not implement CometD publishing for generic streaming or platform events
//! (aiosfstream's API reference: "Salesforce chose not to implement the publishing of Generic
//! Streaming and Platform events with CometD"); [`Client::publish`] stays for standard Bayeux
//! servers (CometD, Faye). On Salesforce:
//!
//! - platform events: [`Client::publish_event`] creates the event sObject,
//!   `POST /services/data/vXX.X/sobjects/<Event__e>/`; [`Client::publish_events`] sends batches
//!   through sObject collections, `POST /services/data/vXX.X/composite/sobjects` (200 records per
//!   request, `allOrNone: false`), one [`PublishResult`] per event, in order;
//! - generic streaming: [`Client::push_generic`] posts to
//!   `/services/data/vXX.X/sobjects/StreamingChannel/<id>/push`, the id looked up once per
//!   channel with `SELECT Id FROM StreamingChannel WHERE Name='/u/...'` and cached.
//!
//! - as a [`futures::Sink`]: [`Client::publisher`] gives a [`Publisher`] for one platform event
//!   or generic channel, so `stream.forward(publisher)` publishes a stream, batching the events
//!   that are ready into one request and reporting each event's result.
//!
//! Every call logs in first if needed and, after HTTP 401, retries once with a refreshed token,
//! sharing the refresh with the streaming connection.
//!
//! ```no_run
//! # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
//! let result = client
//!     .publish_event("Order_Placed__e", &serde_json::json!({"Amount__c": 249.5}))
//!     .await?;
//! assert!(result.success, "{:?}", result.errors);
//! println!("{:?} {:?}", result.id, result.event_uuid());
//! let pushed = client.push_generic("/u/Notifications", "hello").await?;
//! println!("sent to {} subscribers", pushed.fanout_count);
//! # Ok(()) }
//! ```

mod rest;
mod sink;

pub(crate) use rest::RestClient;
pub use sink::{Outcome, PublishResults, Published, Publisher};

use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Salesforce's limit of records in one sObject collections request.
pub const MAX_COLLECTION_RECORDS: usize = 200;

/// The status code Salesforce puts in `errors` of a *successful* asynchronous publish, with the
/// event's UUID as the message ("Publish Event Messages with Salesforce APIs", platform events
/// developer guide).
pub const OPERATION_ENQUEUED: &str = "OPERATION_ENQUEUED";

/// The result of publishing one platform event (Salesforce's `SaveResult`).
///
/// `success` means Salesforce queued the event; it is then published asynchronously and
/// `errors` holds one [`OPERATION_ENQUEUED`] entry whose message is the event's UUID
/// ([`event_uuid`](PublishResult::event_uuid)). When `success` is false, `errors` says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PublishResult {
    /// The `Id` Salesforce returns (not part of the delivered event, not always unique).
    #[serde(default)]
    pub id: Option<String>,
    /// Whether the event was accepted.
    pub success: bool,
    /// Salesforce's errors (and the `OPERATION_ENQUEUED` notice of a success).
    #[serde(default)]
    pub errors: Vec<PublishError>,
}

impl PublishResult {
    /// The event's UUID (`EventUuid` of the delivered event), from the `OPERATION_ENQUEUED`
    /// entry of a successful publish.
    pub fn event_uuid(&self) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.status_code == OPERATION_ENQUEUED)
            .map(|e| e.message.as_str())
    }

    /// The entries of `errors` that are failures (all but `OPERATION_ENQUEUED`).
    pub fn failures(&self) -> impl Iterator<Item = &PublishError> {
        self.errors
            .iter()
            .filter(|e| e.status_code != OPERATION_ENQUEUED)
    }

    fn failed(errors: Vec<PublishError>) -> Self {
        PublishResult {
            id: None,
            success: false,
            errors,
        }
    }
}

/// One error of a [`PublishResult`]: `{"statusCode","message","fields"}` (a whole-request REST
/// error's `errorCode` is read into `status_code` too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PublishError {
    /// Salesforce's code, e.g. `REQUIRED_FIELD_MISSING`, `INVALID_FIELD`.
    #[serde(rename = "statusCode", alias = "errorCode", default)]
    pub status_code: String,
    /// The human-readable message.
    #[serde(default)]
    pub message: String,
    /// The fields the error is about.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// The result of one generic streaming push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PushResult {
    /// How many subscribers the event was sent to.
    #[serde(rename = "fanoutCount", default)]
    pub fanout_count: i64,
    /// For each user id the push named: whether that user had a subscriber online.
    #[serde(rename = "userOnlineStatus", default)]
    pub user_online_status: BTreeMap<String, bool>,
}

/// `Order__e` or `/event/Order__e` -> `Order__e`, if it is a platform event's API name.
pub(crate) fn event_type(event: &str) -> Result<&str> {
    let name = event.strip_prefix("/event/").unwrap_or(event);
    let valid = name.ends_with("__e")
        && name.len() > 3
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(name)
    } else {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{event:?} is not a platform event API name (Name__e or /event/Name__e)"),
        ))
    }
}

/// The channel name checked for the SOQL lookup: `/u/` and an API name.
pub(crate) fn generic_channel(channel: &str) -> Result<&str> {
    let valid = channel.strip_prefix("/u/").is_some_and(|name| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if valid {
        Ok(channel)
    } else {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{channel:?} is not a generic streaming channel (/u/Name)"),
        ))
    }
}

fn fields_object<T: Serialize + ?Sized>(fields: &T) -> Result<Map<String, Value>> {
    match serde_json::to_value(fields) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::new(
            ErrorKind::InvalidOperation,
            "an event's fields must serialize to a JSON object",
        )),
        Err(e) => {
            Err(Error::new(ErrorKind::Client, "cannot serialize the event's fields").with_source(e))
        }
    }
}

/// One record of an sObject collections request: `attributes.type` and the event's fields.
pub(crate) fn event_record<T: Serialize + ?Sized>(name: &str, fields: &T) -> Result<Value> {
    let mut record = Map::new();
    record.insert("attributes".into(), json!({ "type": name }));
    record.extend(fields_object(fields)?);
    Ok(Value::Object(record))
}

/// Salesforce's whole-request error array as per-event errors, or `None` if it is not one.
fn request_errors(reply: &rest::RestReply) -> Option<Vec<PublishError>> {
    let errors = reply.errors()?;
    (!errors.is_empty()).then(|| {
        errors
            .into_iter()
            .map(|e| PublishError {
                status_code: e.error_code,
                message: e.message,
                fields: e.fields,
            })
            .collect()
    })
}

impl Client {
    /// Publish one platform event over REST, by creating the event sObject
    /// (`POST /services/data/vXX.X/sobjects/<event>/`). `event` is the API name (`Order__e`, or
    /// the channel `/event/Order__e`); `fields` must serialize to a JSON object of the event's
    /// fields.
    ///
    /// A rejected event (HTTP 400 with Salesforce's error array, e.g. `REQUIRED_FIELD_MISSING`)
    /// is `Ok` with `success == false`; a rejected token (after one refresh), an unknown event
    /// type (HTTP 404) or a network failure is an `Err`. Works whether or not the streaming
    /// connection is open.
    pub async fn publish_event<T: Serialize + ?Sized>(
        &self,
        event: &str,
        fields: &T,
    ) -> Result<PublishResult> {
        let name = event_type(event)?;
        let body = Value::Object(fields_object(fields)?);
        let reply = self
            .rest()
            .call(Method::POST, &format!("sobjects/{name}/"), &[], Some(&body))
            .await?;
        if reply.is_success() {
            return reply.json("publish result");
        }
        if reply.status == StatusCode::BAD_REQUEST
            && let Some(errors) = request_errors(&reply)
        {
            return Ok(PublishResult::failed(errors));
        }
        Err(reply.into_error())
    }

    /// Publish platform events of one type over REST with sObject collections
    /// (`POST /services/data/vXX.X/composite/sobjects`, `allOrNone: false`), in requests of
    /// [`MAX_COLLECTION_RECORDS`]. Returns one [`PublishResult`] per event, in order; events
    /// Salesforce rejects have `success == false` and do not stop the others.
    ///
    /// A request rejected as a whole is an `Err`; results of earlier requests are then lost to
    /// the caller, so send at most 200 events per call when that matters.
    pub async fn publish_events<T: Serialize>(
        &self,
        event: &str,
        events: &[T],
    ) -> Result<Vec<PublishResult>> {
        let name = event_type(event)?;
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(MAX_COLLECTION_RECORDS) {
            let records = chunk
                .iter()
                .map(|fields| event_record(name, fields))
                .collect::<Result<Vec<Value>>>()?;
            results.extend(self.publish_records(&records).await?);
        }
        Ok(results)
    }

    /// One sObject collections request for at most [`MAX_COLLECTION_RECORDS`] records built by
    /// [`event_record`]: one result per record, in order.
    pub(crate) async fn publish_records(&self, records: &[Value]) -> Result<Vec<PublishResult>> {
        let body = json!({"allOrNone": false, "records": records});
        let reply = self
            .rest()
            .call(Method::POST, "composite/sobjects", &[], Some(&body))
            .await?;
        if !reply.is_success() {
            return Err(reply.into_error());
        }
        let batch: Vec<PublishResult> = reply.json("sObject collection results")?;
        if batch.len() != records.len() {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "{} results for {} events from {}",
                    batch.len(),
                    records.len(),
                    reply.url
                ),
            ));
        }
        Ok(batch)
    }

    /// Push `payload` to every subscriber of the generic streaming channel `channel`
    /// (`/u/Name`) over REST. See [`push_generic_to`](Client::push_generic_to).
    pub async fn push_generic(&self, channel: &str, payload: &str) -> Result<PushResult> {
        self.push_generic_to(channel, payload, &[]).await
    }

    /// Push `payload` to the subscribers of `channel` among `user_ids` (all subscribers when
    /// empty): `POST /services/data/vXX.X/sobjects/StreamingChannel/<id>/push` with
    /// `{"pushEvents":[{"payload":..,"userIds":[..]}]}`. The channel's id is looked up by name
    /// once (`SELECT Id FROM StreamingChannel WHERE Name='/u/...'`) and cached; a channel that
    /// does not exist is an [`ErrorKind::InvalidOperation`] error.
    pub async fn push_generic_to(
        &self,
        channel: &str,
        payload: &str,
        user_ids: &[&str],
    ) -> Result<PushResult> {
        let body = json!({"pushEvents": [{"payload": payload, "userIds": user_ids}]});
        let results = self.push_batch(channel, &body, 1).await?;
        results
            .into_iter()
            .next()
            .ok_or_else(|| Error::new(ErrorKind::Protocol, format!("no push result for {channel}")))
    }

    /// Push `payloads` to every subscriber of `channel` in one request, one result per payload.
    pub(crate) async fn push_generic_many(
        &self,
        channel: &str,
        payloads: &[String],
    ) -> Result<Vec<PushResult>> {
        let events: Vec<Value> = payloads
            .iter()
            .map(|p| json!({"payload": p, "userIds": []}))
            .collect();
        self.push_batch(channel, &json!({ "pushEvents": events }), payloads.len())
            .await
    }

    /// POST `body` (`{"pushEvents":[..]}` of `count` events) to the channel's push resource.
    async fn push_batch(
        &self,
        channel: &str,
        body: &Value,
        count: usize,
    ) -> Result<Vec<PushResult>> {
        let channel = generic_channel(channel)?;
        // A cached id may belong to a channel deleted since: look it up again once.
        for attempt in 0..2 {
            let id = self.streaming_channel_id(channel).await?;
            let reply = self
                .rest()
                .call(
                    Method::POST,
                    &format!("sobjects/StreamingChannel/{id}/push"),
                    &[],
                    Some(body),
                )
                .await?;
            if reply.status == StatusCode::NOT_FOUND && attempt == 0 {
                self.rest().forget_channel_id(channel);
                continue;
            }
            if !reply.is_success() {
                return Err(reply.into_error());
            }
            // Salesforce answers an array, one result per push event.
            let results: Vec<PushResult> = reply.json("push results")?;
            if results.len() != count {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "{} push results for {count} events from {}",
                        results.len(),
                        reply.url
                    ),
                ));
            }
            return Ok(results);
        }
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("the StreamingChannel {channel} no longer exists"),
        ))
    }

    async fn streaming_channel_id(&self, channel: &str) -> Result<String> {
        if let Some(id) = self.rest().cached_channel_id(channel) {
            return Ok(id);
        }
        #[derive(Deserialize)]
        struct Record {
            #[serde(rename = "Id")]
            id: String,
        }
        #[derive(Deserialize)]
        struct Query {
            records: Vec<Record>,
        }
        // `channel` is checked to be `/u/` and an API name: nothing to escape in the literal.
        let soql = format!("SELECT Id FROM StreamingChannel WHERE Name='{channel}'");
        let reply = self
            .rest()
            .call(Method::GET, "query", &[("q", &soql)], None)
            .await?;
        if !reply.is_success() {
            return Err(reply.into_error());
        }
        let query: Query = reply.json("query result")?;
        let Some(record) = query.records.into_iter().next() else {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("no StreamingChannel named {channel} exists in the org"),
            ));
        };
        self.rest().cache_channel_id(channel, &record.id);
        Ok(record.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_request() {
        assert_eq!(event_type("/event/Order__e").unwrap(), "Order__e");
        assert_eq!(event_type("Low_Ink__e").unwrap(), "Low_Ink__e");
        for bad in [
            "Account",
            "/event/",
            "__e",
            "Bad Name__e",
            "x'; DROP__e",
            "/topic/X__e",
        ] {
            let e = event_type(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidOperation, "{bad}");
        }
        assert!(generic_channel("/u/Notifications").is_ok());
        for bad in ["/u/", "/u/a'b", "/topic/X", "u/X", "/u/a b"] {
            assert!(generic_channel(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn results_read_salesforce_shapes() {
        // Platform events developer guide, "Publish Event Messages with Salesforce APIs".
        let r: PublishResult = serde_json::from_str(
            r#"{"id":"e01xx0000000001AAA","success":true,"errors":[{"statusCode":"OPERATION_ENQUEUED","message":"232fd30e-0a71-42bd-a97b-be0e329b2ded","fields":[]}]}"#,
        )
        .unwrap();
        assert!(r.success);
        assert_eq!(r.event_uuid(), Some("232fd30e-0a71-42bd-a97b-be0e329b2ded"));
        assert_eq!(r.failures().count(), 0);
        let e: PublishError = serde_json::from_str(
            r#"{"message":"Required fields are missing: [Amount__c]","errorCode":"REQUIRED_FIELD_MISSING","fields":["Amount__c"]}"#,
        )
        .unwrap();
        assert_eq!(e.status_code, "REQUIRED_FIELD_MISSING");
        let p: Vec<PushResult> =
            serde_json::from_str(r#"[{"fanoutCount":2,"userOnlineStatus":{"005xx":true}}]"#)
                .unwrap();
        assert_eq!(p[0].fanout_count, 2);
        assert!(p[0].user_online_status["005xx"]);
    }
}
