//! `tail`: stream Salesforce events as JSON lines, one per event, ready for `jq`.
//!
//! ```text
//! cargo run --example tail -- [--count N] [--replay all|new|ID] [--replay-fallback all|new]
//!                             [--replay-file PATH] [CHANNEL ...]
//! ```
//!
//! With no credentials in the environment it starts the built-in emulator, publishes sample
//! events on a timer and streams them (no Salesforce account needed). With credentials it
//! streams from that org instead, logging in with the OAuth flow the set variables select
//! (`SF_CLIENT_ID`, `SF_CLIENT_SECRET`, `SF_USERNAME` + `SF_PASSWORD`, `SF_REFRESH_TOKEN`,
//! `SF_USERNAME` + `SF_PRIVATE_KEY_FILE`, or `SF_INSTANCE_URL` + `SF_ACCESS_TOKEN`; `SF_LOGIN_URL`
//! or `SF_SANDBOX=1` for the login URL): see the README's Authentication table. `SF_API_VERSION`
//! overrides the API version. `--count N` exits after N events. Ctrl-C closes cleanly (a
//! `/meta/disconnect` is sent). Errors print one line to stderr and exit non-zero.
//! `SF_LOG=debug` logs to stderr. `HTTPS_PROXY` (`https_proxy`), `HTTP_PROXY`, `ALL_PROXY` and
//! `NO_PROXY` select a proxy as they do for curl.
//!
//! Replay: `--replay all|new|ID` says where to start (all retained events, new ones, or after
//! replay id ID), `--replay-file PATH` keeps a replay marker per channel in a file, so the next
//! run resumes right after the last event this one printed (with `--count N`, consecutive runs
//! print consecutive events, no gap, no repeat), and `--replay-fallback all|new` says what to do
//! when the stored id has expired (a warning naming the expired id goes to stderr). With the
//! built-in emulator, `--replay-file PATH` also keeps the emulator's events in
//! `PATH.emulator.jsonl`, so each run's fresh emulator continues the last one's replay ids and
//! the promise holds there too. For a server that outlives `tail` (to restart your own
//! consumer against it), run `cargo run --example emulator`.

use futures::{FutureExt, StreamExt};
use sfstream::auth::{
    AccessToken, ClientCredentialsAuthenticator, LoginUrl, PasswordAuthenticator,
    RefreshTokenAuthenticator,
};
use sfstream::emulator::Emulator;
use sfstream::replay::{CommitPolicy, FileStorage, ReplayOption};
use sfstream::transport::Proxy;
use sfstream::{Client, ClientBuilder};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

const SAMPLE_CHANNELS: [&str; 4] = [
    "/event/Order_Placed__e",
    "/data/AccountChangeEvent",
    "/topic/InvoiceStatementUpdates",
    "/u/Notifications",
];

struct Args {
    count: Option<u64>,
    channels: Vec<String>,
    replay: Option<Start>,
    replay_fallback: Option<ReplayOption>,
    replay_file: Option<String>,
}

/// Where `--replay` starts.
enum Start {
    Option(ReplayOption),
    After(i64),
}

fn replay_option(flag: &str, value: Option<String>) -> Result<ReplayOption, String> {
    match value.as_deref() {
        Some("all") => Ok(ReplayOption::AllEvents),
        Some("new") => Ok(ReplayOption::NewEvents),
        other => Err(format!("{flag} takes all or new, not {other:?}")),
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        count: None,
        channels: Vec::new(),
        replay: None,
        replay_fallback: None,
        replay_file: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--replay" => {
                let value = args.next();
                parsed.replay = Some(match value.as_deref().map(str::parse::<i64>) {
                    Some(Ok(id)) => Start::After(id),
                    _ => Start::Option(replay_option("--replay", value)?),
                });
            }
            "--replay-fallback" => {
                parsed.replay_fallback = Some(replay_option("--replay-fallback", args.next())?);
            }
            "--replay-file" => {
                parsed.replay_file = Some(args.next().ok_or("--replay-file needs a path")?);
            }
            "--count" | "-n" => {
                let n = args.next().ok_or("--count needs a number")?;
                parsed.count = Some(
                    n.parse()
                        .map_err(|_| format!("--count: not a number: {n}"))?,
                );
            }
            "--help" | "-h" => {
                return Err(
                    "usage: tail [--count N] [--replay all|new|ID] [--replay-fallback all|new] \
                     [--replay-file PATH] CHANNEL...   (no credentials: emulator; \
                     HTTPS_PROXY, HTTP_PROXY, NO_PROXY honoured)"
                        .into(),
                );
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            channel => parsed.channels.push(channel.to_owned()),
        }
    }
    Ok(parsed)
}

