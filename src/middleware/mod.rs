//! Layer 3: middleware over the transport, tower style: a `XxxLayer` wraps a transport in an
//! `Xxx<T>` that is a transport itself.
//!
//! - [`AuthLayer`]: sets `Authorization` and the endpoint from the current token, and logs in
//!   again once when the server rejects the token.
//! - the replay layer (always on, configured through [`ClientBuilder`](crate::ClientBuilder)):
//!   `ext.replay` on handshake and on every subscribe (with the id [`crate::replay`] picks),
//!   and the fallback when the server rejects a replay id.
//!
//! Your own layers (logging, metrics, custom `ext` fields) go in with
//! [`ClientBuilder::layer`](crate::ClientBuilder::layer).

mod auth;
pub(crate) mod replay;

pub use auth::{Auth, AuthLayer};
