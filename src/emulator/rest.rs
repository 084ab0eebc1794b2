//! The REST API resources clients publish with, shaped like Salesforce's:
//!
//! - `POST /services/data/vXX.X/sobjects/<Event__e>/`: one platform event; `201` with
//!   `{"id","success":true,"errors":[{"statusCode":"OPERATION_ENQUEUED","message":<EventUuid>,
//!   "fields":[]}]}` (platform events developer guide, "Publish Event Messages with Salesforce
//!   APIs"), or `400` with the REST error array `[{"message","errorCode","fields"}]`;
//! - `POST /services/data/vXX.X/composite/sobjects`: sObject collections, `{"allOrNone",
//!   "records":[{"attributes":{"type":..},..}]}`, at most 200 records, one save result per
//!   record (REST API developer guide, "sObject Collections");
//! - `GET /services/data/vXX.X/query?q=SELECT Id FROM StreamingChannel WHERE Name='/u/..'`;
//! - `POST /services/data/vXX.X/sobjects/StreamingChannel/<id>/push` with
//!   `{"pushEvents":[{"payload","userIds"}]}`, answered `[{"fanoutCount","userOnlineStatus"}]`
//!   (streaming API developer guide, "Generic Streaming" / "StreamingChannel push").
//!
//! A missing or unknown token is `401 [{"message":"Session expired or invalid","errorCode":
//! "INVALID_SESSION_ID"}]`, unknown resources `404 [{"errorCode":"NOT_FOUND","message":"The
//! requested resource does not exist"}]` (REST API developer guide, "Status Codes and Error
//! Responses").

use super::events::{self, USER_ID};
use super::ids;
use super::server;
use super::state::{Shared, State};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};

/// Records per sObject collections request (REST API developer guide).
const MAX_RECORDS: usize = 200;

/// The answer to a REST request.
pub(crate) struct RestAnswer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

fn answer(status: StatusCode, body: &Value) -> RestAnswer {
    RestAnswer {
        status,
        body: Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
    }
}

/// Salesforce's REST error array with one entry.
fn error(status: StatusCode, code: &str, message: &str, fields: &[String]) -> RestAnswer {
    let mut entry = json!({"message": message, "errorCode": code});
    if !fields.is_empty() {
        entry["fields"] = json!(fields);
    }
    answer(status, &json!([entry]))
}

fn not_found() -> RestAnswer {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
        &[],
    )
}

/// `/services/data/v66.0/<rest>` -> `<rest>`, for any `vNN.N`.
fn resource(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/services/data/v")?;
    let (version, rest) = rest.split_once('/')?;
    let (major, minor) = version.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor)).then_some(rest)
}

/// Whether `path` is under the REST API root.
pub(crate) fn is_rest_path(path: &str) -> bool {
    path.starts_with("/services/data/")
}

/// Handle one REST request.
pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> RestAnswer {
    shared.bump(|s| s.rest_requests += 1);
    let mut st = shared.lock();
    let authorized = server::bearer(headers).is_some_and(|t| st.access_tokens.contains(t));
    if !authorized {
        drop(st);
        shared.bump(|s| s.auth_failures += 1);
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
            &[],
        );
    }
    let Some(resource) = resource(path) else {
        return not_found();
    };
    let segments: Vec<&str> = resource.trim_end_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["query"]) => streaming_channel_query(&mut st, path, query),
        (&Method::POST, ["composite", "sobjects"]) => match json_body(body) {
            Ok(body) => collection(shared, &mut st, &body),
            Err(e) => e,
        },
        (&Method::POST, ["sobjects", "StreamingChannel", id, "push"]) => match json_body(body) {
            Ok(body) => push(shared, &mut st, id, &body),
            Err(e) => e,
        },
        (&Method::POST, ["sobjects", name]) if name.ends_with("__e") => match json_body(body) {
            Ok(Value::Object(fields)) => {
                let result = create_event(shared, &mut st, name, fields);
                if result["success"] == true {
                    answer(StatusCode::CREATED, &result)
                } else {
                    // A single create reports its failure as the REST error array.
                    let e = &result["errors"][0];
                    let fields: Vec<String> =
                        serde_json::from_value(e["fields"].clone()).unwrap_or_default();
                    error(
                        StatusCode::BAD_REQUEST,
                        e["statusCode"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default(),
                        &fields,
                    )
                }
            }
            Ok(_) => json_error("Expected a JSON object of the event's fields"),
            Err(e) => e,
        },
        _ => not_found(),
    }
}