/// Where to stream from: a real org when credentials are set, else the emulator.
async fn source(args: &mut Args) -> Result<(ClientBuilder, Option<Emulator>), String> {
    let version = env("SF_API_VERSION");
    if let Some((mut builder, flow)) = org_credentials()? {
        if args.channels.is_empty() {
            return Err("name at least one channel, e.g. /event/Order_Placed__e".into());
        }
        eprintln!("tail: logging in with {flow}");
        if let Some(v) = version {
            builder = builder.api_version(v);
        }
        return Ok((builder, None));
    }
    let mut emulator = Emulator::builder();
    if let Some(v) = &version {
        emulator = emulator.api_version(v);
    }
    // With a replay file the built-in emulator keeps its events next to it, so the next run's
    // emulator still knows the stored replay id and consecutive runs print consecutive events.
    if let Some(file) = &args.replay_file {
        emulator = emulator.retention_file(format!("{file}.emulator.jsonl"));
    }
    let emulator = emulator
        .start()
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    eprintln!(
        "tail: no Salesforce credentials set; streaming sample events from the built-in emulator at {}",
        emulator.instance_url()
    );
    if args.channels.is_empty() {
        args.channels = SAMPLE_CHANNELS.iter().map(|c| c.to_string()).collect();
    }
    // The emulator's token endpoint, through the same password flow a real org would use.
    let builder = emulator.client_builder();
    Ok((builder, Some(emulator)))
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `SF_LOGIN_URL` if set, else `https://test.salesforce.com` if `SF_SANDBOX` is `1`/`true`, else
/// `https://login.salesforce.com`.
fn login_url() -> Result<LoginUrl, String> {
    if let Some(url) = env("SF_LOGIN_URL") {
        return url.parse().map_err(|e| format!("SF_LOGIN_URL: {e}"));
    }
    let sandbox = env("SF_SANDBOX").is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
    Ok(LoginUrl::for_sandbox(sandbox))
}

/// The client for a real org, by which variables are set (the README's table), and a
/// description of the flow; `None` when no credential is set at all.
fn org_credentials() -> Result<Option<(ClientBuilder, String)>, String> {
    let instance_url = env("SF_INSTANCE_URL");
    let access_token = env("SF_ACCESS_TOKEN");
    match (instance_url, access_token) {
        (Some(url), Some(token)) => {
            let url = url.parse().map_err(|e| format!("SF_INSTANCE_URL: {e}"))?;
            let builder = Client::builder(AccessToken::new(token, url));
            return Ok(Some((builder, "a ready access token".into())));
        }
        (Some(_), None) => return Err("SF_INSTANCE_URL is set: set SF_ACCESS_TOKEN too".into()),
        (None, Some(_)) => return Err("SF_ACCESS_TOKEN is set: set SF_INSTANCE_URL too".into()),
        (None, None) => {}
    }
    let username = env("SF_USERNAME");
    let password = env("SF_PASSWORD");
    let refresh_token = env("SF_REFRESH_TOKEN");
    let key_file = env("SF_PRIVATE_KEY_FILE");
    let secret = env("SF_CLIENT_SECRET");
    let Some(client_id) = env("SF_CLIENT_ID") else {
        let any = [&username, &password, &refresh_token, &key_file, &secret]
            .iter()
            .any(|v| v.is_some());
        return if any {
            Err("set SF_CLIENT_ID, the connected app's consumer key".into())
        } else {
            Ok(None)
        };
    };
    let login = login_url()?;
    let need_secret = |flow: &str| {
        secret
            .clone()
            .ok_or_else(|| format!("the {flow} flow needs SF_CLIENT_SECRET"))
    };
    let (builder, flow) = match (username, password, refresh_token, key_file) {
        (Some(user), Some(password), None, None) => {
            let auth =
                PasswordAuthenticator::new(client_id, need_secret("password")?, user, password)
                    .login_url(login.clone());
            (Client::builder(auth), "the username-password flow")
        }
        (None, None, Some(refresh), None) => {
            let auth = match secret {
                Some(secret) => RefreshTokenAuthenticator::new(client_id, secret, refresh),
                None => RefreshTokenAuthenticator::without_client_secret(client_id, refresh),
            }
            .login_url(login.clone());
            (Client::builder(auth), "the refresh token flow")
        }
        (Some(user), None, None, Some(key_file)) => (
            jwt(client_id, user, &key_file, &login)?,
            "the JWT bearer flow",
        ),
        (None, None, None, None) => {
            if !login.is_my_domain() {
                return Err(
                    "the client credentials flow (SF_CLIENT_ID + SF_CLIENT_SECRET alone) needs \
                     SF_LOGIN_URL set to your My Domain URL, e.g. https://acme.my.salesforce.com"
                        .into(),
                );
            }
            let auth = ClientCredentialsAuthenticator::new(
                login.clone(),
                client_id,
                need_secret("client credentials")?,
            );
            (Client::builder(auth), "the client credentials flow")
        }
        _ => {
            return Err(
                "with SF_CLIENT_ID set exactly one of: SF_USERNAME + SF_PASSWORD, \
                 SF_REFRESH_TOKEN, SF_USERNAME + SF_PRIVATE_KEY_FILE, or none of them \
                 (client credentials)"
                    .into(),
            );
        }
    };
    Ok(Some((builder, format!("{flow} at {login}"))))
}

#[cfg(feature = "jwt")]
fn jwt(
    client_id: String,
    user: String,
    key_file: &str,
    login: &LoginUrl,
) -> Result<ClientBuilder, String> {
    let auth = sfstream::auth::JwtBearerAuthenticator::from_key_file(client_id, user, key_file)
        .map_err(|e| format!("SF_PRIVATE_KEY_FILE: {e}"))?
        .login_url(login.clone());
    Ok(Client::builder(auth))
}

#[cfg(not(feature = "jwt"))]
fn jwt(_: String, _: String, _: &str, _: &LoginUrl) -> Result<ClientBuilder, String> {
    Err(
        "the JWT bearer flow needs the `jwt` feature: cargo run --features jwt --example tail"
            .into(),
    )
}

/// Publish a sample event on each channel in turn, forever.
async fn publish_samples(emulator: Emulator, channels: Vec<String>) {
    let mut n: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        n += 1;
        let channel = &channels[(n as usize - 1) % channels.len()];
        let fields = if channel.starts_with("/event/") {
            serde_json::json!({"Order_Number__c": format!("ORD-{n:05}"), "Amount__c": 10.0 * n as f64})
        } else if channel.starts_with("/data/") {
            serde_json::json!({"Phone": format!("(415) 555-{:04}", n % 10_000)})
        } else if channel.starts_with("/topic/") {
            serde_json::json!({"Name": format!("INV-{n:05}"), "Status__c": "Open"})
        } else {
            serde_json::json!(format!("sample message {n}"))
        };
        emulator.publish(channel, fields);
    }
}

