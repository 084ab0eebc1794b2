//! Count-only sfstream consumer for `benches/side_by_side/run.sh`: what a new user writes, on
//! `#[tokio::main]` (the multi-thread runtime). Usage:
//! `sfstream_count PORT CHANNEL N [MAX_PENDING_COUNT]`; exits 0 after N events on CHANNEL.
//! The script polls the server's stats to see the subscription before it publishes.

use futures::StreamExt;
use sfstream::Client;
use sfstream::auth::AccessToken;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(port), Some(channel), Some(n)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: sfstream_count PORT CHANNEL N [MAX_PENDING_COUNT]");
        return ExitCode::FAILURE;
    };
    let (Ok(n), Ok(url)) = (n.parse::<u64>(), format!("http://127.0.0.1:{port}").parse()) else {
        eprintln!("sfstream_count: bad N or PORT");
        return ExitCode::FAILURE;
    };
    let mut builder = Client::builder(AccessToken::new("test-token", url)).api_version("62.0");
    if let Some(pending) = args.get(3).and_then(|p| p.parse().ok()) {
        builder = builder.max_pending_count(pending);
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("sfstream_count: build: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Subscribing while open() runs sends the subscribe right after the handshake, beside the
    // first connect: one round trip less than subscribing after open() returned.
    let (opened, subscribed) = tokio::join!(client.open(), client.subscribe(channel.as_str()));
    if let Err(e) = opened {
        eprintln!("sfstream_count: open: {e}");
        return ExitCode::FAILURE;
    }
    let mut events = match subscribed {
        Ok(events) => events,
        Err(e) => {
            eprintln!("sfstream_count: subscribe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut count = 0;
    while count < n {
        match events.next().await {
            Some(Ok(_)) => count += 1,
            Some(Err(e)) => {
                eprintln!("sfstream_count: after {count} events: {e}");
                return ExitCode::FAILURE;
            }
            None => {
                eprintln!("sfstream_count: stream ended after {count} events");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("received {count}");
    ExitCode::SUCCESS
}
