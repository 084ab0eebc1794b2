//! Authentication end to end: every OAuth flow against the emulator's token endpoint, token
//! errors, re-authentication by the auth layer (revocation mid-stream, `Unknown client`,
//! concurrent rejections), and secrets kept out of `Debug`, errors and logs.

mod common;

use common::log::Captured;
use common::mock::mock;
use common::within;
use futures::StreamExt;
use futures::future::BoxFuture;
use http::HeaderValue;
use serde_json::json;
use sfstream::auth::{
    AccessToken, Authenticator, ClientCredentialsAuthenticator, LoginUrl, PasswordAuthenticator,
    RefreshTokenAuthenticator, Secret, Token,
};
use sfstream::bayeux::Message;
use sfstream::emulator::{Emulator, Fault, Target};
use sfstream::middleware::AuthLayer;
use sfstream::transport::{HttpTransport, Layer, Request, Response, Transport};
use sfstream::{Client, ClientBuilder, Error, ErrorKind, Subscription};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

const CLIENT_ID: &str = "3MVG9-test-consumer-key";
const CLIENT_SECRET: &str = "cs-SECRET-7f3a";
const USERNAME: &str = "ada@example.com";
const PASSWORD: &str = "pw-SECRET-91bcTOKEN";
const CHANNEL: &str = "/event/Order_Placed__e";

async fn emulator() -> Emulator {
    emulator_with(|b| b).await
}

async fn emulator_with(
    f: impl FnOnce(sfstream::emulator::EmulatorBuilder) -> sfstream::emulator::EmulatorBuilder,
) -> Emulator {
    f(Emulator::builder()
        .client_credentials(CLIENT_ID, CLIENT_SECRET)
        .user(USERNAME, PASSWORD))
    .start()
    .await
    .unwrap()
}

fn login_url(emu: &Emulator) -> Url {
    emu.login_url().parse().unwrap()
}

fn password_auth(emu: &Emulator) -> PasswordAuthenticator {
    PasswordAuthenticator::new(CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD)
        .login_url(login_url(emu))
}

/// Fast retries, so recovery after a failure takes milliseconds.
fn quick(builder: ClientBuilder) -> ClientBuilder {
    builder.backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// Subscribe, publish one event and read it back: the stream works.
async fn subscribe_and_receive(emu: &Emulator, client: &Client) -> Subscription {
    let mut sub = client.subscribe(CHANNEL).await.unwrap();
    let id = emu.publish(CHANNEL, json!({"Order_Number__c": "ORD-1"}));
    let event = sub.next().await.unwrap().unwrap();
    assert_eq!(event.replay_id(), Some(id));
    sub
}

/// Connects with `builder`, then [`subscribe_and_receive`]; returns once the emulator holds
/// the client's long poll.
async fn streaming_and_held(emu: &Emulator, builder: ClientBuilder) -> (Client, Subscription) {
    let client = builder.connect().await.unwrap();
    let sub = subscribe_and_receive(emu, &client).await;
    emu.wait_until(|s| s.held_connects == 1).await;
    (client, sub)
}

/// Publish one more event and read it (skipping nothing: the next item must be that event).
async fn next_event_arrives(emu: &Emulator, sub: &mut Subscription) {
    let id = emu.publish(CHANNEL, json!({"Order_Number__c": "ORD-next"}));
    let event = sub.next().await.unwrap().unwrap();
    assert_eq!(event.replay_id(), Some(id));
}

fn grants(emu: &Emulator) -> Vec<(String, Result<(), String>)> {
    emu.token_requests()
        .into_iter()
        .map(|r| (r.grant_type, r.outcome))
        .collect()
}

fn ok(grant: &str) -> (String, Result<(), String>) {
    (grant.to_owned(), Ok(()))
}

/// Wraps an authenticator and records every access token it hands out.
struct Recording<A> {
    inner: A,
    tokens: Arc<Mutex<Vec<String>>>,
}

impl<A: Authenticator> Recording<A> {
    fn new(inner: A) -> (Self, Arc<Mutex<Vec<String>>>) {
        let tokens = Arc::new(Mutex::new(Vec::new()));
        (
            Recording {
                inner,
                tokens: tokens.clone(),
            },
            tokens,
        )
    }

    fn record(&self, result: sfstream::Result<Token>) -> sfstream::Result<Token> {
        if let Ok(t) = &result {
            self.tokens
                .lock()
                .unwrap()
                .push(t.access_token.expose().to_owned());
        }
        result
    }
}

impl<A: Authenticator> Authenticator for Recording<A> {
    fn authenticate(&self) -> BoxFuture<'_, sfstream::Result<Token>> {
        Box::pin(async move { self.record(self.inner.authenticate().await) })
    }

    fn refresh<'a>(&'a self, rejected: &'a Token) -> BoxFuture<'a, sfstream::Result<Token>> {
        Box::pin(async move { self.record(self.inner.refresh(rejected).await) })
    }
}

/// Hands out `token-1`, `token-2`, ... and counts calls; no network.
#[derive(Default)]
struct Counting {
    calls: AtomicUsize,
}

impl Authenticator for Counting {
    fn authenticate(&self) -> BoxFuture<'_, sfstream::Result<Token>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            // Give concurrent callers every chance to pile up behind this login.
            tokio::task::yield_now().await;
            let url = "https://example.my.salesforce.com".parse().unwrap();
            Ok(Token::bearer(format!("token-{n}"), url))
        })
    }
}

fn bearer(request: &Request) -> String {
    request.headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned()
}

// ---- each flow end to end ---------------------------------------------------------------------

