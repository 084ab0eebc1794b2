//! The Bayeux side: handshake, connect (long-poll), subscribe with replay, unsubscribe, publish
//! and disconnect, with Salesforce's replies and error strings.

use super::faults::Target;
use super::ids;
use super::retention::{self, ReplayFrom};
use super::server::{self, CookieCheck};
use super::state::{CLIENT_LIMIT, DAILY_LIMIT, Item, Queued, Shared, State, Wake, base_channel};
use crate::bayeux::{Message, channels, parse_batch};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;

const UNKNOWN_CLIENT: &str = "403::Unknown client";
const AUTHENTICATION_INVALID: &str = "401::Authentication invalid";

/// The missing-cookie error, as Salesforce words it (cometd/cometd#881, restforce#161).
fn no_cookie(client_id: &str) -> String {
    format!(
        "400::Client {client_id} has established a session, but no BAYEUX_BROWSER cookie present"
    )
}

/// A handshake offering no long-polling, or a connect of another type (Salesforce serves only
/// long-polling; the type is named in the error).
fn invalid_connection_type(kind: &str) -> String {
    format!("400::Invalid connection type {kind}")
}

/// A parsed request body: the messages, and their ids exactly as sent (string or number), which
/// replies must echo unchanged.
pub(crate) struct Request {
    pub(crate) messages: Vec<Message>,
    ids: Vec<Option<Value>>,
}

/// Parse a CometD request body; `Err` is the Bayeux error string for a 400 reply.
pub(crate) fn parse(body: Bytes) -> Result<Request, &'static str> {
    #[derive(Deserialize)]
    struct RawId {
        #[serde(default)]
        id: Option<Value>,
    }
    let batch = parse_batch(body.clone()).map_err(|_| "400::Invalid JSON")?;
    if !batch.malformed.is_empty() {
        return Err("400::Invalid message");
    }
    if batch.messages.is_empty() {
        return Err("400::Empty message batch");
    }
    let ids: Vec<RawId> = serde_json::from_slice(&body).map_err(|_| "400::Invalid message")?;
    if ids.len() != batch.messages.len() {
        return Err("400::Invalid message");
    }
    Ok(Request {
        messages: batch.messages,
        ids: ids.into_iter().map(|r| r.id).collect(),
    })
}

/// The reply to a body that did not parse.
pub(crate) fn invalid_body(error: &str) -> Bytes {
    body(&[Part::reply(Reply {
        channel: "/meta/unknown".into(),
        successful: Some(false),
        error: Some(error.into()),
        ..Reply::default()
    })])
}

impl Request {
    fn each(&self) -> impl Iterator<Item = In<'_>> {
        self.messages.iter().zip(&self.ids).map(|(msg, id)| In {
            msg,
            id: id.as_ref(),
        })
    }

    /// The fault targets this request matches.
    pub(crate) fn targets(&self) -> Vec<Target> {
        self.messages
            .iter()
            .filter_map(|m| match m.channel.as_str() {
                channels::HANDSHAKE => Some(Target::Handshake),
                channels::CONNECT => Some(Target::Connect),
                channels::SUBSCRIBE => Some(Target::Subscribe),
                channels::UNSUBSCRIBE => Some(Target::Unsubscribe),
                channels::DISCONNECT => Some(Target::Disconnect),
                _ if !m.is_meta() => Some(Target::Publish),
                // Unknown meta channels match only `Target::Any`.
                _ => None,
            })
            .collect()
    }

    /// Successful replies shaped like the real ones, with no side effect (for faults).
    pub(crate) fn synthetic_replies(&self, shared: &Shared) -> Vec<Value> {
        self.each()
            .map(|m| {
                let reply = match m.msg.channel.as_str() {
                    channels::HANDSHAKE => handshake_reply(&m, ids::client_id()),
                    channels::CONNECT => Reply::to(&m).ok().advice(shared.connect_advice.clone()),
                    channels::SUBSCRIBE | channels::UNSUBSCRIBE => {
                        Reply::to(&m).subscription(&m).ok()
                    }
                    _ => Reply::to(&m).ok(),
                };
                serde_json::to_value(reply).unwrap_or(Value::Null)
            })
            .collect()
    }
}

