//! Peak memory while parsing a 32 MiB malformed response (issue 14, finding 1): each case runs in
//! a child process of its own, which reports its peak RSS (`VmHWM`) above its RSS before the
//! body was built, so the figure covers the body and everything `parse_batch` allocates.
//!
//! ```text
//! cargo bench --bench malformed_memory
//! ```
//!
//! Figures are in the README's Security section (target: peak ≤ 4× the body size).

mod common;

use bytes::Bytes;
use common::status_bytes;
use sfstream::bayeux::parse_batch;
use std::time::Instant;

const BODY: usize = 32 << 20;

/// `[e,e,...,last]` of about 32 MiB.
fn body(element: &str, last: &str) -> Bytes {
    let n = BODY / (element.len() + 1);
    let mut s = String::with_capacity(BODY + last.len() + 2);
    s.push('[');
    for _ in 0..n {
        s.push_str(element);
        s.push(',');
    }
    s.push_str(last);
    s.push(']');
    Bytes::from(s)
}

const CASES: usize = 4;

fn case(index: usize) -> (&'static str, Bytes) {
    let event = r#"{"channel":"/event/Order_Placed__e","data":{"schema":"dffQ2QLzDNHqwB8_sHMxdA","payload":{"CreatedDate":"2026-11-28T07:00:02.114Z","CreatedById":"005xx000001X8Uz","Order_Number__c":"ORD-000001","Amount__c":249.5},"event":{"EventUuid":"8d2b6c9e-2f4a-4a5e-9c1e-3b7f5d0a6e21","replayId":17}}}"#;
    let bad_object = r#"{"channel":"/event/Order_Placed__e","successful":"yes","data":{}}"#;
    match index {
        0 => ("`[1,1,1,...]`", body("1", "1")),
        1 => (
            "malformed objects with a channel",
            body(bad_object, bad_object),
        ),
        2 => ("valid events, one malformed at the end", body(event, "1")),
        _ => (
            "valid events (fast path, for comparison)",
            body(event, event),
        ),
    }
}

fn run_case(index: usize) {
    let base = status_bytes("VmRSS:");
    let (label, body) = case(index);
    let size = body.len();
    let start = Instant::now();
    let result = parse_batch(body);
    let elapsed = start.elapsed();
    let outcome = match &result {
        Ok(b) => format!(
            "{} messages, {} malformed",
            b.messages.len(),
            b.malformed.len()
        ),
        Err(e) => format!("rejected ({:?} error)", e.kind()),
    };
    let peak = status_bytes("VmHWM:").saturating_sub(base);
    println!(
        "| {label} | {outcome} | {:.1} MiB | {:.2}x | {:.0} ms |",
        peak as f64 / (1 << 20) as f64,
        peak as f64 / size as f64,
        elapsed.as_secs_f64() * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        run_case(args[i + 1].parse().expect("case index"));
        return;
    }
    println!("| body (32 MiB) | result | peak RSS above start | peak / body | parse time |");
    println!("|---|---|---|---|---|");
    let me = std::env::current_exe().expect("own path");
    for i in 0..CASES {
        let status = std::process::Command::new(&me)
            .args(["--case", &i.to_string()])
            .status()
            .expect("run a case");
        assert!(status.success(), "case {i} failed");
    }
}