fn json_error(message: &str) -> RestAnswer {
    error(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", message, &[])
}

fn json_body(body: &Bytes) -> Result<Value, RestAnswer> {
    serde_json::from_slice(body).map_err(|e| json_error(&format!("Invalid JSON: {e}")))
}

/// The event's required fields that `fields` lacks (or sets to null).
fn missing_fields(st: &State, name: &str, fields: &Map<String, Value>) -> Vec<String> {
    st.required_fields
        .get(name)
        .map(|required| {
            required
                .iter()
                .filter(|f| fields.get(*f).is_none_or(Value::is_null))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The failed save result for missing required fields.
fn required_missing(missing: Vec<String>) -> Value {
    json!({"success": false, "errors": [{
        "statusCode": "REQUIRED_FIELD_MISSING",
        "message": format!("Required fields are missing: [{}]", missing.join(", ")),
        "fields": missing,
    }]})
}

/// A save result for one event: publish it on `/event/<name>` or say which required fields are
/// missing.
fn create_event(
    shared: &Shared,
    st: &mut State,
    name: &str,
    mut fields: Map<String, Value>,
) -> Value {
    fields.remove("attributes");
    let missing = missing_fields(st, name, &fields);
    if !missing.is_empty() {
        return required_missing(missing);
    }
    let channel = format!("/event/{name}");
    let uuid = ids::uuid();
    let wall = shared.wall();
    let id = st.channel(&shared.config, &channel).assign_id();
    let mut data = events::salesforce_data(&channel, Value::Object(fields), id, wall);
    data["event"]["EventUuid"] = Value::String(uuid.clone());
    let frame = events::frame(&channel, &data);
    shared.deliver(st, &channel, &[(id, frame)]);
    shared.bump(|s| s.rest_events_published += 1);
    json!({
        "id": ids::record_id("e01"),
        "success": true,
        "errors": [{"statusCode": "OPERATION_ENQUEUED", "message": uuid, "fields": []}],
    })
}

fn collection(shared: &Shared, st: &mut State, body: &Value) -> RestAnswer {
    let Some(records) = body["records"].as_array() else {
        return json_error("Expected {\"allOrNone\":..,\"records\":[..]}");
    };
    if records.len() > MAX_RECORDS {
        // Exact wording not verified against a public capture.
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_BATCH_SIZE",
            &format!("Maximum number of records exceeded: {MAX_RECORDS}"),
            &[],
        );
    }
    let all_or_none = body["allOrNone"] == true;
    let mut typed = Vec::with_capacity(records.len());
    for record in records {
        let (Some(name), Value::Object(fields)) =
            (record["attributes"]["type"].as_str(), record.clone())
        else {
            return json_error("Each record needs attributes.type");
        };
        if !name.ends_with("__e") {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                &format!("sObject type '{name}' is not supported."),
                &[],
            );
        }
        typed.push((name.to_owned(), fields));
    }
    if all_or_none {
        // With allOrNone nothing is published unless every record passes.
        let missing: Vec<Vec<String>> = typed
            .iter()
            .map(|(name, fields)| missing_fields(st, name, fields))
            .collect();
        if missing.iter().any(|m| !m.is_empty()) {
            let results: Vec<Value> = missing
                .into_iter()
                .map(|m| {
                    if m.is_empty() {
                        json!({"success": false, "errors": [{
                            "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                            "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                            "fields": [],
                        }]})
                    } else {
                        required_missing(m)
                    }
                })
                .collect();
            return answer(StatusCode::OK, &Value::Array(results));
        }
    }
    let results: Vec<Value> = typed
        .into_iter()
        .map(|(name, fields)| create_event(shared, st, &name, fields))
        .collect();
    answer(StatusCode::OK, &Value::Array(results))
}

/// `SELECT Id FROM StreamingChannel WHERE Name='/u/..'`, the only query the emulator answers.
fn streaming_channel_query(st: &mut State, path: &str, query: Option<&str>) -> RestAnswer {
    // `/services/data/vNN.N/query` -> `/services/data/vNN.N`, for the records' URLs.
    let root = path.trim_end_matches('/').trim_end_matches("/query");
    let q = query
        .into_iter()
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "));
    let Some(q) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
            &[],
        );
    };
    let prefix = "select id from streamingchannel where name";
    let name = q
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .and_then(|_| q.get(prefix.len()..))
        .map(str::trim)
        .and_then(|rest| rest.strip_prefix('='))
        .map(str::trim)
        .and_then(|rest| rest.strip_prefix('\'')?.strip_suffix('\''));
    let Some(name) = name else {
        return error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "The emulator answers only SELECT Id FROM StreamingChannel WHERE Name='...'",
            &[],
        );
    };
    let records: Vec<Value> = st
        .streaming_channels
        .get(name)
        .map(|id| {
            json!({
                "attributes": {"type": "StreamingChannel", "url": format!("{root}/sobjects/StreamingChannel/{id}")},
                "Id": id,
            })
        })
        .into_iter()
        .collect();
    answer(
        StatusCode::OK,
        &json!({"totalSize": records.len(), "done": true, "records": records}),
    )
}

