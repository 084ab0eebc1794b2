//! An in-process Salesforce Streaming API emulator (cargo feature `emulator`).
//!
//! [`Emulator`] serves, on `127.0.0.1` and an ephemeral port, the OAuth token endpoint
//! (`/services/oauth2/token`), the CometD endpoint (`/cometd/<version>`) and the REST resources
//! clients publish with (`/services/data/vXX.X/sobjects/<Event__e>/`, `composite/sobjects`,
//! StreamingChannel `push`) the way Salesforce
//! does on the wire: the same reply shapes and error strings, the `BAYEUX_BROWSER`,
//! `sfdc-stream` and `sfproxy-id` cookies, long-polling with `advice`, the replay extension with
//! per-channel retention, and Salesforce-shaped events for PushTopics, platform events, change
//! data capture and generic streaming. On top of that it injects faults ([`Fault`]), runs a
//! virtual clock ([`Emulator::advance_clock`]) and counts everything ([`Stats`]), so tests can
//! wait for a state instead of sleeping ([`Emulator::wait_until`]).
//!
//! Many emulators can run in one process; each is independent. Events are serialized once when
//! published and shared by every subscriber, so it also serves benchmarks; for backlogs too big
//! to hold, [`Emulator::push_generated`] builds each event only when it is sent.
//!
//! # Fidelity
//!
//! Each Salesforce behaviour the emulator knows of, where it comes from, and whether it is
//! emulated. Sources: the Salesforce developer guides (Streaming API, Platform Events, Change Data
//! Capture, REST API), the knowledge base, captures in public issue trackers, and
//! `tests/data/salesforce-messages.json` (one test vector per shape, each with its source; the
//! test `every_salesforce_vector_is_emulated_or_listed` checks the emulator against every one).
//! "Unverified" marks a shape no public capture shows: the emulator's choice is documented here.
//!
//! | behaviour | source | emulated |
//! |---|---|---|
//! | handshake reply with `ext.replay` / `payload.format`, only long-polling | streaming guide; tests/data `handshake_reply` | yes |
//! | `403::Handshake denied`, `ext.sfdc.failureReason` `401::Authentication invalid`, advice `none` | tests/data `handshake_denied` | yes |
//! | first connect reply with advice `{interval 0, timeout 110000, reconnect retry}`, later replies without advice | CometD.NetCore.Salesforce#43, cometd/cometd#775 | yes |
//! | connect held up to 110 s; session dropped 40 s after the last response | streaming guide (timeouts) | yes (virtual clock) |
//! | `401::Authentication invalid`, advice `none`, on a revoked token | tests/data `authentication_invalid` | yes |
//! | `[{"error":"401::Request requires authentication","successful":false}]`, no channel or id, without a token | restforce#103 | yes (HTTP 401: status unverified) |
//! | `403::Unknown client`, advice `{interval 0, reconnect handshake}` on connect only, no `clientId` | CometD.NetCore.Salesforce#43, cometd/cometd#775 | yes |
//! | a new `sfdc-stream` cookie with `403::Unknown client` | CometD.NetCore.Salesforce#43 | yes |
//! | bare `/meta/disconnect` then `403::Unknown client` with advice `none` | EMP-Connector#15 | yes ([`Emulator::disconnect_sessions`]) |
//! | `BAYEUX_BROWSER`, `sfdc-stream`, `sfproxy-id` cookies, required byte-exact after the handshake | tests/data `set_cookie_headers_seen`; EMP-Connector, CometD.NetCore#29 | yes (no `Secure` on http) |
//! | `400::Client {id} has established a session, but no BAYEUX_BROWSER cookie present` | cometd/cometd#881, restforce#161 | yes (HTTP 400: status unverified) |
//! | `400::Invalid connection type {type}` | streaming guide (long-polling only); wording of `{type}` unverified | yes (handshake and connect) |
//! | `400::API version in the URI is mandatory. URI format: '/cometd/NN.N'`, HTTP 400, no id | a public client's test fixture; EMP-Connector#1 (HTTP 400 for `/cometd/replay/38.0`) | yes; the answer to a version above the current one is unverified |
//! | every API version up to the current one served | Salesforce API versioning | yes (24.0 up to the configured one) |
//! | replay `-1`, `-2`, `N`; `400::The replayId {N} you provided was invalid...` (two spaces) | streaming guide; tests/data `subscribe_invalid_replay_id` | yes |
//! | `400::The replayId for channel {..} wasn't found using the provided replay ID map {..}.` | tests/data `subscribe_replay_map_missing_channel` | yes |
//! | retention 24 h (PushTopic, generic) / 72 h (platform events, CDC) | streaming guide, message durability | one configurable age for all ([`EmulatorBuilder::retention_age`]) |
//! | replay ids opaque, not contiguous | streaming guide, message durability | yes ([`EmulatorBuilder::replay_id_step`]) |
//! | event shapes of PushTopic, platform event (API 52+ `EventUuid`), CDC, generic | streaming, platform events and CDC guides; tests/data | yes; the API 39 platform-event shape is not |
//! | `/data/ChangeEvents` receives every entity's change events; one replay-id space for change channels | CDC guide, subscription channels | yes (the shared space is the emulator's reading) |
//! | gap events (`GAP_CREATE`..`GAP_UNDELETE`) and overflow events (`GAP_OVERFLOW`): header only | CDC guide, gap and overflow events | yes ([`Emulator::publish_gap`]); the overflow placeholder record id is unverified |
//! | `400::The channel you requested to subscribe to doesn't exist {channel}` | issue 9 (EMP-Connector#17 shows `403:denied_by_security_policy:create_denied` for a missing topic) | with [`EmulatorBuilder::strict_channels`]; braces unverified |
//! | generic channels created by subscribing (dynamic streaming channel creation) | streaming guide, generic streaming | yes |
//! | `403::Organization total events daily limit exceeded` on handshake, connect, subscribe | tests/data `daily_limit_exceeded`; streaming guide limits; issue 9 | yes ([`EmulatorBuilder::daily_event_limit`]); on handshake and subscribe unverified |
//! | `403::Organization concurrent user limit exceeded` on handshake | reference notes; aiocometd#1 | yes ([`EmulatorBuilder::max_clients`]); exact shape unverified |
//! | `400::Authenticated user id does not match the session's user id` | cometd/cometd#1246 | no (one user) |
//! | CometD publish rejected: `403:denied_by_security_policy:publish_denied` | aiosfstream reference (Salesforce does not implement CometD publish); CometD 3 `BayeuxServerImpl` | yes; the string is unverified |
//! | REST publish of platform events: `201 {"id","success","errors":[{"statusCode":"OPERATION_ENQUEUED","message":<EventUuid>}]}` | platform events guide, "Publish Event Messages with Salesforce APIs" | yes |
//! | sObject collections: one save result per record, `allOrNone`, 200 records | REST API guide | yes (`INVALID_BATCH_SIZE` wording unverified) |
//! | `REQUIRED_FIELD_MISSING` save results, REST error arrays `[{"message","errorCode","fields"}]` | REST API guide, status codes and errors | yes ([`Emulator::require_fields`]) |
//! | StreamingChannel query and `push` (`[{"fanoutCount","userOnlineStatus"}]`) | streaming guide, generic streaming | yes (one emulated user) |
//! | event-bus backlog: nothing delivered for hours while the session is healthy, then an invalid replay id | knowledge article 005321562 | yes ([`Emulator::stall_channel`], [`Emulator::fail_stalled_channel`]) |
//! | PushTopic filters (`/topic/T?Field=value&F2='v 2'`): equality only, on the record's fields, events delivered on the filtered name | streaming guide, filtered subscriptions; EMP-Connector README | yes, replays included |
//! | `400::Query fields ... do not exist on the topic entity` for a field the topic does not select | issue 9 | yes, for topics given with [`Emulator::define_push_topic`]; wording after "fields" unverified |
//! | one filter per topic per client | not found in the guides | a second filter on the same topic replaces the first |
//! | POST body over 32 KB refused with 413 | streaming guide | yes |
//! | maintenance page (HTML with HTTP 200), proxy errors | field reports | as faults ([`Fault`]) |
//! | WebSocket transport | Salesforce offers none | no |
//!
//! The JWT bearer grant needs the `jwt` feature and a public key
//! ([`EmulatorBuilder::jwt_public_key`]).
//!
//! ```
//! use sfstream::emulator::{Emulator, Fault, Target};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let emu = Emulator::builder()
//!     .advice_timeout(Duration::from_secs(5))
//!     .start()
//!     .await?;
//! // Point a client at emu.cometd_url() with this token, or log in at emu.login_url() with
//! // emu.client_id(), emu.client_secret(), emu.username() and emu.password().
//! let _token = emu.issue_token();
//! let replay_id = emu.publish("/event/Order_Placed__e", serde_json::json!({"Amount__c": 249.5}));
//! assert_eq!(replay_id, 1);
//! emu.inject(Fault::on(Target::Connect).status(503, "Service Unavailable"));
//! assert_eq!(emu.stats().events_published, 1);
//! emu.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod cometd;
mod disk;
mod events;
mod faults;
mod filter;
mod ids;
mod oauth;
mod rest;
mod retention;
mod server;
mod state;
mod stats;

