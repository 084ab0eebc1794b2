//! `emulator`: the built-in Salesforce emulator as a standalone server, to test your own
//! consumer against, restarts included (of your consumer, and of the emulator with
//! `--retention-file`).
//!
//! ```text
//! cargo run --example emulator -- [--port 8642] [--retention-file PATH]
//! ```
//!
//! It listens on `http://127.0.0.1:PORT` (default 8642; `--port 0` picks a free one) with fixed
//! credentials, and prints them as environment variables for `tail` (and your own program):
//!
//! ```text
//! emulator: listening on http://127.0.0.1:8642
//! SF_LOGIN_URL=http://127.0.0.1:8642 SF_CLIENT_ID=... SF_CLIENT_SECRET=... SF_USERNAME=... SF_PASSWORD=...
//! ```
//!
//! `http://` login and instance URLs are accepted for loopback addresses only (`127.0.0.1`,
//! `[::1]`), which is what the emulator serves.
//!
//! Publishing:
//! - one line per event on stdin, `CHANNEL JSON` (`/event/Order__e {"Amount__c": 5}`,
//!   `/data/AccountChangeEvent {"Name": "Acme"}`, `/u/Notifications "hello"`); each is
//!   answered with `published CHANNEL REPLAY_ID` on stdout;
//! - or over the REST API, as on Salesforce: `POST /services/data/vXX.X/sobjects/Order__e/`
//!   with a bearer token from `/services/oauth2/token` (the password flow with the printed
//!   credentials).
//!
//! `--retention-file PATH` keeps every retained event in PATH (JSON lines) and loads them at
//! start, so an emulator killed and started again replays them and continues the replay ids.
//! It runs until Ctrl-C or SIGTERM.

use sfstream::emulator::Emulator;
use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, BufReader};

const DEFAULT_PORT: u16 = 8642;

struct Args {
    port: u16,
    retention_file: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        port: DEFAULT_PORT,
        retention_file: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let port = args.next().ok_or("--port needs a number")?;
                parsed.port = port
                    .parse()
                    .map_err(|_| format!("--port: not a port number: {port}"))?;
            }
            "--retention-file" => {
                parsed.retention_file = Some(args.next().ok_or("--retention-file needs a path")?);
            }
            "--help" | "-h" => {
                return Err("usage: emulator [--port PORT] [--retention-file PATH]   \
                     (stdin: one `CHANNEL JSON` line per event to publish)"
                    .into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(parsed)
}

/// `CHANNEL JSON` -> publish it and say so.
fn publish_line(emu: &Emulator, line: &str) -> Result<String, String> {
    let line = line.trim();
    let (channel, fields) = line.split_once(char::is_whitespace).unwrap_or((line, "{}"));
    if !channel.starts_with('/') {
        return Err(format!(
            "not a channel: {channel:?} (expected `CHANNEL JSON`)"
        ));
    }
    let fields: serde_json::Value =
        serde_json::from_str(fields.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let replay_id = emu.publish(channel, fields);
    Ok(format!("published {channel} {replay_id}"))
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;
    let mut builder = Emulator::builder().port(args.port);
    if let Some(path) = &args.retention_file {
        builder = builder.retention_file(path);
    }
    let emu = builder
        .start()
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    println!("emulator: listening on {}", emu.instance_url());
    println!(
        "SF_LOGIN_URL={} SF_CLIENT_ID={} SF_CLIENT_SECRET={} SF_USERNAME={} SF_PASSWORD={}",
        emu.login_url(),
        emu.client_id(),
        emu.client_secret(),
        emu.username(),
        emu.password()
    );
    if let Some(path) = &args.retention_file {
        println!("emulator: retained events kept in {path}");
    }
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut terminate = terminate_signal()?;
    loop {
        tokio::select! {
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => match publish_line(&emu, &line) {
                    Ok(done) => println!("{done}"),
                    Err(e) => eprintln!("emulator: {e}"),
                },
                // No more input (run in the background): keep serving.
                Ok(None) | Err(_) => stdin_open = false,
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    emu.shutdown().await;
    Ok(())
}

#[cfg(unix)]
fn terminate_signal() -> Result<tokio::signal::unix::Signal, String> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot listen for SIGTERM: {e}"))
}

#[cfg(not(unix))]
fn terminate_signal() -> Result<NeverSignal, String> {
    Ok(NeverSignal)
}

#[cfg(not(unix))]
struct NeverSignal;

#[cfg(not(unix))]
impl NeverSignal {
    async fn recv(&mut self) -> Option<()> {
        std::future::pending().await
    }
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
            eprintln!("emulator: error: {e}");
            ExitCode::FAILURE
        }
    }
}