#[tokio::test]
async fn password_flow_end_to_end() {
    within("password flow", async {
        let emu = emulator().await;
        let client = Client::builder(password_auth(&emu))
            .connect()
            .await
            .unwrap();
        subscribe_and_receive(&emu, &client).await;
        let log = emu.token_requests();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].grant_type, "password");
        assert_eq!(log[0].client_id.as_deref(), Some(CLIENT_ID));
        assert_eq!(log[0].username.as_deref(), Some(USERNAME));
        assert_eq!(log[0].outcome, Ok(()));
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn password_authenticator_returns_the_salesforce_token_fields() {
    within("token fields", async {
        let emu = emulator().await;
        let token = password_auth(&emu).authenticate().await.unwrap();
        assert!(token.access_token.expose().starts_with("00D"));
        assert_eq!(token.token_type, "Bearer");
        assert_eq!(
            token.instance_url.as_str(),
            format!("{}/", emu.instance_url())
        );
        assert!(token.id.as_deref().unwrap().contains("/id/00D"));
        assert!(token.issued_at.unwrap() > 1_600_000_000_000);
    })
    .await
}

#[tokio::test]
async fn refresh_token_flow_end_to_end_follows_rotation() {
    within("refresh flow", async {
        let emu = emulator_with(|b| b.rotate_refresh_tokens(true)).await;
        let first = emu.issue_refresh_token();
        let auth = RefreshTokenAuthenticator::new(CLIENT_ID, CLIENT_SECRET, first.as_str())
            .login_url(login_url(&emu));
        let client = Client::builder(auth.clone()).connect().await.unwrap();
        let mut sub = subscribe_and_receive(&emu, &client).await;
        // Salesforce rotated the refresh token: the clone sees the new one.
        let second = auth.current_refresh_token();
        assert_ne!(second.expose(), first);
        assert!(second.expose().starts_with("5Aep"));

        // The access token is revoked: the refresh must use the rotated token (the first one is
        // spent and would be refused).
        emu.wait_until(|s| s.held_connects == 1).await;
        emu.revoke_tokens();
        next_event_arrives(&emu, &mut sub).await;
        assert_eq!(grants(&emu), vec![ok("refresh_token"), ok("refresh_token")]);
        assert_ne!(auth.current_refresh_token(), second);
        client.close().await.unwrap();

        // A connected app that needs no consumer secret.
        let auth =
            RefreshTokenAuthenticator::without_client_secret(CLIENT_ID, emu.issue_refresh_token())
                .login_url(login_url(&emu));
        assert!(auth.authenticate().await.is_ok());
        // The convenience constructor builds the same flow (here at the emulator's URL).
        let builder = Client::builder(
            RefreshTokenAuthenticator::new(CLIENT_ID, CLIENT_SECRET, emu.issue_refresh_token())
                .login_url(login_url(&emu)),
        );
        let client = builder.connect().await.unwrap();
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn client_credentials_flow_end_to_end() {
    within("client credentials flow", async {
        let emu = emulator().await;
        let client = Client::client_credentials(login_url(&emu), CLIENT_ID, CLIENT_SECRET)
            .connect()
            .await
            .unwrap();
        subscribe_and_receive(&emu, &client).await;
        assert_eq!(grants(&emu), vec![ok("client_credentials")]);
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn client_credentials_refuses_the_shared_login_hosts() {
    within("client credentials at login.salesforce.com", async {
        for login in [LoginUrl::Production, LoginUrl::Sandbox] {
            let auth = ClientCredentialsAuthenticator::new(login.clone(), CLIENT_ID, CLIENT_SECRET);
            let e = auth.authenticate().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Client, "{e}");
            assert!(e.to_string().contains("My Domain"), "{e}");
            assert!(e.to_string().contains(&login.to_string()), "{e}");
            assert!(!format!("{e} {e:?}").contains(CLIENT_SECRET));
        }
    })
    .await
}

#[tokio::test]
async fn access_token_flow_end_to_end_and_it_cannot_refresh() {
    within("access token flow", async {
        let emu = emulator().await;
        let url: Url = emu.instance_url().parse().unwrap();
        let (client, mut sub) =
            streaming_and_held(&emu, quick(Client::access_token(emu.issue_token(), url))).await;
        emu.revoke_tokens();
        let e = sub.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert!(
            emu.token_requests().is_empty(),
            "a ready token never logs in"
        );
        client.close().await.unwrap();
    })
    .await
}

#[cfg(feature = "jwt")]
mod jwt {
    use super::*;
    use sfstream::auth::JwtBearerAuthenticator;

    const KEY: &str = include_str!("data/test-only-jwt-key.pem");
    const KEY_PKCS1: &str = include_str!("data/test-only-jwt-key.pkcs1.pem");
    const PUBLIC_KEY: &str = include_str!("data/test-only-jwt-key.pub.pem");
    const OTHER_KEY: &str = include_str!("data/test-only-other-key.pem");

    async fn jwt_emulator() -> Emulator {
        emulator_with(|b| b.jwt_public_key(PUBLIC_KEY)).await
    }

    fn jwt_auth(emu: &Emulator, key: &str) -> JwtBearerAuthenticator {
        JwtBearerAuthenticator::new(CLIENT_ID, USERNAME, key)
            .unwrap()
            .login_url(login_url(emu))
    }

    #[tokio::test]
    async fn jwt_bearer_flow_end_to_end() {
        within("jwt flow", async {
            let emu = jwt_emulator().await;
            let client = Client::builder(jwt_auth(&emu, KEY))
                .connect()
                .await
                .unwrap();
            let mut sub = subscribe_and_receive(&emu, &client).await;
            let log = emu.token_requests();
            assert_eq!(log.len(), 1);
            assert_eq!(
                log[0].grant_type,
                "urn:ietf:params:oauth:grant-type:jwt-bearer"
            );
            assert_eq!(log[0].client_id.as_deref(), Some(CLIENT_ID));
            assert_eq!(log[0].username.as_deref(), Some(USERNAME));
            // A rejected token: a new assertion is signed and the stream goes on.
            emu.wait_until(|s| s.held_connects == 1).await;
            emu.revoke_tokens();
            next_event_arrives(&emu, &mut sub).await;
            assert_eq!(emu.token_requests().len(), 2);
            client.close().await.unwrap();

            // PKCS#1 keys work too, and the convenience constructor takes the PEM.
            assert!(jwt_auth(&emu, KEY_PKCS1).authenticate().await.is_ok());
            let builder = Client::jwt_bearer(CLIENT_ID, USERNAME, KEY, true).unwrap();
            drop(builder);
        })
        .await
    }

    #[tokio::test]
    async fn jwt_assertions_are_checked_like_salesforce() {
        within("jwt errors", async {
            let emu = jwt_emulator().await;
            let refused = |auth: JwtBearerAuthenticator, code: &'static str, desc: &'static str| async move {
                let e = auth.authenticate().await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
                assert_eq!(e.status(), Some(400));
                let oauth = e.oauth_error().unwrap();
                assert_eq!(
                    (oauth.error.as_str(), oauth.error_description.as_deref()),
                    (code, Some(desc)),
                    "{e}"
                );
            };
            refused(jwt_auth(&emu, OTHER_KEY), "invalid_grant", "invalid assertion").await;
            refused(
                JwtBearerAuthenticator::new("someone-else", USERNAME, KEY)
                    .unwrap()
                    .login_url(login_url(&emu)),
                "invalid_client_id",
                "client identifier invalid",
            )
            .await;
            refused(
                JwtBearerAuthenticator::new(CLIENT_ID, "eve@example.com", KEY)
                    .unwrap()
                    .login_url(login_url(&emu)),
                "invalid_grant",
                "user hasn't approved this consumer",
            )
            .await;
            refused(
                jwt_auth(&emu, KEY).audience("https://evil.example.com"),
                "invalid_grant",
                "audience is invalid",
            )
            .await;
            refused(
                jwt_auth(&emu, KEY).assertion_lifetime(Duration::ZERO),
                "invalid_grant",
                "expired authorization code",
            )
            .await;
            refused(
                jwt_auth(&emu, KEY).assertion_lifetime(Duration::from_secs(3600)),
                "invalid_grant",
                "invalid assertion",
            )
            .await;
            // Salesforce's own login URLs are valid audiences too.
            let auth = jwt_auth(&emu, KEY).audience(LoginUrl::PRODUCTION_URL);
            assert!(auth.authenticate().await.is_ok());

            // Without a configured public key nothing verifies.
            let bare = emulator().await;
            refused(jwt_auth(&bare, KEY), "invalid_grant", "invalid assertion").await;

            // A key that cannot sign is refused up front, without quoting it.
            for bad in ["", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", PUBLIC_KEY] {
                let e = JwtBearerAuthenticator::new(CLIENT_ID, USERNAME, bad).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Client);
                assert!(!format!("{e} {e:?}").contains("AAAA"));
            }
            let e = JwtBearerAuthenticator::from_key_file(CLIENT_ID, USERNAME, "tests/data/missing.pem")
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Client);
            assert!(
                JwtBearerAuthenticator::from_key_file(CLIENT_ID, USERNAME, "tests/data/test-only-jwt-key.pem")
                    .is_ok()
            );
            // An emulator with an unusable public key does not start.
            let e = Emulator::builder().jwt_public_key("not a key").start().await.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        })
        .await
    }
}

// ---- token errors ----------------------------------------------------------------------------

#[tokio::test]
async fn wrong_credentials_are_authentication_errors_with_the_oauth_pair() {
    within("wrong credentials", async {
        let emu = emulator().await;
        let cases = [
            (
                PasswordAuthenticator::new(CLIENT_ID, CLIENT_SECRET, USERNAME, "wrong-pw-SECRET"),
                "invalid_grant",
                "authentication failure",
            ),
            (
                PasswordAuthenticator::new(CLIENT_ID, "wrong-cs-SECRET", USERNAME, PASSWORD),
                "invalid_client",
                "invalid client credentials",
            ),
            (
                PasswordAuthenticator::new("unknown-app", CLIENT_SECRET, USERNAME, PASSWORD),
                "invalid_client_id",
                "client identifier invalid",
            ),
        ];
        for (auth, code, desc) in cases {
            let client = Client::builder(auth.login_url(login_url(&emu)));
            let e = client.connect().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
            assert_eq!(e.status(), Some(400));
            let oauth = e.oauth_error().unwrap();
            assert_eq!(oauth.error, code);
            assert_eq!(oauth.error_description.as_deref(), Some(desc));
            let text = format!("{e} {e:?}");
            assert!(text.contains(code) && text.contains(desc), "{text}");
            for secret in [
                PASSWORD,
                CLIENT_SECRET,
                "wrong-pw-SECRET",
                "wrong-cs-SECRET",
            ] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        let spent = RefreshTokenAuthenticator::new(CLIENT_ID, CLIENT_SECRET, "5Aep-unknown-SECRET")
            .login_url(login_url(&emu));
        let e = spent.authenticate().await.unwrap_err();
        assert_eq!(
            e.oauth_error().unwrap().error_description.as_deref(),
            Some("expired access/refresh token")
        );
        assert!(!format!("{e} {e:?}").contains("5Aep-unknown-SECRET"));
        // No session was ever created.
        assert_eq!(emu.stats().handshakes, 0);
    })
    .await
}

#[tokio::test]
async fn a_token_reply_that_is_not_json_carries_the_http_status() {
    within("non-JSON token reply", async {
        let emu = emulator().await;
        emu.inject(Fault::on(Target::Token).html());
        let e = password_auth(&emu).authenticate().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert_eq!(e.status(), Some(200));
        assert!(e.oauth_error().is_none());
        assert!(e.to_string().contains("text/html"), "{e}");
        assert!(!e.to_string().contains("<html"), "{e}");

        emu.inject(Fault::on(Target::Token).status(503, "Service Unavailable"));
        let e = password_auth(&emu).authenticate().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert_eq!(e.status(), Some(503));
        assert!(e.to_string().contains("503"), "{e}");

        // A reply with a field of the wrong type is refused without quoting it.
        emu.inject(Fault::on(Target::Token).wrong_types());
        let e = password_auth(&emu).authenticate().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert!(!format!("{e:?}").contains("00D"), "{e:?}");

        // The next request is fine again.
        assert!(password_auth(&emu).authenticate().await.is_ok());
    })
    .await
}

#[tokio::test]
async fn network_failures_are_transport_errors() {
    within("network failure", async {
        // A port nobody listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url: Url = format!("http://127.0.0.1:{port}").parse().unwrap();
        let auth =
            PasswordAuthenticator::new(CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD).login_url(url);
        let e = auth.authenticate().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        assert!(!format!("{e} {e:?}").contains(PASSWORD));

        // A token endpoint that never answers: a timeout.
        let emu = emulator().await;
        emu.inject(Fault::on(Target::Token).hang());
        let e = password_auth(&emu)
            .timeout(Duration::from_millis(200))
            .authenticate()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TransportTimeout, "{e}");

        // Plain http is refused for anything but loopback, before any request.
        let e = PasswordAuthenticator::new(CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD)
            .login_url("http://login.example.com".parse::<Url>().unwrap())
            .authenticate()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Client, "{e}");
    })
    .await
}

// ---- re-authentication -----------------------------------------------------------------------

#[tokio::test]
async fn a_token_revoked_mid_stream_is_refreshed_once_and_the_stream_goes_on() {
    within("revoked token", async {
        let emu = emulator().await;
        let (client, mut sub) =
            streaming_and_held(&emu, Client::builder(password_auth(&emu))).await;
        emu.revoke_tokens();
        // The held connect is answered `401::Authentication invalid`; the auth layer logs in
        // again and retries the connect on the same session (the emulator keeps sessions for a
        // new token of the same user).
        next_event_arrives(&emu, &mut sub).await;
        assert_eq!(grants(&emu), vec![ok("password"), ok("password")]);
        let stats = emu.stats();
        assert_eq!(stats.handshakes, 1, "{stats:?}");
        assert_eq!(stats.auth_failures, 1, "{stats:?}");
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_revoked_session_means_one_refresh_a_rehandshake_and_a_resubscribe() {
    within("revoked session", async {
        let emu = emulator().await;
        let (client, mut sub) =
            streaming_and_held(&emu, Client::builder(password_auth(&emu))).await;
        emu.revoke_sessions();
        // 401 on the held connect -> one login -> the retried connect meets `403::Unknown
        // client` -> handshake with the new token -> resubscribe.
        emu.wait_until(|s| {
            s.handshakes == 2 && s.subscriptions.get(CHANNEL) == Some(&1) && s.held_connects == 1
        })
        .await;
        next_event_arrives(&emu, &mut sub).await;
        assert_eq!(grants(&emu), vec![ok("password"), ok("password")]);
        let stats = emu.stats();
        assert_eq!(stats.subscribes, 2, "{stats:?}");
        assert_eq!(stats.unknown_client_replies, 1, "{stats:?}");
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn unknown_client_rehandshakes_with_the_same_token_and_never_logs_in() {
    within("unknown client", async {
        let emu = emulator().await;
        let (auth, tokens) = Recording::new(password_auth(&emu));
        let client = Client::builder(auth).connect().await.unwrap();
        let mut sub = subscribe_and_receive(&emu, &client).await;
        for round in 2..=3 {
            emu.wait_until(|s| s.held_connects == 1).await;
            emu.forget_sessions();
            emu.wait_until(|s| s.handshakes == round && s.subscriptions.get(CHANNEL) == Some(&1))
                .await;
            next_event_arrives(&emu, &mut sub).await;
        }
        // EMP-Connector #95: logging in again on every 403 locks users out. Here: none.
        assert_eq!(grants(&emu), vec![ok("password")]);
        assert_eq!(tokens.lock().unwrap().len(), 1);
        assert_eq!(emu.stats().unknown_client_replies, 2);
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_failed_refresh_is_reported_without_secrets_and_the_client_recovers() {
    within("failed refresh", async {
        let emu = emulator().await;
        let (client, mut sub) =
            streaming_and_held(&emu, quick(Client::builder(password_auth(&emu)))).await;
        emu.inject(Fault::on(Target::Token).status(
            400,
            r#"{"error":"invalid_grant","error_description":"authentication failure"}"#,
        ));
        emu.revoke_tokens();
        let e = sub.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert_eq!(e.status(), Some(400));
        assert_eq!(e.oauth_error().unwrap().error, "invalid_grant");
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains(PASSWORD) && !text.contains(CLIENT_SECRET),
            "{text}"
        );
        // The next attempt logs in (the fault was one-shot), handshakes and resubscribes. (The
        // old session may linger in the emulator until its reconnect window passes.)
        emu.wait_until(|s| s.handshakes == 2 && s.subscribes == 2)
            .await;
        next_event_arrives(&emu, &mut sub).await;
        let log = grants(&emu);
        assert_eq!(log.first(), Some(&ok("password")));
        assert_eq!(log.last(), Some(&ok("password")));
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn handshake_denied_for_401_refreshes_once_and_retries_the_handshake() {
    within("handshake denied", async {
        let auth = Arc::new(Counting::default());
        let (transport, mut server) = mock();
        let client = Client::builder(auth.clone())
            .transport(transport)
            .build()
            .unwrap();
        let c = client.clone();
        let opening = tokio::spawn(async move { c.open().await });
        let h = server.next_on("/meta/handshake").await;
        assert_eq!(bearer(&h.request), "Bearer token-1");
        h.reply(json!([{
            "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}},
            "advice": {"reconnect": "none"}, "channel": "/meta/handshake", "id": "$id",
            "error": "403::Handshake denied", "successful": false,
        }]));
        let h = server.next_on("/meta/handshake").await;
        assert_eq!(bearer(&h.request), "Bearer token-2");
        h.ok();
        let c = server.next_on("/meta/connect").await;
        assert_eq!(bearer(&c.request), "Bearer token-2");
        c.ok();
        opening.await.unwrap().unwrap();
        assert_eq!(auth.calls.load(Ordering::SeqCst), 2);

        // `403::Unknown client` is not a token problem: a new handshake, same token.
        let c = server.next_on("/meta/connect").await;
        c.reply(json!([{
            "channel": "/meta/connect", "id": "$id", "successful": false,
            "error": "403::Unknown client", "advice": {"reconnect": "handshake", "interval": 0},
        }]));
        let h = server.next_on("/meta/handshake").await;
        assert_eq!(bearer(&h.request), "Bearer token-2");
        h.ok();
        server.next_on("/meta/connect").await.ok();
        assert_eq!(auth.calls.load(Ordering::SeqCst), 2);
        // Neither is the spec's `401:<clientId>:Unknown client`.
        let c = server.next_on("/meta/connect").await;
        c.reply(json!([{
            "channel": "/meta/connect", "id": "$id", "successful": false,
            "error": "401:cid-1:Unknown client", "advice": {"reconnect": "handshake"},
        }]));
        let h = server.next_on("/meta/handshake").await;
        assert_eq!(bearer(&h.request), "Bearer token-2");
        assert_eq!(auth.calls.load(Ordering::SeqCst), 2);
        drop(h);
        drop(client);
    })
    .await
}

#[tokio::test]
async fn concurrent_bayeux_401s_share_one_refresh() {
    within("concurrent Bayeux 401s", async {
        const N: usize = 8;
        let auth = Arc::new(Counting::default());
        let (transport, mut server) = mock();
        let layered = Arc::new(AuthLayer::new(auth.clone(), "66.0").layer(transport));
        let mut sends = Vec::new();
        for i in 0..N {
            let t = layered.clone();
            sends.push(tokio::spawn(async move {
                let mut m = Message::new("/meta/subscribe");
                m.id = Some(format!("s{i}"));
                m.subscription = Some(format!("/event/E{i}__e"));
                t.send(Request::new(vec![m], Duration::from_secs(5))).await
            }));
        }
        // Every request arrives with the first token before any is answered.
        let mut first = Vec::new();
        for _ in 0..N {
            let e = server.next_on("/meta/subscribe").await;
            assert_eq!(bearer(&e.request), "Bearer token-1");
            first.push(e);
        }
        for e in first {
            e.reply(json!([{
                "channel": "/meta/subscribe", "id": "$id", "successful": false,
                "error": "401::Authentication invalid", "advice": {"reconnect": "none"},
            }]));
        }
        for _ in 0..N {
            let e = server.next_on("/meta/subscribe").await;
            assert_eq!(bearer(&e.request), "Bearer token-2");
            e.ok();
        }
        for s in sends {
            let r = s.await.unwrap().unwrap();
            assert!(r.messages[0].is_successful());
        }
        assert_eq!(
            auth.calls.load(Ordering::SeqCst),
            2,
            "one login, one refresh"
        );
    })
    .await
}

/// Sends requests that carry the first token it sees without their `Authorization` header, so
/// the emulator answers them with HTTP 401; holds them until `n` have arrived (and the test has
/// had its say), so they are rejected together.
struct RejectFirstToken<T> {
    inner: T,
    first: Mutex<Option<HeaderValue>>,
    gates: [Arc<tokio::sync::Barrier>; 2],
}

impl<T: Transport> Transport for RejectFirstToken<T> {
    fn send(&self, mut request: Request) -> BoxFuture<'_, sfstream::Result<Response>> {
        Box::pin(async move {
            let token = request.headers.get("authorization").cloned();
            let stale = {
                let mut first = self.first.lock().unwrap();
                first.get_or_insert_with(|| token.clone().unwrap()).clone()
            };
            if token.as_ref() == Some(&stale) {
                for gate in &self.gates {
                    gate.wait().await;
                }
                request.headers.remove("authorization");
            }
            self.inner.send(request).await
        })
    }
}

async fn concurrent_http_401s(refresh_fails: bool) -> (Emulator, Vec<sfstream::Result<Response>>) {
    const N: usize = 6;
    let emu = emulator().await;
    let gates = [
        Arc::new(tokio::sync::Barrier::new(N + 1)),
        Arc::new(tokio::sync::Barrier::new(N + 1)),
    ];
    let http = HttpTransport::builder().build().unwrap();
    let gate = RejectFirstToken {
        inner: http,
        first: Mutex::new(None),
        gates: gates.clone(),
    };
    let layered = Arc::new(AuthLayer::new(password_auth(&emu), emu.api_version()).layer(gate));
    let mut sends = Vec::new();
    for i in 0..N {
        let t = layered.clone();
        sends.push(tokio::spawn(async move {
            let mut m = Message::new("/meta/handshake");
            m.id = Some(format!("h{i}"));
            m.version = Some("1.0".into());
            m.supported_connection_types = Some(vec!["long-polling".into()]);
            t.send(Request::new(vec![m], Duration::from_secs(5))).await
        }));
    }
    gates[0].wait().await;
    // All N hold the first token, logged in once.
    assert_eq!(emu.token_requests().len(), 1);
    if refresh_fails {
        emu.inject(Fault::on(Target::Token).status(
            400,
            r#"{"error":"invalid_grant","error_description":"authentication failure"}"#,
        ));
    }
    gates[1].wait().await;
    let mut results = Vec::new();
    for s in sends {
        results.push(s.await.unwrap());
    }
    (emu, results)
}

#[tokio::test]
async fn concurrent_http_401s_cause_one_login() {
    within("concurrent HTTP 401s", async {
        let (emu, results) = concurrent_http_401s(false).await;
        for r in results {
            let r = r.unwrap();
            assert!(r.messages[0].is_successful(), "{:?}", r.messages);
        }
        assert_eq!(grants(&emu), vec![ok("password"), ok("password")]);
        let stats = emu.stats();
        // Six handshakes rejected with HTTP 401, six retried with the new token.
        assert_eq!((stats.handshakes, stats.sessions), (12, 6), "{stats:?}");
    })
    .await
}

#[tokio::test]
async fn concurrent_http_401s_share_a_failed_refresh() {
    within("concurrent HTTP 401s, refresh fails", async {
        let (emu, results) = concurrent_http_401s(true).await;
        for r in results {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
            assert_eq!(e.oauth_error().unwrap().error, "invalid_grant");
        }
        // One login and one refresh (answered by the one-shot fault, so not logged as processed):
        // a second refresh would have reached the endpoint and been logged.
        assert_eq!(grants(&emu), vec![ok("password")]);
        let stats = emu.stats();
        assert_eq!(stats.faults_triggered, 1, "{stats:?}");
        assert_eq!(stats.sessions, 0, "{stats:?}");
    })
    .await
}

// ---- secrets -----------------------------------------------------------------------------------

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows the secret {s:?}: {text}");
    }
}

#[tokio::test]
async fn no_secret_in_debug_display_or_errors() {
    within("secrets in Debug", async {
        const ACCESS: &str = "00Dxx!AR-access-SECRET";
        const REFRESH: &str = "5Aep-refresh-SECRET";
        let secrets = [PASSWORD, CLIENT_SECRET, ACCESS, REFRESH, "pw-url-SECRET"];
        let url: Url = "https://acme.my.salesforce.com".parse().unwrap();
        let mut shown: Vec<(String, String)> = Vec::new();
        let mut show = |what: &str, debug: String| shown.push((what.to_owned(), debug));

        let secret = Secret::new(PASSWORD);
        show("Secret", format!("{secret:?} {secret}"));
        let token = Token::bearer(ACCESS, url.clone());
        show("Token", format!("{token:?}"));
        show(
            "AccessToken",
            format!("{:?}", AccessToken::new(ACCESS, url.clone())),
        );
        show(
            "PasswordAuthenticator",
            format!(
                "{:?}",
                PasswordAuthenticator::new(CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD).sandbox()
            ),
        );
        show(
            "RefreshTokenAuthenticator",
            format!(
                "{:?}",
                RefreshTokenAuthenticator::new(CLIENT_ID, CLIENT_SECRET, REFRESH)
            ),
        );
        show(
            "ClientCredentialsAuthenticator",
            format!(
                "{:?}",
                ClientCredentialsAuthenticator::new(url.clone(), CLIENT_ID, CLIENT_SECRET)
            ),
        );
        let with_user = LoginUrl::parse("https://me:pw-url-SECRET@acme.my.salesforce.com").unwrap();
        show("LoginUrl", format!("{with_user:?} {with_user}"));
        let builders = [
            Client::password(CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD, true),
            Client::refresh_token(CLIENT_ID, CLIENT_SECRET, REFRESH, false),
            Client::client_credentials(url.clone(), CLIENT_ID, CLIENT_SECRET),
            Client::access_token(ACCESS, url.clone()),
        ];
        for b in builders {
            show("ClientBuilder", format!("{b:?}"));
            let client = b.build().unwrap();
            show("Client", format!("{client:?}"));
        }
        let layer = AuthLayer::new(AccessToken::new(ACCESS, url.clone()), "66.0");
        show("AuthLayer", format!("{layer:?}"));
        let http = HttpTransport::builder().build().unwrap();
        show("Auth", format!("{:?}", layer.layer(http)));
        show(
            "EmulatorBuilder",
            format!(
                "{:?}",
                Emulator::builder()
                    .user(USERNAME, PASSWORD)
                    .client_credentials(CLIENT_ID, CLIENT_SECRET)
            ),
        );
        #[cfg(feature = "jwt")]
        {
            let key = include_str!("data/test-only-jwt-key.pem");
            let auth =
                sfstream::auth::JwtBearerAuthenticator::new(CLIENT_ID, USERNAME, key).unwrap();
            let text = format!("{auth:?}");
            // No line of the key's base64 body.
            for line in key.lines().filter(|l| !l.starts_with("-----")) {
                assert!(
                    !text.contains(line),
                    "JwtBearerAuthenticator shows its key: {text}"
                );
            }
            show("JwtBearerAuthenticator", text);
        }

        // Errors from every failure path of a login.
        let emu = emulator().await;
        let errors: Vec<Error> = vec![
            PasswordAuthenticator::new(CLIENT_ID, CLIENT_SECRET, USERNAME, "pw-wrong-SECRET")
                .login_url(login_url(&emu))
                .authenticate()
                .await
                .unwrap_err(),
            RefreshTokenAuthenticator::new(CLIENT_ID, CLIENT_SECRET, REFRESH)
                .login_url(login_url(&emu))
                .authenticate()
                .await
                .unwrap_err(),
            ClientCredentialsAuthenticator::new(LoginUrl::Production, CLIENT_ID, CLIENT_SECRET)
                .authenticate()
                .await
                .unwrap_err(),
            Client::access_token(ACCESS, emu.instance_url().parse().unwrap())
                .connect()
                .await
                .unwrap_err(),
        ];
        for e in &errors {
            show("Error", format!("{e:?} {e}"));
        }
        for (what, text) in &shown {
            assert_no_secret(what, text, &secrets);
            assert_no_secret(what, text, &["pw-wrong-SECRET"]);
        }
    })
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn no_secret_in_log_lines() {
    // Current-thread runtime: the client, its connection task and the emulator all log on this
    // thread, into this subscriber.
    let (captured, _guard) = Captured::this_thread(tracing::Level::TRACE);
    let issued = within("logging", async {
        let emu = emulator_with(|b| b.rotate_refresh_tokens(true)).await;
        let refresh = emu.issue_refresh_token();
        let (auth, tokens) = Recording::new(
            RefreshTokenAuthenticator::new(CLIENT_ID, CLIENT_SECRET, refresh.as_str())
                .login_url(login_url(&emu)),
        );
        let (client, mut sub) = streaming_and_held(&emu, Client::builder(auth)).await;
        emu.revoke_tokens();
        next_event_arrives(&emu, &mut sub).await;
        client.close().await.unwrap();

        let (auth, more) = Recording::new(password_auth(&emu));
        let client = Client::builder(auth).connect().await.unwrap();
        client.close().await.unwrap();
        let _ = PasswordAuthenticator::new(CLIENT_ID, CLIENT_SECRET, USERNAME, "pw-wrong-SECRET")
            .login_url(login_url(&emu))
            .authenticate()
            .await
            .unwrap_err();
        let mut issued = tokens.lock().unwrap().clone();
        issued.extend(more.lock().unwrap().iter().cloned());
        issued.push(refresh);
        issued
    })
    .await;
    let log = captured.text();
    assert!(log.contains("logged in"), "the capture works: {log}");
    assert!(issued.len() >= 4);
    let mut secrets: Vec<&str> = vec![PASSWORD, CLIENT_SECRET, "pw-wrong-SECRET"];
    secrets.extend(issued.iter().map(String::as_str));
    assert_no_secret("the log", &log, &secrets);
    // The rotated refresh tokens look like `5Aep...`; none may show either.
    assert!(!log.contains("5Aep"), "{log}");
}

/// A custom authenticator handing out a fixed token.
struct Fixed(Token);

impl Authenticator for Fixed {
    fn authenticate(&self) -> BoxFuture<'_, sfstream::Result<Token>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

fn with_password(url: &str) -> Url {
    let mut url: Url = url.parse().unwrap();
    url.set_username("me").unwrap();
    url.set_password(Some("pw-url-SECRET")).unwrap();
    url
}

#[tokio::test(flavor = "current_thread")]
async fn url_passwords_never_show_in_debug_display_errors_or_logs() {
    let (captured, _guard) = Captured::this_thread(tracing::Level::TRACE);
    let shown = within("URL passwords", async {
        const ACCESS: &str = "00Dxx!AR-access-SECRET";
        let emu = emulator().await;
        let login = with_password(&emu.login_url());
        let instance = with_password(&emu.instance_url());
        let mut shown: Vec<(String, String)> = Vec::new();
        let mut show = |what: &str, text: String| shown.push((what.to_owned(), text));

        let direct = LoginUrl::MyDomain(login.clone());
        show(
            "LoginUrl::MyDomain",
            format!(
                "{direct:?} {direct} {} {}",
                direct.url(),
                direct.token_url()
            ),
        );
        let token = Token::bearer(ACCESS, instance.clone());
        show("Token::bearer", format!("{token:?} {}", token.instance_url));
        let mut set_directly = Token::bearer(ACCESS, emu.instance_url().parse().unwrap());
        set_directly.instance_url = instance.clone();
        show("Token with the field set", format!("{set_directly:?}"));
        show(
            "AccessToken",
            format!("{:?}", AccessToken::new(ACCESS, instance.clone())),
        );
        let auth = PasswordAuthenticator::new(CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD)
            .login_url(direct.clone());
        show("PasswordAuthenticator", format!("{auth:?}"));
        show(
            "ClientCredentialsAuthenticator",
            format!(
                "{:?}",
                ClientCredentialsAuthenticator::new(direct.clone(), CLIENT_ID, CLIENT_SECRET)
            ),
        );
        let endpoint = with_password(&format!("{}/cometd/66.0", emu.instance_url()));
        let builder = HttpTransport::builder().endpoint(endpoint.clone());
        show("HttpTransportBuilder", format!("{builder:?}"));
        let e = builder.build().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Client, "{e}");
        show("HttpTransport::build error", format!("{e:?} {e}"));
        for bad in [
            "me:pw-url-SECRET@acme.my.salesforce.com",
            "https://me:pw-url-SECRET@acme.my.salesforce.com:99999",
        ] {
            let e = LoginUrl::parse(bad).unwrap_err();
            show("LoginUrl::parse error", format!("{e:?} {e}"));
        }

        // A login at a My Domain URL built with a password works (the password is never sent)
        // and logs the URL without it; so does a ready token for such an instance URL.
        let client = Client::builder(auth).connect().await.unwrap();
        client.close().await.unwrap();
        let client = Client::access_token(emu.issue_token(), instance.clone())
            .connect()
            .await
            .unwrap();
        client.close().await.unwrap();

        // `request to {url} failed`: a login URL where nobody listens.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = PasswordAuthenticator::new(CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD)
            .login_url(LoginUrl::MyDomain(with_password(&format!(
                "http://127.0.0.1:{port}"
            ))))
            .authenticate()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        show("connection refused", format!("{e:?} {e}"));

        // A custom authenticator's token naming an unusable instance URL with a password.
        let mut bad = Token::bearer(ACCESS, emu.instance_url().parse().unwrap());
        bad.instance_url = with_password("http://sfstream-test.invalid/");
        let layered =
            AuthLayer::new(Fixed(bad), "66.0").layer(HttpTransport::builder().build().unwrap());
        let e = layered
            .send(Request::new(
                vec![Message::new("/meta/handshake")],
                Duration::from_secs(5),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Client, "{e}");
        show("unusable instance URL", format!("{e:?} {e}"));

        // A request naming an endpoint with a password is refused before it leaves.
        let mut request = Request::new(
            vec![Message::new("/meta/handshake")],
            Duration::from_secs(5),
        );
        request.url = Some(endpoint);
        show("Request", format!("{request:?}"));
        let e = HttpTransport::builder()
            .build()
            .unwrap()
            .send(request)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Client, "{e}");
        show("request URL with a password", format!("{e:?} {e}"));
        shown
    })
    .await;
    let log = captured.text();
    assert!(log.contains("logged in"), "the capture works: {log}");
    assert_no_secret("the log", &log, &["pw-url-SECRET", "//me"]);
    for (what, text) in &shown {
        assert_no_secret(what, text, &["pw-url-SECRET", "//me"]);
    }
}

#[tokio::test]
async fn a_redirect_from_the_token_endpoint_is_not_followed() {
    within("redirect", async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Where the redirect points: it must never see a connection (it would get the form with
        // the password).
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_port = target.local_addr().unwrap().port();
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        let answer = tokio::spawn(async move {
            let (mut socket, _) = server.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            // The whole form has arrived once the password is in it.
            while !String::from_utf8_lossy(&request).contains("password=") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before sending its form");
                request.extend_from_slice(&buf[..n]);
            }
            let reply = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{target_port}/services/oauth2/token\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            socket.write_all(reply.as_bytes()).await.unwrap();
        });
        let e = PasswordAuthenticator::new(CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD)
            .login_url(format!("http://127.0.0.1:{port}").parse::<Url>().unwrap())
            .authenticate()
            .await
            .unwrap_err();
        answer.await.unwrap();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert_eq!(e.status(), Some(307), "{e}");
        // Nothing connected to the redirect's target.
        let accepted =
            tokio::time::timeout(Duration::from_millis(0), target.accept()).await;
        assert!(accepted.is_err(), "the redirect was followed");
    })
    .await
}

#[tokio::test]
async fn a_reply_without_channel_or_id_reaches_the_auth_layer_and_its_request() {
    within("unaddressed 401", async {
        let emu = emulator().await;
        // restforce#103: a request refused before Bayeux processing.
        let refused =
            json!([{"error": "401::Request requires authentication", "successful": false}]);
        emu.inject(Fault::on(Target::Handshake).body(refused.clone()));
        let client = Client::builder(password_auth(&emu)).connect().await;
        let client = client.unwrap();
        assert_eq!(grants(&emu), vec![ok("password"), ok("password")]);
        emu.inject(Fault::on(Target::Subscribe).body(refused.clone()));
        let mut sub = subscribe_and_receive(&emu, &client).await;
        assert_eq!(grants(&emu).len(), 3, "{:?}", grants(&emu));
        emu.inject(Fault::on(Target::Connect).body(refused.clone()));
        next_event_arrives(&emu, &mut sub).await;
        next_event_arrives(&emu, &mut sub).await;
        assert_eq!(grants(&emu).len(), 4, "{:?}", grants(&emu));
        client.close().await.unwrap();

        // A ready token cannot be refreshed: the request fails as an authentication failure.
        let url: Url = emu.instance_url().parse().unwrap();
        let client = Client::access_token(emu.issue_token(), url)
            .connect()
            .await
            .unwrap();
        emu.inject(Fault::on(Target::Subscribe).body(refused));
        let e = client.subscribe(CHANNEL).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        client.close().await.unwrap();
    })
    .await
}

/// Logs in with `token-1`; a refresh signals that it started, waits for the test to open the
/// gate, then hands out `refreshed` (as a server rotating the refresh token would answer).
#[derive(Default)]
struct Gated {
    logins: AtomicUsize,
    refreshes_started: AtomicUsize,
    refreshes_finished: AtomicUsize,
    started: tokio::sync::Notify,
    gate: tokio::sync::Notify,
}

impl Authenticator for Gated {
    fn authenticate(&self) -> BoxFuture<'_, sfstream::Result<Token>> {
        let n = self.logins.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            let url = "https://example.my.salesforce.com".parse().unwrap();
            Ok(Token::bearer(format!("token-{n}"), url))
        })
    }

    fn refresh<'a>(&'a self, _rejected: &'a Token) -> BoxFuture<'a, sfstream::Result<Token>> {
        Box::pin(async move {
            self.refreshes_started.fetch_add(1, Ordering::SeqCst);
            self.started.notify_one();
            self.gate.notified().await;
            self.refreshes_finished.fetch_add(1, Ordering::SeqCst);
            let url = "https://example.my.salesforce.com".parse().unwrap();
            Ok(Token::bearer("refreshed", url))
        })
    }
}

#[tokio::test]
async fn a_refresh_runs_to_completion_when_its_request_is_cancelled() {
    within("cancelled refresh", async {
        let auth = Arc::new(Gated::default());
        let (transport, mut server) = mock();
        let layered = Arc::new(AuthLayer::new(auth.clone(), "66.0").layer(transport));
        let request = || {
            let mut m = Message::new("/meta/subscribe");
            m.id = Some("1".into());
            Request::new(vec![m], Duration::from_secs(5))
        };
        let t = layered.clone();
        let r = request();
        let first = tokio::spawn(async move { t.send(r).await });
        let s = server.next_on("/meta/subscribe").await;
        assert_eq!(bearer(&s.request), "Bearer token-1");
        s.reply(
            json!([{"channel": "/meta/subscribe", "id": "$id", "successful": false,
            "error": "401::Authentication invalid"}]),
        );
        // The refresh is under way; whoever waited for it stops waiting (a request timeout, a
        // rehandshake dropping the request).
        auth.started.notified().await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        auth.gate.notify_one();
        // The next request uses what that refresh returned: nothing logs in again.
        let t = layered.clone();
        let second = tokio::spawn(async move { t.send(request()).await });
        let s = server.next_on("/meta/subscribe").await;
        assert_eq!(bearer(&s.request), "Bearer refreshed");
        s.ok();
        assert!(second.await.unwrap().unwrap().messages[0].is_successful());
        assert_eq!(auth.refreshes_started.load(Ordering::SeqCst), 1);
        assert_eq!(auth.refreshes_finished.load(Ordering::SeqCst), 1);
        assert_eq!(auth.logins.load(Ordering::SeqCst), 1);
    })
    .await
}

#[tokio::test]
async fn a_refused_ready_token_stops_the_client_instead_of_retrying_forever() {
    within("refused ready token", async {
        let emu = emulator().await;
        let url: Url = emu.instance_url().parse().unwrap();
        let (client, mut sub) =
            streaming_and_held(&emu, quick(Client::access_token(emu.issue_token(), url))).await;
        // The held connect gets `401::Authentication invalid`, the rehandshake
        // `403::Handshake denied` with advice `none`: the token cannot be refreshed.
        emu.revoke_tokens();
        let mut last = None;
        while let Some(item) = sub.next().await {
            last = Some(item.unwrap_err());
        }
        let e = last.expect("the stream says why it ended");
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert!(e.to_string().contains("refused the access token"), "{e}");
        assert!(e.to_string().contains("cannot be refreshed"), "{e}");
        assert!(client.closed());
        assert!(emu.token_requests().is_empty());
    })
    .await
}