pub use events::PreparedBatch;
pub use faults::{Fault, FaultBuilder, Target};
pub use oauth::TokenRequest;
pub use stats::Stats;

use state::{Config, Shared, Wake, base_channel};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running emulator. Cheap to clone; every clone controls the same server.
///
/// All methods take `&self`, are synchronous unless marked `async`, and can be called from any
/// thread or runtime. The server stops when [`shutdown`](Emulator::shutdown) is called or the
/// last clone is dropped; either way its connections are closed and its port released.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The accept loop also stops when this sender is dropped; saying so is clearer.
        let _ = self.shutdown.send(true);
    }
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("instance_url", &self.inner.shared.base_url)
            .field("api_version", &self.inner.shared.config.api_version)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// A builder with Salesforce's defaults.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// Start an emulator with the defaults. Must be called within a Tokio runtime, which then
    /// runs the server.
    pub async fn start() -> io::Result<Emulator> {
        Emulator::builder().start().await
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn instance_url(&self) -> String {
        self.shared().base_url.clone()
    }

    /// The login URL (same server as [`instance_url`](Emulator::instance_url)); the token
    /// endpoint is at `/services/oauth2/token`.
    pub fn login_url(&self) -> String {
        self.shared().base_url.clone()
    }

    /// `instance_url + "/cometd/" + api_version`.
    pub fn cometd_url(&self) -> String {
        format!("{}{}", self.shared().base_url, self.shared().cometd_path)
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The API version served (default [`DEFAULT_API_VERSION`](crate::DEFAULT_API_VERSION)).
    pub fn api_version(&self) -> String {
        self.shared().config.api_version.clone()
    }

    /// The connected app's consumer key.
    pub fn client_id(&self) -> String {
        self.shared().config.client_id.clone()
    }

    /// The connected app's consumer secret.
    pub fn client_secret(&self) -> String {
        self.shared().config.client_secret.clone()
    }

    /// The user of the password flow.
    pub fn username(&self) -> String {
        self.shared().config.username.clone()
    }

    /// The password of the password flow.
    pub fn password(&self) -> String {
        self.shared().config.password.clone()
    }

    /// A client builder for this emulator: the username-password flow against its token
    /// endpoint, and its API version. Add options and `connect()`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sfstream::Result<()> {
    /// use futures::StreamExt;
    /// use sfstream::NoticeExt;
    /// let emu = sfstream::emulator::Emulator::start().await.expect("emulator");
    /// let client = emu.client_builder().connect().await?;
    /// let mut orders = client
    ///     .subscribe("/event/Order__e")
    ///     .await?
    ///     .on_notice(|notice| eprintln!("{notice}")); // `?` below ends only on real errors
    /// emu.publish("/event/Order__e", serde_json::json!({"Amount__c": 10}));
    /// let event = orders.next().await.expect("an event")?;
    /// assert_eq!(event.replay_id(), Some(1));
    /// client.close().await
    /// # }
    /// ```
    pub fn client_builder(&self) -> crate::ClientBuilder {
        let mut auth = crate::auth::PasswordAuthenticator::new(
            self.client_id(),
            self.client_secret(),
            self.username(),
            self.password(),
        );
        // The emulator's own http://127.0.0.1:<port> always parses.
        if let Ok(login) = self.login_url().parse::<url::Url>() {
            auth = auth.login_url(login);
        }
        crate::Client::builder(auth).api_version(self.api_version())
    }

    /// Mint a valid access token, as if obtained with the Salesforce CLI.
    pub fn issue_token(&self) -> String {
        let token = ids::access_token();
        self.shared().lock().access_tokens.insert(token.clone());
        token
    }

    /// Mint a refresh token valid for the configured client.
    pub fn issue_refresh_token(&self) -> String {
        let token = ids::refresh_token();
        self.shared().lock().refresh_tokens.insert(token.clone());
        token
    }

    /// Invalidate every access token issued so far. Held connects are answered at once with
    /// `401::Authentication invalid` (advice `reconnect: none`); later requests with those tokens
    /// get the same error, or `403::Handshake denied` on a handshake. Refresh tokens stay valid,
    /// and sessions survive for requests carrying a new token.
    pub fn revoke_tokens(&self) {
        self.shared().lock().access_tokens.clear();
        self.shared().wake_all(Wake::Revoked);
    }

    /// Revoke every access token *and* drop every CometD session, as when an administrator ends
    /// the user's sessions or the OAuth session times out: held connects are answered with
    /// `401::Authentication invalid` (advice `reconnect: none`), and the old client ids are
    /// unknown afterwards (`403::Unknown client`), even with a new token. A client recovers with
    /// a new token, a handshake and its subscriptions again. Refresh tokens stay valid.
    ///
    /// ```no_run
    /// # async fn demo(emu: sfstream::emulator::Emulator) {
    /// emu.revoke_sessions();
    /// emu.wait_until(|s| s.handshakes >= 2).await;
    /// # }
    /// ```
    pub fn revoke_sessions(&self) {
        self.shared().revoke_sessions();
    }

    /// Publish a Salesforce-shaped event built from `fields`, by channel family, and return its
    /// replay id:
    ///
    /// - `/topic/Name`: `{"event":{"createdDate","replayId","type"},"sobject":{"Id",..}}`, with
    ///   `type` taken from `fields["type"]` (default `created`) and `Id` generated if absent;
    /// - `/event/Name__e`, `/event/Name__chn`: `{"schema","payload":{"CreatedDate","CreatedById",..},
    ///   "event":{"EventUuid","replayId"}}`;
    /// - `/data/<Entity>ChangeEvent`, `/data/ChangeEvents`: `{"schema","payload":{"ChangeEventHeader":
    ///   {..},..},"event":{"replayId"}}`; `fields["changeType"]` (default `UPDATE`),
    ///   `fields["entityName"]` and `fields["Id"]` go into the header, the other fields into the
    ///   payload and `changedFields`;
    /// - `/u/Name`: `{"event":{"createdDate","replayId"},"payload":<string>}` (a non-string
    ///   `fields` is sent as its JSON text);
    /// - anything else, or `fields` that is not an object: as [`publish_data`](Emulator::publish_data).
    ///
    /// ```no_run
    /// # async fn demo(emu: sfstream::emulator::Emulator) {
    /// let id = emu.publish("/topic/InvoiceStatementUpdates", serde_json::json!({"type": "updated", "Name": "INV-1"}));
    /// # }
    /// ```
    ///
    /// A change event (`/data/<Entity>ChangeEvent`, or `/data/ChangeEvents` with
    /// `fields["entityName"]`) goes to its entity's channel *and* to `/data/ChangeEvents`, with
    /// one replay id from the space every change channel shares, as Salesforce's multi-entity
    /// channel works (Change Data Capture developer guide, "Subscription Channels").
    pub fn publish(&self, channel: &str, fields: serde_json::Value) -> i64 {
        let base = base_channel(channel);
        if let Some(entity) = events::entity_channel(base, &fields) {
            return self.shared().publish_change(&entity, |id, now| {
                events::salesforce_data(&entity, fields, id, now)
            });
        }
        self.shared().publish_with(channel, |id, now| {
            events::salesforce_data(base, fields, id, now)
        })
    }

    /// Create the StreamingChannel record of a generic streaming channel (`/u/Name`) and return
    /// its id, as an administrator does; the REST push resource needs it. Subscribing to a `/u/`
    /// channel also creates it (Salesforce's "dynamic streaming channel creation" setting).
    /// Creating an existing channel returns its id.
    ///
    /// ```no_run
    /// # async fn demo(emu: sfstream::emulator::Emulator) {
    /// let id = emu.create_streaming_channel("/u/Notifications");
    /// assert!(id.starts_with("0M6"));
    /// # }
    /// ```
    pub fn create_streaming_channel(&self, channel: &str) -> String {
        self.shared().lock().streaming_channel(channel)
    }

    /// Declare required fields of the platform event `event` (`Order__e`): REST publishes
    /// lacking one fail with `REQUIRED_FIELD_MISSING`, as Salesforce rejects them.
    ///
    /// ```no_run
    /// # async fn demo(emu: sfstream::emulator::Emulator) {
    /// emu.require_fields("Order__e", &["Amount__c"]);
    /// # }
    /// ```
    pub fn require_fields(&self, event: &str, fields: &[&str]) {
        let name = event.strip_prefix("/event/").unwrap_or(event).to_owned();
        let fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self.shared().lock().required_fields.insert(name, fields);
    }

    /// Publish a gap event (`change_type` `GAP_CREATE`, `GAP_UPDATE`, `GAP_DELETE`,
    /// `GAP_UNDELETE`) or an overflow event (`GAP_OVERFLOW`) for the records `record_ids` on a
    /// change channel (`/data/AccountChangeEvent`; also delivered on `/data/ChangeEvents`), as
    /// Salesforce sends when it cannot build a change event: the header only, no record fields.
    /// Returns its replay id.
    ///
    /// ```no_run
    /// # async fn demo(emu: sfstream::emulator::Emulator) {
    /// emu.publish_gap("/data/AccountChangeEvent", "GAP_UPDATE", &["001xx000003DGb2AAG"]);
    /// emu.publish_gap("/data/AccountChangeEvent", "GAP_OVERFLOW", &[]);
    /// # }
    /// ```
    pub fn publish_gap(&self, channel: &str, change_type: &str, record_ids: &[&str]) -> i64 {
        let base = base_channel(channel);
        let fields = serde_json::json!({});
        let entity = events::entity_channel(base, &fields).unwrap_or_else(|| base.to_owned());
        self.shared().publish_change(&entity, |id, now| {
            events::gap_data(&entity, change_type, record_ids, id, now)
        })
    }

    /// Create a channel, as defining a PushTopic, a platform event or enabling Change Data
    /// Capture for an entity does; only needed with
    /// [`strict_channels`](EmulatorBuilder::strict_channels). Publishing to a channel creates it
    /// too.
    ///
    /// ```no_run
    /// # async fn demo(emu: sfstream::emulator::Emulator) {
    /// emu.create_channel("/topic/InvoiceStatementUpdates");
    /// # }
    /// ```
    pub fn create_channel(&self, channel: &str) {
        let shared = self.shared();
        shared.lock().channel(&shared.config, base_channel(channel));
    }

    /// Define a PushTopic: its channel (`/topic/Name`) and the fields its query selects. Filtered
    /// subscriptions (`/topic/Name?Field=value`) may then use only those fields; others get
    /// `400::Query fields ... do not exist on the topic entity`. Topics not defined accept any
    /// field. Creates the channel too.
    ///
    /// ```no_run
    /// # async fn demo(emu: sfstream::emulator::Emulator) {
    /// emu.define_push_topic("/topic/AllAccounts", &["Id", "Name", "Industry", "ShippingCity"]);
    /// # }
    /// ```
    pub fn define_push_topic(&self, channel: &str, fields: &[&str]) {
        let shared = self.shared();
        let base = base_channel(channel);
        let mut st = shared.lock();
        st.channel(&shared.config, base);
        st.push_topics.insert(
            base.to_owned(),
            fields.iter().map(|f| (*f).to_owned()).collect(),
        );
    }

    /// Start a new daily delivery allocation now (see [`EmulatorBuilder::daily_event_limit`]);
    /// advancing the virtual clock by 24 h does the same.
    pub fn reset_daily_limit(&self) {
        let shared = self.shared();
        let now = shared.now();
        shared.lock().reset_daily_limit(now);
    }

    /// Inject the event-bus backlog failure of Salesforce knowledge article 005321562: events
    /// published on `channel` are retained but reach no subscriber, and (re)subscribing with a
    /// replay id replays nothing, while sessions stay healthy. End it with
    /// [`fail_stalled_channel`](Emulator::fail_stalled_channel).
    pub fn stall_channel(&self, channel: &str) {
        self.shared()
            .lock()
            .stalled
            .insert(base_channel(channel).to_owned());
    }

    /// End a [`stall_channel`](Emulator::stall_channel) with the retained events intact: the
    /// subscriptions that were stalled stay behind (what was published during the stall never
    /// reaches them), and a subscribe with a replay id replays it, as a client resubscribing
    /// after a quiet period (the article's advice) gets it from Salesforce.
    pub fn end_stall(&self, channel: &str) {
        self.shared().lock().stalled.remove(base_channel(channel));
    }

    /// End a [`stall_channel`](Emulator::stall_channel) the way the article describes: the
    /// stalled events age out of retention (all retained events of `channel` are dropped) and
    /// the subscribed sessions are dropped (`403::Unknown client`), so a client resubscribing
    /// from its last replay id gets `400::The replayId {..} you provided was invalid..`.
    pub fn fail_stalled_channel(&self, channel: &str) {
        let base = base_channel(channel);
        let shared = self.shared();
        let mut st = shared.lock();
        st.stalled.remove(base);
        let subscribers: Vec<String> = match st.channels.get_mut(base) {
            Some(ch) => {
                ch.expire_through(i64::MAX);
                ch.subscribers.iter().cloned().collect()
            }
            None => Vec::new(),
        };
        for id in subscribers {
            shared.remove_session(&mut st, &id, Wake::Gone);
        }
    }

    /// Publish `data` as given, except that `data.event.replayId` and `data.event.createdDate`
    /// are set (non-object data becomes `{"event":{..},"payload":data}`). Returns the replay id.
    pub fn publish_data(&self, channel: &str, data: serde_json::Value) -> i64 {
        self.shared()
            .publish_with(channel, |id, now| events::custom_data(data, id, now))
    }

    /// Build and serialize Salesforce-shaped events now (assigning their replay ids and dates),
    /// for [`push_prepared`](Emulator::push_prepared) to deliver later. For benchmarks: events
    /// go to `channel` only (change events are not copied to `/data/ChangeEvents`), with the
    /// channel's own replay ids.
    pub fn prepare(&self, channel: &str, fields: &[serde_json::Value]) -> PreparedBatch {
        let base = base_channel(channel);
        let shared = self.shared();
        let now = shared.wall();
        let mut st = shared.lock();
        let ch = st.channel(&shared.config, base);
        let events: Vec<(i64, bytes::Bytes)> = fields
            .iter()
            .map(|f| {
                let id = ch.assign_id();
                let data = events::salesforce_data(base, f.clone(), id, now);
                (id, events::frame(base, &data))
            })
            .collect();
        PreparedBatch {
            channel: ch.name.clone(),
            events: events.into(),
        }
    }

    /// Retain and deliver a prepared batch. Cheap (reference-count clones); pushing the same batch
    /// again repeats its replay ids, which is fine for benchmarks.
    pub fn push_prepared(&self, batch: &PreparedBatch) {
        let shared = self.shared();
        let mut st = shared.lock();
        shared.deliver(&mut st, &batch.channel, &batch.events);
    }

    /// For benchmarks: a backlog of `count` events on `channel` that costs the server almost no
    /// memory, however large. The event with replay id `r` is built from `fields(r)` the way
    /// [`publish`](Emulator::publish) builds events, but only when a connect response takes it,
    /// and dropped once sent. Their replay ids are handed out now, in order, and `createdDate` is
    /// the time of this call.
    ///
    /// Unlike published events they go only to the sessions subscribed to `channel` now, once
    /// per session (PushTopic filters are not applied; change events are not copied to
    /// `/data/ChangeEvents`), and they are never retained: neither a later subscription nor a
    /// resume from one of their ids gets them again (as if they had expired). Pair it with [`EmulatorBuilder::max_batch`]: without a limit a connect
    /// response takes, and builds, the whole backlog at once. `fields` runs with the emulator's
    /// state locked, so it must not call back into the emulator.
    ///
    /// ```no_run
    /// # async fn demo(emu: sfstream::emulator::Emulator) {
    /// // A million 10 KB events waiting for the subscribers of /event/Big__e.
    /// let notes = "x".repeat(10_000);
    /// emu.push_generated("/event/Big__e", 1_000_000, move |replay_id| {
    ///     serde_json::json!({"Order_Number__c": format!("ORD-{replay_id}"), "Notes__c": notes})
    /// });
    /// # }
    /// ```
    pub fn push_generated(
        &self,
        channel: &str,
        count: usize,
        fields: impl Fn(i64) -> serde_json::Value + Send + Sync + 'static,
    ) {
        let shared = self.shared();
        let base: Arc<str> = Arc::from(base_channel(channel));
        let now = shared.wall();
        let name = base.clone();
        let make = move |id: i64| {
            events::frame(&name, &events::salesforce_data(&name, fields(id), id, now))
        };
        shared.deliver_generated(&base, count, Arc::new(make));
    }

    /// Drop every session silently: the next request of each gets `403::Unknown client`, and a
    /// held connect is answered with it at once (advice `reconnect: handshake`).
    pub fn forget_sessions(&self) {
        self.shared().remove_all_sessions(Wake::Gone);
    }

    /// Drop every session the way Salesforce did in EMP-Connector#15: each held connect is answered
    /// with `[{"channel":"/meta/disconnect"}, {"channel":"/meta/connect","successful":false,
    /// "error":"403::Unknown client","advice":{"reconnect":"none"},..}]`.
    pub fn disconnect_sessions(&self) {
        self.shared().remove_all_sessions(Wake::ServerDisconnect);
    }

    /// Drop the events of `channel` retained with a replay id up to `through_replay_id`
    /// (a retention gap). Events already queued for a session are still delivered.
    pub fn expire_events(&self, channel: &str, through_replay_id: i64) {
        if let Some(ch) = self.shared().lock().channels.get_mut(base_channel(channel)) {
            ch.expire_through(through_replay_id);
        }
    }

    /// The number of events currently retained on `channel`.
    pub fn retained(&self, channel: &str) -> usize {
        let shared = self.shared();
        let mut st = shared.lock();
        match st.channels.get_mut(base_channel(channel)) {
            Some(ch) => {
                ch.trim(shared.now(), shared.config.retention_age);
                ch.retained()
            }
            None => 0,
        }
    }

    /// Move the virtual clock forward: it dates events (`createdDate`), ages retained events,
    /// expires sessions past the reconnect window and times out held connects.
    pub fn advance_clock(&self, by: Duration) {
        self.shared().advance_clock(by);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared().stats()
    }

    /// Resolve as soon as `f(&stats)` holds; re-checked on every counter change, never by
    /// polling. `f` must not call back into the emulator.
    ///
    /// ```no_run
    /// # async fn demo(emu: sfstream::emulator::Emulator) {
    /// emu.wait_until(|s| s.held_connects == 1).await;
    /// # }
    /// ```
    pub async fn wait_until(&self, f: impl Fn(&Stats) -> bool) {
        let mut changes = self.shared().stats_changes();
        // The sender lives as long as `self`, so this only returns once `f` holds.
        let _ = changes.wait_for(|s| f(s)).await;
    }

    /// Inject a one-shot fault for the next matching request; see [`Fault`].
    pub fn inject(&self, fault: Fault) {
        self.shared().lock().faults.push_back(fault);
    }

    /// Every Bayeux message received from clients, in order (the last 100,000). Requests
    /// swallowed by a [`Fault`] never reached the emulated server and are not listed.
    pub fn received(&self) -> Vec<crate::bayeux::Message> {
        self.shared().received()
    }

    /// The messages clients tried to publish over CometD, in order (the last 100,000). Each was
    /// rejected as Salesforce rejects them; publish over REST instead.
    pub fn published(&self) -> Vec<crate::bayeux::Message> {
        self.shared().published()
    }

    /// The requests made to the token endpoint, in order (the last 100,000), without secrets.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.shared().token_requests()
    }

    /// Stop the server, even if other clones exist, and wait until its connections are closed
    /// and its port is free.
    pub async fn shutdown(self) {
        let _ = self.inner.shutdown.send(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Configures and starts an [`Emulator`]. Defaults follow Salesforce.
#[derive(Clone, Default)]
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct EmulatorBuilder {
    config: Config,
}

impl fmt::Debug for EmulatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("EmulatorBuilder")
            .field("api_version", &c.api_version)
            .field("advice_timeout", &c.advice_timeout)
            .field("reconnect_window", &c.reconnect_window)
            .field("client_id", &c.client_id)
            .field("client_secret", &"<redacted>")
            .field("username", &c.username)
            .field("password", &"<redacted>")
            .field("retention_count", &c.retention_count)
            .field("retention_age", &c.retention_age)
            .field("replay_id_start", &c.replay_id_start)
            .field("replay_id_step", &c.replay_id_step)
            .field("backlog_in_subscribe_reply", &c.backlog_in_subscribe_reply)
            .field("connect_reply_first", &c.connect_reply_first)
            .field("max_batch", &c.max_batch)
            .field("require_cookies", &c.require_cookies)
            .field("port", &c.port)
            .field("rotate_refresh_tokens", &c.rotate_refresh_tokens)
            .field("daily_event_limit", &c.daily_event_limit)
            .field("max_clients", &c.max_clients)
            .field("strict_channels", &c.strict_channels)
            .finish_non_exhaustive()
    }
}

impl EmulatorBuilder {
    /// The API version in the CometD path (default [`DEFAULT_API_VERSION`](crate::DEFAULT_API_VERSION)).
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().api_version("45.0");
    /// ```
    pub fn api_version(mut self, version: &str) -> Self {
        self.config.api_version = version.to_owned();
        self
    }

    /// How long a connect is held when no event arrives, sent as `advice.timeout` (default 110 s,
    /// as Salesforce).
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().advice_timeout(std::time::Duration::from_secs(2));
    /// ```
    pub fn advice_timeout(mut self, timeout: Duration) -> Self {
        self.config.advice_timeout = timeout;
        self
    }

    /// How long a session lives with no connect held and no request (default 40 s, as
    /// Salesforce); measured on the virtual clock.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().reconnect_window(std::time::Duration::from_secs(5));
    /// ```
    pub fn reconnect_window(mut self, window: Duration) -> Self {
        self.config.reconnect_window = window;
        self
    }

    /// The connected app's consumer key and secret.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().client_credentials("my-key", "my-secret");
    /// ```
    pub fn client_credentials(mut self, id: &str, secret: &str) -> Self {
        self.config.client_id = id.to_owned();
        self.config.client_secret = secret.to_owned();
        self
    }

    /// The user of the password flow.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().user("ada@example.com", "hunter2");
    /// ```
    pub fn user(mut self, username: &str, password: &str) -> Self {
        self.config.username = username.to_owned();
        self.config.password = password.to_owned();
        self
    }

    /// How many events each channel retains, oldest dropped first (default 100,000).
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().retention_count(10);
    /// ```
    pub fn retention_count(mut self, count: usize) -> Self {
        self.config.retention_count = count;
        self
    }

    /// How long events are retained, on the virtual clock (default 24 h).
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().retention_age(std::time::Duration::from_secs(72 * 3600));
    /// ```
    pub fn retention_age(mut self, age: Duration) -> Self {
        self.config.retention_age = age;
        self
    }

    /// The first replay id of each channel (default 1; any `i64`, e.g. above 2^32).
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().replay_id_start(5_000_000_000);
    /// ```
    pub fn replay_id_start(mut self, start: i64) -> Self {
        self.config.replay_id_start = start;
        self
    }

    /// The gap between consecutive replay ids (default 1; values below 1 count as 1). Replay ids
    /// are opaque: clients must not assume they are contiguous.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().replay_id_step(7);
    /// ```
    pub fn replay_id_step(mut self, step: i64) -> Self {
        self.config.replay_id_step = step.max(1);
        self
    }

    /// Where replayed events (`-2` or `N`) go: `false` (default) with the next connect, `true` in
    /// the subscribe response itself, before the subscribe reply, as some servers do.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().backlog_in_subscribe_reply(true);
    /// ```
    pub fn backlog_in_subscribe_reply(mut self, on: bool) -> Self {
        self.config.backlog_in_subscribe_reply = on;
        self
    }

    /// Order of a connect response: `false` (default) events then the `/meta/connect` reply,
    /// `true` the reply first.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().connect_reply_first(true);
    /// ```
    pub fn connect_reply_first(mut self, on: bool) -> Self {
        self.config.connect_reply_first = on;
        self
    }

    /// The most events in one connect response (default `None`: all queued). `Some(0)` counts
    /// as `Some(1)`.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().max_batch(Some(100));
    /// ```
    pub fn max_batch(mut self, max: Option<usize>) -> Self {
        self.config.max_batch = max.map(|m| m.max(1));
        self
    }

    /// Whether requests after the handshake must carry the handshake's cookies, byte-exact
    /// (default `true`, as Salesforce).
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().require_cookies(false);
    /// ```
    pub fn require_cookies(mut self, on: bool) -> Self {
        self.config.require_cookies = on;
        self
    }

    /// Whether the refresh token grant rotates refresh tokens (default `false`): each use spends
    /// the refresh token and the reply carries a new `refresh_token`, as with Salesforce's
    /// refresh token rotation.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().rotate_refresh_tokens(true);
    /// ```
    pub fn rotate_refresh_tokens(mut self, on: bool) -> Self {
        self.config.rotate_refresh_tokens = on;
        self
    }

    /// Accept JWT bearer assertions (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`)
    /// signed with the private key of this RSA public key (PEM, `BEGIN PUBLIC KEY` or
    /// `BEGIN RSA PUBLIC KEY`), as the certificate uploaded to a connected app. The emulator
    /// checks the RS256 signature, `iss` = [`client_id`](Emulator::client_id), `sub` =
    /// [`username`](Emulator::username), `aud` = [`login_url`](Emulator::login_url) (or
    /// `https://login.salesforce.com` / `https://test.salesforce.com`), and `exp` in the future
    /// but at most five minutes ahead, answering Salesforce's errors otherwise. Without a key,
    /// every assertion is an `invalid_grant`. [`start`](EmulatorBuilder::start) fails if the key
    /// does not parse.
    ///
    /// ```no_run
    /// let pem = std::fs::read_to_string("server.pub").unwrap();
    /// let b = sfstream::emulator::Emulator::builder().jwt_public_key(&pem);
    /// ```
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn jwt_public_key(mut self, pem: &str) -> Self {
        self.config.jwt_public_key = Some(pem.to_owned());
        self
    }

    /// The port to listen on, on 127.0.0.1 (default 0: an ephemeral port).
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().port(8443);
    /// ```
    pub fn port(mut self, port: u16) -> Self {
        self.config.port = port;
        self
    }

    /// The org's daily event delivery allocation (default `None`: unlimited): once this many
    /// events were delivered in 24 h of the virtual clock, handshakes, connects and subscribes
    /// fail with `403::Organization total events daily limit exceeded` and events wait, until
    /// the day is over or [`Emulator::reset_daily_limit`].
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().daily_event_limit(Some(10_000));
    /// ```
    pub fn daily_event_limit(mut self, limit: Option<u64>) -> Self {
        self.config.daily_event_limit = limit;
        self
    }

    /// The org's concurrent CometD client limit (default `None`: unlimited; Salesforce: 2,000
    /// Performance/Unlimited, 1,000 Enterprise, 20 others): a handshake beyond it fails with
    /// `403::Organization concurrent user limit exceeded`.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().max_clients(Some(20));
    /// ```
    pub fn max_clients(mut self, max: Option<usize>) -> Self {
        self.config.max_clients = max;
        self
    }

    /// Refuse subscriptions to channels nobody created (default `false`: any channel can be
    /// subscribed): `400::The channel you requested to subscribe to doesn't exist {channel}`.
    /// Channels exist once created with [`Emulator::create_channel`] or published to; generic
    /// `/u/` channels and `/data/ChangeEvents` always do.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().strict_channels(true);
    /// ```
    pub fn strict_channels(mut self, on: bool) -> Self {
        self.config.strict_channels = on;
        self
    }

    /// Keep retained events in a file (JSON lines, appended as events are published) and start
    /// from the events it holds: a restarted emulator replays what the last one retained and
    /// continues its replay ids, so consumers can be tested across restarts of either side.
    /// Created if missing. It survives the emulator process being killed (each line is one
    /// `write`), not a power loss. The retention count applies on load; the retention age
    /// counts from the load. Sessions, tokens, faults and [`Emulator::expire_events`] are not
    /// kept.
    ///
    /// ```no_run
    /// let b = sfstream::emulator::Emulator::builder().retention_file("emulator-events.jsonl");
    /// ```
    pub fn retention_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.retention_file = Some(path.into());
        self
    }

    /// Bind the port and start serving on the current Tokio runtime.
    ///
    /// Fails if the port cannot be bound, the retention file cannot be read or created, or no
    /// Tokio runtime is running.
    pub async fn start(self) -> io::Result<Emulator> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("the emulator must be started within a Tokio runtime"))?;
        #[cfg(feature = "jwt")]
        oauth::jwt_public_key(self.config.jwt_public_key.as_deref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener =
            tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, self.config.port)).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://127.0.0.1:{}", addr.port());
        tracing::info!(url = %base_url, "emulator started");
        let disk = match &self.config.retention_file {
            Some(path) => Some(disk::RetentionFile::open(path)?),
            None => None,
        };
        let shared = Arc::new(Shared::new(self.config, base_url));
        if let Some((file, records)) = disk {
            shared.restore(file, records);
        }
        let (shutdown, stop) = watch::channel(false);
        let task = runtime.spawn(server::serve(listener, shared.clone(), stop));
        Ok(Emulator {
            inner: Arc::new(Inner {
                shared,
                addr,
                shutdown,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn handle_is_send_sync() {
        assert_send_sync::<Emulator>();
        assert_send_sync::<PreparedBatch>();
        assert_send_sync::<Fault>();
    }

    #[test]
    fn builder_debug_redacts_secrets() {
        let b = Emulator::builder()
            .user("u", "pw-secret")
            .client_credentials("id", "cs-secret");
        let text = format!("{b:?}");
        assert!(
            !text.contains("pw-secret") && !text.contains("cs-secret"),
            "{text}"
        );
    }
}