/// One incoming message with its raw id.
struct In<'a> {
    msg: &'a Message,
    id: Option<&'a Value>,
}

/// A reply message. Field order follows Salesforce's replies.
#[derive(Serialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct Reply {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    successful: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ext: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    minimum_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supported_connection_types: Option<[&'static str; 1]>,
}

impl Reply {
    /// A reply on the message's channel echoing its id and client id.
    fn to(m: &In<'_>) -> Reply {
        Reply {
            client_id: m.msg.client_id.clone(),
            channel: m.msg.channel.to_string(),
            id: m.id.cloned(),
            ..Reply::default()
        }
    }

    fn ok(mut self) -> Self {
        self.successful = Some(true);
        self
    }

    fn error(mut self, error: impl Into<String>) -> Self {
        self.successful = Some(false);
        self.error = Some(error.into());
        self
    }

    fn advice(mut self, advice: Value) -> Self {
        self.advice = Some(advice);
        self
    }

    fn subscription(mut self, m: &In<'_>) -> Self {
        self.subscription = m.msg.subscription.clone();
        self
    }

    /// Salesforce's reason for a denied handshake.
    fn ext_sfdc(mut self) -> Self {
        self.ext = Some(json!({"sfdc": {"failureReason": AUTHENTICATION_INVALID}}));
        self
    }
}

fn handshake_reply(m: &In<'_>, client_id: String) -> Reply {
    let replay = m.msg.ext_field("replay") == Some(&Value::Bool(true));
    Reply {
        client_id: Some(client_id),
        ext: replay.then(|| json!({"replay": true, "payload.format": true})),
        version: Some("1.0"),
        minimum_version: Some("1.0"),
        supported_connection_types: Some([channels::LONG_POLLING]),
        ..Reply::to(m).ok()
    }
}

fn unknown_client(shared: &Shared, m: &In<'_>) -> Reply {
    shared.bump(|s| s.unknown_client_replies += 1);
    // Salesforce does not echo the unknown clientId (CometD.NetCore.Salesforce#43,
    // cometd/cometd#775).
    let reply = Reply {
        client_id: None,
        ..Reply::to(m)
    }
    .subscription(m)
    .error(UNKNOWN_CLIENT);
    // Salesforce advises a rehandshake on connect replies only.
    if m.msg.channel == channels::CONNECT {
        reply.advice(json!({"interval": 0, "reconnect": "handshake"}))
    } else {
        reply
    }
}

/// A piece of a response body: a pre-serialized event or a reply.
enum Part {
    Event(Bytes),
    Reply(Box<Reply>),
}

impl Part {
    fn reply(reply: Reply) -> Part {
        Part::Reply(Box::new(reply))
    }
}

/// Concatenate the parts into a JSON array: events are copied as they are, never re-serialized.
fn body(parts: &[Part]) -> Bytes {
    let size: usize = parts
        .iter()
        .map(|p| match p {
            Part::Event(b) => b.len() + 1,
            Part::Reply(_) => 200,
        })
        .sum();
    let mut buf = BytesMut::with_capacity(size + 2);
    buf.put_u8(b'[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        match part {
            Part::Event(event) => buf.extend_from_slice(event),
            // Serializing a struct of strings and JSON values into memory cannot fail.
            Part::Reply(reply) => {
                let _ = serde_json::to_writer((&mut buf).writer(), reply);
            }
        }
    }
    buf.put_u8(b']');
    buf.freeze()
}

/// A connect waiting for events.
struct Held {
    client_id: String,
    seq: u64,
    wake: oneshot::Receiver<Wake>,
    reply: Reply,
    deadline: Instant,
}

/// What processing a request produced.
#[derive(Default)]
struct Out {
    parts: Vec<Part>,
    handshaken: bool,
    held: Option<Held>,
}