async fn run() -> Result<(), String> {
    let mut args = parse_args()?;
    let (mut builder, emulator) = source(&mut args).await?;
    // HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY, as curl reads them; also for the token
    // requests. Unset means direct.
    builder = builder.proxy(Proxy::from_env());
    if let Some(Start::Option(option)) = args.replay {
        builder = builder.replay(option);
    }
    if let Some(fallback) = args.replay_fallback {
        builder = builder.replay_fallback(fallback);
    }
    if let Some(path) = &args.replay_file {
        let storage = FileStorage::open(path).map_err(report)?;
        // Output::flush acknowledges what reached stdout.
        builder = builder
            .replay_storage(storage)
            .commit_policy(CommitPolicy::Manual);
    }
    let client = builder.connect().await.map_err(report)?;
    let mut streams = Vec::new();
    for channel in &args.channels {
        let subscribed = match args.replay {
            Some(Start::After(id)) => client.subscribe_from(channel.as_str(), id).await,
            _ => client.subscribe(channel.as_str()).await,
        };
        streams.push(subscribed.map_err(report)?);
    }
    if let Some(emulator) = emulator {
        tokio::spawn(publish_samples(emulator, args.channels.clone()));
    }
    let mut events = futures::stream::select_all(streams);
    let mut out = Output::new();
    let mut printed = 0u64;
    // One listener for the whole run: a Ctrl-C while an event is printed is not missed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = loop {
        if args.count.is_some_and(|c| printed >= c) {
            break Ok(());
        }
        // Take what is ready without waiting; only when nothing is ready is the output flushed
        // (a backlog costs one write per buffer, not one per line).
        let next = match events.next().now_or_never() {
            Some(next) if (&mut ctrl_c).now_or_never().is_none() => next,
            Some(_) => break Ok(()),
            None => {
                if out.flush().is_err() {
                    break Ok(()); // stdout closed (`| head`): done
                }
                tokio::select! {
                    next = events.next() => next,
                    _ = &mut ctrl_c => break Ok(()),
                }
            }
        };
        match next {
            None => break Err("the stream ended".to_owned()),
            Some(Ok(event)) => {
                let line = serde_json::to_string(&event).map_err(|e| e.to_string())?;
                if out.print(line, event).is_err() {
                    break Ok(());
                }
                printed += 1;
            }
            // Worth knowing, not worth stopping for: the client recovers by itself.
            Some(Err(e)) if e.is_transient() => eprintln!("tail: warning: {}", report(e)),
            Some(Err(e)) => break Err(report(e)),
        }
    };
    // What was printed reaches stdout before its events count as processed.
    let _ = out.flush();
    drop(events);
    // Waits until the replay file holds the last printed event.
    let closed = client.close().await.map_err(report);
    result.and(closed)
}

