//! # sfstream
//!
//! A Salesforce Streaming API client: PushTopic, generic streaming, platform events and Change
//! Data Capture over CometD long-polling, with Salesforce OAuth and the replay extension. Every
//! subscription is a [`futures::Stream`] fed by one shared connection task.
//!
//! This page is a guide from the first two lines to a pipeline that survives restarts; each
//! step names the items and the runnable example that go further. Coming from Python's
//! aiosfstream? [`migrating_from_aiosfstream`] maps every name.
//!
//! # 1. Connect and subscribe
//!
//! ```no_run
//! # async fn run() -> sfstream::Result<()> {
//! use futures::StreamExt;
//! use sfstream::Client;
//!
//! let client = Client::password("consumer-key", "consumer-secret", "ada@example.com", "pw+token", false)
//!     .connect()
//!     .await?;
//! let mut orders = client.subscribe("/event/Order_Placed__e").await?;
//! while let Some(item) = orders.next().await {
//!     match item {
//!         Ok(event) => println!("{} {:?} {}", event.channel(), event.replay_id(), event.data()),
//!         // Errors are reports (an outage being retried, a replay gap, a malformed message),
//!         // not the end: the stream goes on until it returns None.
//!         Err(e) => eprintln!("{e}"),
//!     }
//! }
//! client.close().await
//! # }
//! ```
//!
//! [`Client::password`] is one of the OAuth flows; [`auth`] has the others (refresh token, JWT
//! bearer, client credentials, a ready access token) and [`ClientBuilder`] every option. No
//! account at hand? `cargo run --example tail -- --count 10` streams from the built-in
//! emulator, and `sfstream::emulator::Emulator` (feature `emulator`) gives your tests a
//! Salesforce on loopback.
//!
//! # 2. Notices in `try_` pipelines
//!
//! A stream item that is `Err` is usually a notice the client recovers from by itself
//! ([`Error::is_transient`]). A loop written with `?` on each item (`try_next()?`,
//! `try_for_each`) would end on the first one. [`NoticeExt::on_notice`] hands those to a
//! callback and yields only events and the errors that need a person:
//!
//! ```no_run
//! # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
//! use futures::TryStreamExt;
//! use sfstream::NoticeExt;
//!
//! let mut orders = client
//!     .subscribe("/event/Order_Placed__e")
//!     .await?
//!     .on_notice(|notice| eprintln!("warning: {notice}"));
//! while let Some(event) = orders.try_next().await? {
//!     println!("{}", event.data());
//! }
//! # Ok(()) }
//! ```
//!
//! # 3. Typed events
//!
//! [`events`] has Salesforce's event shapes as types: [`events::ChangeEvent`] (Change Data
//! Capture, with the whole header and gap events), [`events::PushTopicEvent`],
//! [`events::PlatformEvent`], [`events::GenericEvent`]. [`Subscription::typed`] decodes a whole
//! subscription; an event that does not fit your type is an [`ErrorKind::Decode`] item (with
//! the event, to dead-letter and ack it) and the stream goes on:
//!
//! ```no_run
//! # async fn f(client: sfstream::Client) -> sfstream::Result<()> {
//! use futures::StreamExt;
//! use sfstream::NoticeExt;
//! use sfstream::events::{ChangeEvent, Field};
//!
//! #[derive(serde::Deserialize)]
//! struct Account {
//!     #[serde(rename = "Phone", default)]
//!     phone: Field<String>, // absent: unchanged; null: cleared
//! }
//! let mut changes = client
//!     .subscribe("/data/AccountChangeEvent")
//!     .await?
//!     .typed::<ChangeEvent<Account>>()
//!     .on_notice(|notice| eprintln!("warning: {notice}"));
//! while let Some(item) = changes.next().await {
//!     match item {
//!         Ok(change) => println!("{:?} {:?}", change.header.change_type, change.header.record_ids),
//!         Err(e) => eprintln!("skipped: {e}"), // a change that does not fit `Account`
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! `examples/cdc_typed.rs` runs this on the emulator and prints every field change.
//!
//! # 4. Acknowledgements and replay storage
//!
//! Salesforce keeps events for 24 to 72 hours and replays them from a replay id. With a
//! [`replay::ReplayStorage`] ([`replay::FileStorage`], [`replay::MappingStorage`], and with
//! features `PostgresStorage` and `RedisStorage`) a restarted consumer resumes after the last
//! event it *processed*. When an event counts as processed is the
//! [`replay::CommitPolicy`]:
//!
//! - `AfterProcessed` (default): when the stream is polled for the next item, or on
//!   [`Event::ack`]. Right for a plain loop.
//! - `Manual`: only [`Event::ack`], in any order. Use it with read-ahead combinators
//!   (`buffer_unordered`, `chunks`), worker pools and hand-offs to other tasks: the stored
//!   marker never passes an event that is not acked yet.
//! - `OnReceive`: when handed out (at-most-once).
//!
//! To pass events to worker tasks, [`Subscription::hand_off`] gives a bounded channel of events
//! whose acks keep working (a plain mpsc channel reads ahead like `buffered`).
//!
//! ```no_run
//! # async fn work(_: &sfstream::Event) {}
//! # async fn f(auth: sfstream::auth::AccessToken) -> sfstream::Result<()> {
//! use futures::StreamExt;
//! use sfstream::{Client, NoticeExt};
//! use sfstream::replay::{CommitPolicy, FileStorage, ReplayOption};
//!
//! let client = Client::builder(auth)
//!     .replay(ReplayOption::AllEvents) // first run: everything retained
//!     .replay_storage(FileStorage::open("replay.json")?) // later runs: resume
//!     .replay_fallback(ReplayOption::AllEvents) // stored id expired: all retained, and a notice
//!     .commit_policy(CommitPolicy::Manual)
//!     .connect()
//!     .await?;
//! client
//!     .subscribe("/event/Order_Placed__e")
//!     .await?
//!     .on_notice(|notice| eprintln!("warning: {notice}"))
//!     .for_each_concurrent(8, |item| async move {
//!         match item {
//!             Ok(event) => {
//!                 work(&event).await;
//!                 event.ack(); // done: its marker may be stored
//!             }
//!             Err(e) => eprintln!("needs a person: {e}"),
//!         }
//!     })
//!     .await;
//! client.close().await // waits until the markers of acked events are stored
//! # }
//! ```
//!
//! The README's "Delivery guarantees" section has the full rules (what a crash costs, what
//! happens to the event in hand when a stream is dropped, replay gaps).
//!
//! # 5. Examples
//!
//! Each runs on the built-in emulator with no account (`cargo run --example NAME`) and is run
//! to completion by the tests:
//!
//! | example | shows |
//! |---|---|
//! | `tail` | the command-line tool: JSON lines, every OAuth flow from the environment, replay flags, proxies |
//! | `cdc_typed` | a typed CDC subscription for Account, printing field changes, gap events, a change that does not fit |
//! | `worker_pool` | `Manual` acks with `buffer_unordered(8)` and a `FileStorage`; a worker process killed mid-batch, and what the next run redelivers |
//! | `pipeline` | filter, map, `chunks_timeout`-style batching into a bulk sink, graceful shutdown on Ctrl-C / SIGTERM |
//! | `custom_layer` | your own middleware: a custom `ext` field on every message, round trips counted |
//! | `health`, `metrics` | health probes and Prometheus metrics over HTTP |
//!
//! # The layers
//!
//! The crate is built in layers, one module each:
//!
//! | layer | module |
//! |---|---|
//! | Bayeux messages: serde types, raw `data`, the `code:args:message` parser | [`bayeux`] |
//! | transport: one POST of a JSON array over hyper + rustls, cookies, timeouts, size cap | [`transport`] |
//! | middleware over the transport: auth, replay, your own layers | [`middleware`] |
//! | the connection task: handshake, long poll, advice, backoff, rehandshake | (internal) |
//! | the public client: [`Client`], [`ClientBuilder`], [`Subscription`], [`Events`] | (crate root) |
//! | OAuth flows | [`auth`] |
//! | replay storage and commit policies | [`replay`] |
//! | publishing over the REST API (platform events, generic streaming) | [`publish`] |
//! | a typed view over an event | [`Event`] |
//! | typed events of each family (CDC, PushTopic, platform, generic) | [`events`] |
//! | an in-process Salesforce emulator (feature `emulator`) | `emulator` |
//!
//! Backpressure comes from polling: the next `/meta/connect` is sent only while fewer than
//! [`max_pending_count`](ClientBuilder::max_pending_count) events wait for consumers. Errors are
//! one type, [`Error`], with an [`ErrorKind`]; none of them ever holds a secret.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod auth;
pub mod bayeux;
mod client;
mod connection;
#[cfg(feature = "emulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "emulator")))]
pub mod emulator;
mod error;
mod event;
pub mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
mod metrics;
pub mod middleware;
#[doc = include_str!("../docs/migrating-from-aiosfstream.md")]
pub mod migrating_from_aiosfstream {}
mod notice;
pub mod publish;
pub mod replay;
mod telemetry;
pub mod transport;
mod url_policy;

pub use client::{Client, ClientBuilder, Events, HandOff, Handed, Subscription};
pub use connection::ConnectionState;
pub use error::{DecodeFailure, Error, ErrorKind, OAuthError, ReplayGap, Result};
pub use event::Event;
pub use health::Health;
pub use notice::{NoticeExt, OnNotice};
/// URLs (instance, login, My Domain) are [`url::Url`]s, re-exported so you need not depend on
/// `url` yourself.
pub use url::Url;

/// The Streaming API version used unless [`ClientBuilder::api_version`] says otherwise
/// (Spring '26).
pub const DEFAULT_API_VERSION: &str = "66.0";