/// The response to a CometD request: status, body, and the cookies to set.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    pub(crate) cookies: Vec<String>,
}

fn answer_each(req: &Request, status: StatusCode, f: impl Fn(&In<'_>) -> Reply) -> Answer {
    let parts: Vec<Part> = req.each().map(|m| Part::reply(f(&m))).collect();
    Answer {
        status,
        body: body(&parts),
        cookies: Vec::new(),
    }
}

/// Handle one CometD request (faults already applied).
pub(crate) async fn handle(shared: Arc<Shared>, headers: &HeaderMap, req: Request) -> Answer {
    shared.record_received(&req.messages);
    let (mut out, cookies) = match process(&shared, headers, &req) {
        Ok(processed) => processed,
        Err(rejected) => return rejected,
    };
    let mut cookies: Vec<String> = cookies.into_iter().flatten().collect();
    if let Some(held) = out.held.take() {
        let parts = wait(&shared, held).await;
        out.parts.extend(parts);
    }
    // Salesforce's load balancer sends a new sfdc-stream cookie with `403::Unknown client`
    // (CometD.NetCore.Salesforce#43): the client's jar must overwrite the old one.
    let unknown = out
        .parts
        .iter()
        .any(|p| matches!(p, Part::Reply(r) if r.error.as_deref() == Some(UNKNOWN_CLIENT)));
    if unknown && let Some(cookie) = server::rotate_sfdc_stream(&mut shared.lock(), headers) {
        shared.bump(|s| s.cookie_rotations += 1);
        cookies.push(cookie);
    }
    Answer {
        status: StatusCode::OK,
        body: body(&out.parts),
        cookies,
    }
}

/// Check the token and cookies, then process every message under one lock. A connect to hold
/// comes back in `Out::held`; the lock is released before waiting on it.
fn process(
    shared: &Shared,
    headers: &HeaderMap,
    req: &Request,
) -> Result<(Out, Option<[String; 3]>), Answer> {
    let n = req.messages.len() as u64;
    let Some(token) = server::bearer(headers) else {
        shared.bump(|s| s.auth_failures += n);
        // Rejected before Bayeux processing: one reply, with neither channel nor id
        // (restforce#103).
        return Err(Answer {
            status: StatusCode::UNAUTHORIZED,
            body: Bytes::from_static(
                br#"[{"error":"401::Request requires authentication","successful":false}]"#,
            ),
            cookies: Vec::new(),
        });
    };
    let mut st = shared.lock();
    if !st.access_tokens.contains(token) {
        drop(st);
        shared.bump(|s| s.auth_failures += n);
        return Err(answer_each(req, StatusCode::OK, |m| {
            if m.msg.channel == channels::HANDSHAKE {
                Reply::to(m)
                    .error("403::Handshake denied")
                    .advice(json!({"reconnect": "none"}))
                    .ext_sfdc()
            } else {
                Reply::to(m)
                    .subscription(m)
                    .error(AUTHENTICATION_INVALID)
                    .advice(json!({"reconnect": "none"}))
            }
        }));
    }
    let cookies = server::check_cookies(&st, headers);
    let needs_cookies = req
        .messages
        .iter()
        .any(|m| m.channel != channels::HANDSHAKE);
    if needs_cookies && shared.config.require_cookies && cookies != CookieCheck::Valid {
        drop(st);
        shared.bump(|s| s.cookie_failures += 1);
        return Err(answer_each(req, StatusCode::BAD_REQUEST, |m| {
            Reply::to(m).error(no_cookie(m.msg.client_id.as_deref().unwrap_or_default()))
        }));
    }

    let mut out = Out::default();
    let last_connect = req
        .messages
        .iter()
        .rposition(|m| m.channel == channels::CONNECT);
    for (i, m) in req.each().enumerate() {
        let reply = match m.msg.channel.as_str() {
            channels::HANDSHAKE => handshake(shared, &mut st, &m, &mut out),
            channels::CONNECT => connect(shared, &mut st, &m, &mut out, Some(i) == last_connect),
            channels::SUBSCRIBE => subscribe(shared, &mut st, &m, &mut out),
            channels::UNSUBSCRIBE => unsubscribe(shared, &mut st, &m),
            channels::DISCONNECT => disconnect(shared, &mut st, &m),
            _ if !m.msg.is_meta() => publish(shared, &mut st, &m),
            _ => Some(Reply::to(&m).error("400::Unknown channel")),
        };
        if let Some(reply) = reply {
            out.parts.push(Part::reply(reply));
        }
    }
    // Clients that already hold valid cookies keep them, as with CometD's BAYEUX_BROWSER.
    let cookies =
        (out.handshaken && cookies != CookieCheck::Valid).then(|| server::issue_cookies(&mut st));
    if cookies.is_some() {
        shared.bump(|s| s.cookies_issued += 1);
    }
    Ok((out, cookies))
}

fn handshake(shared: &Shared, st: &mut State, m: &In<'_>, out: &mut Out) -> Option<Reply> {
    let long_polling = m
        .msg
        .supported_connection_types
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| t == channels::LONG_POLLING));
    if !long_polling {
        let offered = m
            .msg
            .supported_connection_types
            .as_ref()
            .and_then(|t| t.first())
            .map_or("", String::as_str);
        return Some(Reply::to(m).error(invalid_connection_type(offered)));
    }
    if m.msg
        .version
        .as_deref()
        .is_some_and(|v| v != "1" && !v.starts_with("1."))
    {
        return Some(Reply::to(m).error("400::Unsupported version"));
    }
    if shared
        .config
        .max_clients
        .is_some_and(|max| st.sessions.len() >= max)
    {
        return Some(Reply::to(m).error(CLIENT_LIMIT));
    }
    if st.allowance(&shared.config, shared.now()) == Some(0) {
        return Some(Reply::to(m).error(DAILY_LIMIT));
    }
    let client_id = ids::client_id();
    shared.create_session(st, client_id.clone());
    out.handshaken = true;
    Some(handshake_reply(m, client_id))
}

