//! C-SEND-SYNC and C-COMMON-TRAITS of the API review (issue 11 item 8), checked by the compiler:
//! a change that makes a public type lose `Send`, `Sync` or a common trait stops this file from
//! building. `.ci/public-api.txt` lists every impl; this file says which ones are promises.

use sfstream::auth::{
    AccessToken, ClientCredentialsAuthenticator, LoginUrl, PasswordAuthenticator,
    RefreshTokenAuthenticator, Secret, Token,
};
use sfstream::replay::{
    CommitPolicy, ConstantReplayId, DefaultMappingStorage, FileStorage, MappingStorage,
    ReplayMarker, ReplayOption, ReplayStorage,
};
use sfstream::transport::{HttpTransport, Proxy, Transport};
use sfstream::{
    Client, ClientBuilder, ConnectionState, Error, ErrorKind, Event, Events, HandOff, Handed,
    Health, Subscription,
};
use std::fmt::Debug;

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}
fn common<T: Debug + Clone + Send + Sync + 'static>() {}
fn value<T: Debug + Clone + PartialEq + Eq + Send + Sync + 'static>() {}

#[test]
fn handles_streams_and_errors_can_cross_threads() {
    // Shared across tasks: one client, cloned.
    send_sync::<Client>();
    common::<Client>();
    // A builder may sit in shared configuration before `connect()`.
    send_sync::<ClientBuilder>();
    // Streams move into spawned tasks; they are also Sync (no interior `!Sync` state), so a
    // `&Subscription` may be held across an await in a `Send` future.
    send_sync::<Subscription>();
    send_sync::<Events>();
    send_sync::<HandOff>();
    send_sync::<Handed>();
    common::<Event>();
    // Errors travel through `?` into anyhow / `Box<dyn Error + Send + Sync>`.
    common::<Error>();
    let _: Box<dyn std::error::Error + Send + Sync + 'static> =
        Box::new(sfstream::bayeux::parse_batch(bytes::Bytes::from_static(b"{")).unwrap_err());
    // A Sink owning a request in flight: Send, and not promised to be Sync.
    send::<sfstream::publish::Publisher<serde_json::Value>>();
}

#[test]
fn storages_authenticators_and_transports_are_shareable() {
    common::<FileStorage>();
    common::<MappingStorage>();
    common::<DefaultMappingStorage>();
    common::<ConstantReplayId>();
    #[cfg(feature = "postgres")]
    common::<sfstream::replay::PostgresStorage>();
    #[cfg(feature = "redis")]
    common::<sfstream::replay::RedisStorage>();
    // The traits themselves require it, so a `dyn` of each is shareable.
    send_sync::<std::sync::Arc<dyn ReplayStorage>>();
    send_sync::<std::sync::Arc<dyn Transport>>();
    send_sync::<Box<dyn sfstream::auth::Authenticator>>();

    common::<AccessToken>();
    common::<PasswordAuthenticator>();
    common::<ClientCredentialsAuthenticator>();
    common::<RefreshTokenAuthenticator>();
    #[cfg(feature = "jwt")]
    common::<sfstream::auth::JwtBearerAuthenticator>();
    common::<Token>();
    common::<Proxy>();
    send_sync::<HttpTransport>();
}

#[test]
fn plain_values_compare() {
    value::<ErrorKind>();
    value::<LoginUrl>();
    value::<Secret>();
    value::<ReplayMarker>();
    value::<ReplayOption>();
    value::<CommitPolicy>();
    value::<Health>();
    common::<ConnectionState>();
    // Kinds and options are small keys: Copy and Hash where they are plain enums.
    fn key<T: Copy + std::hash::Hash>() {}
    key::<ErrorKind>();
    key::<ReplayOption>();
}
