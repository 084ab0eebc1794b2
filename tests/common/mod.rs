#![allow(dead_code, unreachable_pub)]
pub mod front;
pub mod log;
pub mod mock;
pub mod proxy;

use std::future::Future;
use std::time::Duration;

/// Every test ends by itself: a hang is a failure, not a stuck CI job.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

pub fn token_for(instance_url: &str) -> sfstream::auth::AccessToken {
    sfstream::auth::AccessToken::new("test-token", instance_url.parse().unwrap())
}

/// For `start_paused` tests: time is virtual, so the limit can be generous.
pub async fn within_virtual<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The path of an example built by `cargo test` (target/<profile>/deps/<test>-<hash> ->
/// target/<profile>/examples/<name>).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: `cargo test --all-features` builds the examples before running tests",
        bin.display()
    );
    bin
}