/// The most events one connect may take: the configured batch, within the daily allowance.
fn batch_limit(shared: &Shared, allowance: Option<usize>) -> Option<usize> {
    match (shared.config.max_batch, allowance) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Queued events and the connect reply, in the configured order.
fn connect_parts(shared: &Shared, events: Vec<Bytes>, reply: Reply) -> Vec<Part> {
    let n = events.len() as u64;
    if n > 0 {
        shared.bump(|s| s.events_delivered += n);
    }
    let mut parts = Vec::with_capacity(events.len() + 1);
    if shared.config.connect_reply_first {
        parts.push(Part::reply(reply));
        parts.extend(events.into_iter().map(Part::Event));
    } else {
        parts.extend(events.into_iter().map(Part::Event));
        parts.push(Part::reply(reply));
    }
    parts
}

fn connect(
    shared: &Shared,
    st: &mut State,
    m: &In<'_>,
    out: &mut Out,
    may_hold: bool,
) -> Option<Reply> {
    let Some(client_id) = m.msg.client_id.as_deref() else {
        return Some(unknown_client(shared, m));
    };
    let now = shared.now();
    let allowance = st.allowance(&shared.config, now);
    let Some(session) = shared.session(st, client_id) else {
        return Some(unknown_client(shared, m));
    };
    if allowance == Some(0) {
        // No advice, clientId echoed (tests/data `daily_limit_exceeded`).
        return Some(Reply::to(m).error(DAILY_LIMIT));
    }
    if let Some(kind) = m
        .msg
        .connection_type
        .as_deref()
        .filter(|k| *k != channels::LONG_POLLING)
    {
        return Some(Reply::to(m).error(invalid_connection_type(kind)));
    }
    session.wake(Wake::Superseded, now);
    let mut reply = Reply::to(m).ok();
    // Only the first connect reply of a session carries advice (CometD.NetCore.Salesforce#43,
    // cometd/cometd#775); clients keep it.
    if !std::mem::replace(&mut session.advised, true) {
        reply = reply.advice(shared.connect_advice.clone());
    }
    let at_once = m.msg.advice.as_ref().and_then(|a| a.timeout) == Some(0);
    if at_once || !may_hold || !session.queue.is_empty() {
        let events = session.drain(batch_limit(shared, allowance));
        st.count_delivered(events.len());
        out.parts.extend(connect_parts(shared, events, reply));
        return None;
    }
    let Some((seq, wake)) = shared.hold(st, client_id) else {
        return Some(unknown_client(shared, m));
    };
    let deadline = now
        .checked_add(shared.config.advice_timeout)
        .unwrap_or(now + std::time::Duration::from_secs(365 * 24 * 3600));
    out.held = Some(Held {
        client_id: client_id.to_owned(),
        seq,
        wake,
        reply,
        deadline,
    });
    None
}

/// Unregisters a held connect however its future ends, so a client that hangs up mid-poll leaves
/// neither a stale registration nor a wrong `held_connects` count.
struct HeldGuard {
    shared: Arc<Shared>,
    client_id: String,
    seq: u64,
    armed: bool,
}

impl HeldGuard {
    fn release(&mut self, st: &mut State) {
        if std::mem::take(&mut self.armed) {
            self.shared.release_held(st, &self.client_id, self.seq);
        }
    }
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        if self.armed {
            let shared = self.shared.clone();
            let mut st = shared.lock();
            self.release(&mut st);
        }
    }
}

