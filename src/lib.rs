//! # sfstream
//!
//! A Salesforce Streaming API client: PushTopic, generic streaming, platform events and Change
//! Data Capture over CometD long-polling, with Salesforce OAuth and the replay extension. Every
//! subscription is a [`futures::Stream`] fed by one shared connection task.
//!
//! ```no_run
//! use futures::StreamExt;
//! use sfstream::Client;
//! use sfstream::replay::{FileStorage, ReplayOption};
//!
//! # async fn run() -> sfstream::Result<()> {
//! let client = Client::password("consumer-key", "consumer-secret", "ada@example.com", "pw+token", false)
//!     .replay(ReplayOption::AllEvents)
//!     .replay_storage(FileStorage::open("replay.json")?)
//!     .connect()
//!     .await?;
//! let mut orders = client.subscribe("/event/Order_Placed__e").await?;
//! while let Some(item) = orders.next().await {
//!     match item {
//!         Ok(event) => println!("{} {:?}", event.channel(), event.replay_id()),
//!         // Errors are reports (an outage, a replay gap, a malformed message), not the end:
//!         // the stream goes on until it returns None.
//!         Err(e) => eprintln!("{e}"),
//!     }
//! }
//! client.close().await
//! # }
//! ```
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