/// Standard output: line by line on a terminal; buffered into large writes when piped or
/// redirected (a flush per line doubles the CPU per event).
///
/// An event is acknowledged only once its line is flushed (the client runs with
/// `CommitPolicy::Manual`), so a replay file never gets ahead of what actually reached stdout.
struct Output {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    terminal: bool,
    unflushed: Vec<sfstream::Event>,
}

impl Output {
    /// Flush at least every so many lines, so that a never-ending backlog still acknowledges
    /// (and stores) as it goes.
    const MAX_UNFLUSHED: usize = 1024;

    fn new() -> Self {
        let stdout = std::io::stdout();
        Output {
            terminal: stdout.is_terminal(),
            out: std::io::BufWriter::with_capacity(64 * 1024, stdout.lock()),
            unflushed: Vec::new(),
        }
    }

    fn print(&mut self, line: String, event: sfstream::Event) -> std::io::Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.unflushed.push(event);
        if self.terminal || self.unflushed.len() >= Self::MAX_UNFLUSHED {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        for event in self.unflushed.drain(..) {
            event.ack();
        }
        Ok(())
    }
}

/// The error and each of its causes, once (a cause is in the message or in `source()`, never
/// both).
fn report(e: sfstream::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::main]
async fn main() -> ExitCode {
    if let Ok(level) = std::env::var("SF_LOG") {
        let level = level.parse().unwrap_or(tracing::Level::INFO);
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(level)
            .init();
    }
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tail: error: {e}");
            ExitCode::FAILURE
        }
    }
}