/// Wait until the held connect is woken or its (virtual) deadline passes, then answer it.
async fn wait(shared: &Arc<Shared>, held: Held) -> Vec<Part> {
    let mut guard = HeldGuard {
        shared: shared.clone(),
        client_id: held.client_id.clone(),
        seq: held.seq,
        armed: true,
    };
    let mut clock = shared.clock_changes();
    let mut wake = held.wake;
    let why = loop {
        let left = held.deadline.saturating_duration_since(shared.now());
        if left.is_zero() {
            break None;
        }
        tokio::select! {
            why = &mut wake => break Some(why.unwrap_or(Wake::Gone)),
            // advance_clock may move the deadline into the past.
            _ = clock.changed() => {}
            _ = tokio::time::sleep(left) => {}
        }
    };
    let mut st = shared.lock();
    guard.release(&mut st);
    let allowance = st.allowance(&shared.config, shared.now());
    let reply = held.reply;
    let session = match why {
        None | Some(Wake::Events | Wake::Superseded) => shared.session(&mut st, &held.client_id),
        _ => None,
    };
    let none = || json!({"reconnect": "none"});
    match (why, session) {
        (Some(Wake::Revoked), _) => {
            shared.bump(|s| s.auth_failures += 1);
            vec![Part::reply(
                reply.error(AUTHENTICATION_INVALID).advice(none()),
            )]
        }
        (Some(Wake::ServerDisconnect), _) => {
            shared.bump(|s| s.unknown_client_replies += 1);
            let bare = Reply {
                channel: channels::DISCONNECT.into(),
                ..Reply::default()
            };
            // EMP-Connector#15's capture echoes the clientId here (tests/data vectors).
            vec![
                Part::reply(bare),
                Part::reply(reply.error(UNKNOWN_CLIENT).advice(none())),
            ]
        }
        (Some(Wake::ClientDisconnect), _) => vec![Part::reply(reply.advice(none()))],
        (Some(Wake::Superseded), Some(_)) => connect_parts(shared, Vec::new(), reply),
        (_, Some(_)) if allowance == Some(0) => {
            vec![Part::reply(
                Reply {
                    advice: None,
                    ..reply
                }
                .error(DAILY_LIMIT),
            )]
        }
        (_, Some(session)) => {
            let events = session.drain(batch_limit(shared, allowance));
            let n = events.len();
            let parts = connect_parts(shared, events, reply);
            st.count_delivered(n);
            parts
        }
        // Forgotten, expired, or dropped while this connect was answering.
        (_, None) => {
            shared.bump(|s| s.unknown_client_replies += 1);
            let advice = json!({"interval": 0, "reconnect": "handshake"});
            let reply = Reply {
                client_id: None,
                ..reply
            };
            vec![Part::reply(reply.error(UNKNOWN_CLIENT).advice(advice))]
        }
    }
}

