//! sfstream: a Salesforce Streaming API client.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod bayeux;
mod client;
mod connection;
#[cfg(feature = "emulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "emulator")))]
pub mod emulator;
mod error;
mod event;
pub mod middleware;
pub mod replay;
pub mod transport;

pub use client::{Client, ClientBuilder, Events, Subscription};
pub use connection::ConnectionState;
pub use error::{Error, ErrorKind, OAuthError, ReplayGap, Result};
pub use event::Event;

/// The Streaming API version used unless [`ClientBuilder::api_version`] says otherwise
/// (Spring '26).
pub const DEFAULT_API_VERSION: &str = "66.0";
