#![allow(dead_code, unreachable_pub)]
pub mod front;
pub mod mock;

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