fn subscribe(shared: &Shared, st: &mut State, m: &In<'_>, out: &mut Out) -> Option<Reply> {
    let Some(client_id) = m.msg.client_id.as_deref() else {
        return Some(unknown_client(shared, m));
    };
    if shared.session(st, client_id).is_none() {
        return Some(unknown_client(shared, m));
    }
    let Some(subscription) = m.msg.subscription.as_deref() else {
        return Some(Reply::to(m).error("400::Subscription missing"));
    };
    let base = base_channel(subscription);
    if !base.starts_with('/') || base.starts_with("/meta/") || base.len() < 2 {
        return Some(Reply::to(m).subscription(m).error("403::Forbidden channel"));
    }
    if st.allowance(&shared.config, shared.now()) == Some(0) {
        return Some(Reply::to(m).subscription(m).error(DAILY_LIMIT));
    }
    if shared.config.strict_channels && !channel_exists(st, base) {
        return Some(Reply::to(m).subscription(m).error(format!(
            "400::The channel you requested to subscribe to doesn't exist {{{subscription}}}"
        )));
    }
    let filter = super::filter::Filter::of(subscription);
    if let (Some(filter), Some(fields)) = (&filter, st.push_topics.get(base)) {
        let unknown = filter.unknown_fields(fields);
        if !unknown.is_empty() {
            return Some(
                Reply::to(m)
                    .subscription(m)
                    .error(super::filter::unknown_fields_error(&unknown)),
            );
        }
    }
    // The replay map is keyed by the channel without its PushTopic filter.
    let from = match m.msg.ext_field("replay") {
        Some(map @ Value::Object(entries)) => match entries.get(base) {
            Some(id) => ReplayFrom::parse(id).map_err(|text| retention::invalid_replay_id(&text)),
            None => Err(retention::replay_id_not_found(subscription, map)),
        },
        _ => Ok(ReplayFrom::New),
    };
    let from = match from {
        Ok(from) => from,
        Err(error) => return Some(Reply::to(m).subscription(m).error(error)),
    };
    if base.starts_with("/u/") {
        // Dynamic streaming channel creation (an org setting, on in the emulator): subscribing
        // creates the StreamingChannel record the REST push resource needs.
        st.streaming_channel(base);
    }
    let now = shared.now();
    let config = &shared.config;
    let stalled = st.stalled.contains(base);
    let ch = st.channel(config, base);
    ch.trim(now, config.retention_age);
    let backlog = match ch.backlog(from) {
        // A stalled event bus seeks forever: the subscription gets nothing (KA 005321562).
        Ok(_) if stalled => Vec::new(),
        Ok(backlog) => match &filter {
            Some(filter) => backlog
                .iter()
                .filter_map(|event| filter.apply(subscription, event))
                .collect(),
            None => backlog,
        },
        Err(error) => return Some(Reply::to(m).subscription(m).error(error)),
    };
    let name = ch.name.clone();
    let mut in_reply = 0;
    let State {
        sessions, channels, ..
    } = &mut *st;
    let Some(session) = sessions.get_mut(client_id) else {
        return Some(unknown_client(shared, m));
    };
    // Subscribing twice is idempotent: no second backlog, no duplicate deliveries. Another
    // filter of the same topic is a subscription of its own.
    let names = session.subscriptions.entry(base.to_owned()).or_default();
    let first = names.is_empty();
    let new = !names.iter().any(|s| s == subscription);
    if new {
        names.push(subscription.to_owned());
        if first {
            if let Some(ch) = channels.get_mut(base) {
                ch.subscribers.insert(client_id.to_owned());
            }
            shared.bump(|s| s.subscribed(base));
        }
        if !backlog.is_empty() {
            if config.backlog_in_subscribe_reply {
                in_reply = backlog.len();
                let n = backlog.len() as u64;
                shared.bump(|s| s.events_delivered += n);
                out.parts.extend(backlog.into_iter().map(Part::Event));
            } else {
                session
                    .queue
                    .extend(backlog.into_iter().map(|event| Queued {
                        channel: name.clone(),
                        item: Item::Event(event),
                    }));
                session.wake(Wake::Events, now);
            }
        }
    }
    st.count_delivered(in_reply);
    Some(Reply::to(m).subscription(m).ok())
}

