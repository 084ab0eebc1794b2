//! `tail`: stream Salesforce events as JSON lines, one per event, ready for `jq`.
//!
//! ```text
//! cargo run --example tail -- [--count N] [CHANNEL ...]
//! ```
//!
//! With no credentials in the environment it starts the built-in emulator, publishes sample
//! events on a timer and streams them (no Salesforce account needed). With `SF_INSTANCE_URL` and
//! `SF_ACCESS_TOKEN` set it streams from that org instead (`SF_API_VERSION` overrides the API
//! version). `--count N` exits after N events. Ctrl-C closes cleanly (a `/meta/disconnect` is
//! sent). Errors print one line to stderr and exit non-zero. `SF_LOG=debug` logs to stderr.

use futures::StreamExt;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use sfstream::{Client, ClientBuilder, ErrorKind};
use std::io::Write;
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
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        count: None,
        channels: Vec::new(),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--count" | "-n" => {
                let n = args.next().ok_or("--count needs a number")?;
                parsed.count = Some(
                    n.parse()
                        .map_err(|_| format!("--count: not a number: {n}"))?,
                );
            }
            "--help" | "-h" => {
                return Err(
                    "usage: tail [--count N] CHANNEL...   (no credentials: emulator)".into(),
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
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let version = env("SF_API_VERSION");
    if let (Some(url), Some(token)) = (env("SF_INSTANCE_URL"), env("SF_ACCESS_TOKEN")) {
        let url = url.parse().map_err(|e| format!("SF_INSTANCE_URL: {e}"))?;
        if args.channels.is_empty() {
            return Err("name at least one channel, e.g. /event/Order_Placed__e".into());
        }
        let mut builder = Client::builder(AccessToken::new(token, url));
        if let Some(v) = version {
            builder = builder.api_version(v);
        }
        return Ok((builder, None));
    }
    let mut emulator = Emulator::builder();
    if let Some(v) = &version {
        emulator = emulator.api_version(v);
    }
    let emulator = emulator
        .start()
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    eprintln!(
        "tail: no SF_INSTANCE_URL/SF_ACCESS_TOKEN set; streaming sample events from the built-in emulator at {}",
        emulator.instance_url()
    );
    if args.channels.is_empty() {
        args.channels = SAMPLE_CHANNELS.iter().map(|c| c.to_string()).collect();
    }
    let url = emulator
        .instance_url()
        .parse()
        .map_err(|e| format!("{e}"))?;
    let builder = Client::builder(AccessToken::new(emulator.issue_token(), url))
        .api_version(emulator.api_version());
    Ok((builder, Some(emulator)))
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
    let (builder, emulator) = source(&mut args).await?;
    let client = builder.connect().await.map_err(|e| e.to_string())?;
    let mut streams = Vec::new();
    for channel in &args.channels {
        streams.push(
            client
                .subscribe(channel.as_str())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(emulator) = emulator {
        tokio::spawn(publish_samples(emulator, args.channels.clone()));
    }
    let mut events = futures::stream::select_all(streams);
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let result = loop {
        if args.count.is_some_and(|c| printed >= c) {
            break Ok(());
        }
        let next = tokio::select! {
            next = events.next() => next,
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        match next {
            None => break Err("the stream ended".to_owned()),
            Some(Ok(event)) => {
                let line = serde_json::to_string(&event).map_err(|e| e.to_string())?;
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    break Ok(()); // stdout closed (`| head`): done
                }
                printed += 1;
            }
            Some(Err(e)) => match e.kind() {
                // Worth knowing, not worth stopping for: the client recovers by itself.
                ErrorKind::TransportTimeout | ErrorKind::ReplayGap | ErrorKind::Protocol => {
                    eprintln!("tail: warning: {e}");
                }
                _ => break Err(e.to_string()),
            },
        }
    };
    drop(events);
    let _ = client.close().await;
    result
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
