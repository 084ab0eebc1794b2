/// Linear backoff with a cap, as CometD does: +1 s per consecutive failure up to 30 s, reset on
/// success.
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    step: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(step: Duration, max: Duration) -> Self {
        Backoff {
            step,
            max,
            failures: 0,
        }
    }

    /// Count a failure and return how long to wait before the next attempt.
    pub(crate) fn failure(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.step.saturating_mul(self.failures).min(self.max)
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_capped_and_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3));
        let d: Vec<u64> = (0..5).map(|_| b.failure().as_secs()).collect();
        assert_eq!(d, vec![1, 2, 3, 3, 3]);
        b.reset();
        assert_eq!(b.failure(), Duration::from_secs(1));
    }
}