/// Whether a channel exists for a subscribe, when channels are strict: created with
/// [`Emulator::create_channel`](super::Emulator::create_channel) or published to, a generic
/// channel (dynamic creation), or the multi-entity change channel.
fn channel_exists(st: &State, base: &str) -> bool {
    base == "/data/ChangeEvents" || base.starts_with("/u/") || st.channels.contains_key(base)
}

fn unsubscribe(shared: &Shared, st: &mut State, m: &In<'_>) -> Option<Reply> {
    let Some(client_id) = m.msg.client_id.as_deref() else {
        return Some(unknown_client(shared, m));
    };
    let Some(session) = shared.session(st, client_id) else {
        return Some(unknown_client(shared, m));
    };
    let Some(subscription) = m.msg.subscription.as_deref() else {
        return Some(Reply::to(m).error("400::Subscription missing"));
    };
    let base = base_channel(subscription);
    let last = match session.subscriptions.get_mut(base) {
        Some(names) => {
            names.retain(|s| s != subscription);
            names.is_empty()
        }
        None => false,
    };
    if last && session.subscriptions.remove(base).is_some() {
        // Stop delivering: events of this channel still queued are dropped too.
        session.queue.retain(|q| &*q.channel != base);
        if let Some(ch) = st.channels.get_mut(base) {
            ch.subscribers.remove(client_id);
        }
        shared.bump(|s| s.unsubscribed(base));
    }
    Some(Reply::to(m).subscription(m).ok())
}

fn disconnect(shared: &Shared, st: &mut State, m: &In<'_>) -> Option<Reply> {
    let Some(client_id) = m.msg.client_id.as_deref() else {
        return Some(unknown_client(shared, m));
    };
    if shared.session(st, client_id).is_none() {
        return Some(unknown_client(shared, m));
    }
    shared.remove_session(st, client_id, Wake::ClientDisconnect);
    Some(Reply::to(m).ok())
}

/// Salesforce does not implement CometD publishing (aiosfstream's API reference, from
/// Salesforce's docs: "Salesforce chose not to implement the publishing of Generic Streaming and
/// Platform events with CometD"; publish over REST instead). Its server is CometD 3 with a
/// security policy, whose denial CometD words `403:<reason>:publish_denied` with the reason
/// `denied_by_security_policy` (CometD 3 `BayeuxServerImpl`; the same policy's
/// `403:denied_by_security_policy:create_denied` is a real Salesforce reply, EMP-Connector#17).
/// No public capture of Salesforce's publish reply exists: the string is unverified.
pub(crate) const PUBLISH_DENIED: &str = "403:denied_by_security_policy:publish_denied";

fn publish(shared: &Shared, st: &mut State, m: &In<'_>) -> Option<Reply> {
    let Some(client_id) = m.msg.client_id.as_deref() else {
        return Some(unknown_client(shared, m));
    };
    if shared.session(st, client_id).is_none() {
        return Some(unknown_client(shared, m));
    }
    // Publish replies carry no clientId.
    Some(
        Reply {
            client_id: None,
            ..Reply::to(m)
        }
        .error(PUBLISH_DENIED),
    )
}
