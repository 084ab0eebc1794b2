//! The retry loop the database storages share: a failed marker read or write is tried again,
//! with a doubling delay, until the storage's `retry_for` runs out, so a database restart or a
//! dropped connection costs a late write instead of a failed stream.

use crate::error::{Error, Result};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// The first wait after a failure.
const FIRST_DELAY: Duration = Duration::from_millis(50);
/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Runs `attempt` until it succeeds, waiting 50 ms after the first failure and twice as long
/// after each next one (at most 2 s). When the next wait would end after `retry_for` from the
/// start, the last error is returned instead.
pub(super) async fn retry_with_backoff<T, F, Fut>(retry_for: Duration, attempt: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + retry_for;
    let mut delay = FIRST_DELAY;
    loop {
        let error: Error = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if Instant::now() + delay > deadline {
            return Err(error);
        }
        tracing::debug!(error = %error, ?delay, "replay storage: retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::sync::Mutex;

    /// Records when each attempt starts (virtual time) and fails the first `failures` of them.
    async fn attempts(retry_for: Duration, failures: usize) -> (Result<usize>, Vec<Duration>) {
        let start = Instant::now();
        let seen = Mutex::new(Vec::new());
        let result = retry_with_backoff(retry_for, || async {
            let mut seen = seen.lock().unwrap();
            seen.push(start.elapsed());
            if seen.len() <= failures {
                Err(Error::new(
                    ErrorKind::Replay,
                    format!("attempt {}", seen.len()),
                ))
            } else {
                Ok(seen.len())
            }
        })
        .await;
        (result, seen.into_inner().unwrap())
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn waits_double_up_to_two_seconds_until_an_attempt_succeeds() {
        let (result, at) = attempts(Duration::from_secs(60), 7).await;
        assert_eq!(result.unwrap(), 8);
        // Waits of 50, 100, 200, 400, 800, 1600, then 2000 ms (capped).
        assert_eq!(at, ms(&[0, 50, 150, 350, 750, 1550, 3150, 5150]));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_with_the_last_error_when_the_next_wait_would_pass_retry_for() {
        // After the attempt at 350 ms the next wait (400 ms) would end at 750 ms > 700 ms.
        let (result, at) = attempts(Duration::from_millis(700), usize::MAX).await;
        let e = result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replay);
        assert!(e.to_string().contains("attempt 4"), "{e}");
        assert_eq!(at, ms(&[0, 50, 150, 350]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_success_returns_at_once() {
        let (result, at) = attempts(Duration::ZERO, 0).await;
        assert_eq!(result.unwrap(), 1);
        assert_eq!(at, ms(&[0]));
    }
}