fn push(shared: &Shared, st: &mut State, id: &str, body: &Value) -> RestAnswer {
    let Some(channel) = st
        .streaming_channels
        .iter()
        .find(|(_, v)| v.as_str() == id)
        .map(|(k, _)| k.clone())
    else {
        return not_found();
    };
    let Some(events) = body["pushEvents"].as_array() else {
        return json_error("Expected {\"pushEvents\":[..]}");
    };
    let mut results = Vec::with_capacity(events.len());
    for push in events {
        let Some(payload) = push["payload"].as_str() else {
            return json_error("Each push event needs a string payload");
        };
        let users: Vec<&str> = push["userIds"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let subscribers = st.channels.get(&channel).map_or(0, |c| c.subscribers.len());
        // Every emulated session belongs to the one emulated user.
        let reaches = users.is_empty() || users.contains(&USER_ID);
        let online: Map<String, Value> = users
            .iter()
            .map(|u| {
                (
                    (*u).to_owned(),
                    Value::Bool(*u == USER_ID && subscribers > 0),
                )
            })
            .collect();
        let fanout = if reaches { subscribers } else { 0 };
        if reaches {
            let wall = shared.wall();
            let replay_id = st.channel(&shared.config, &channel).assign_id();
            let data = events::salesforce_data(
                &channel,
                Value::String(payload.to_owned()),
                replay_id,
                wall,
            );
            let frame = events::frame(&channel, &data);
            shared.deliver(st, &channel, &[(replay_id, frame)]);
            shared.bump(|s| s.rest_events_published += 1);
        }
        results.push(json!({"fanoutCount": fanout, "userOnlineStatus": online}));
    }
    answer(StatusCode::OK, &Value::Array(results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_under_any_version() {
        assert_eq!(
            resource("/services/data/v66.0/sobjects/X__e/"),
            Some("sobjects/X__e/")
        );
        assert_eq!(resource("/services/data/v45.0/query"), Some("query"));
        assert_eq!(resource("/services/data/66.0/query"), None);
        assert_eq!(resource("/services/data/vx.0/query"), None);
    }
}
