//! Backpressure diagnosis: a pause that lasts is reported once, naming the channels whose queues
//! hold the pending items, so a forgotten `Subscription` is found in minutes.

use super::*;

/// Reported after this long when no `connection_timeout` is set (Salesforce's reconnect window:
/// the session is lost by then anyway).
const DEFAULT_LONG_PAUSE: Duration = Duration::from_secs(40);

/// The current backpressure pause, if any.
#[derive(Default)]
pub(super) struct LongPause {
    since: Option<Instant>,
    reported: bool,
}

impl Task {
    fn long_pause_after(&self) -> Duration {
        self.settings
            .connection_timeout
            .unwrap_or(DEFAULT_LONG_PAUSE)
    }

    /// The state to publish while backpressure holds the connect loop.
    pub(super) fn paused_state(&mut self, pending: usize) -> ConnectionState {
        let since = *self.long_pause.since.get_or_insert_with(Instant::now);
        if !self.long_pause.reported {
            return ConnectionState::Paused { pending };
        }
        ConnectionState::PausedLong {
            pending,
            paused_for: since.elapsed(),
            channels: self.shared.inbox.holders(),
        }
    }

    /// The connect loop goes on.
    pub(super) fn pause_ended(&mut self) {
        self.long_pause = LongPause::default();
    }

    /// When the current pause becomes worth a warning, if that is still to come.
    pub(super) fn long_pause_deadline(&self) -> Option<Instant> {
        let since = self.long_pause.since?;
        (!self.long_pause.reported).then(|| saturating_add(since, self.long_pause_after()))
    }

    pub(super) fn check_long_pause(&mut self) {
        if self
            .long_pause_deadline()
            .is_none_or(|t| t > Instant::now())
        {
            return;
        }
        self.long_pause.reported = true;
        let state = self.paused_state(self.shared.inbox.pending());
        if let ConnectionState::PausedLong {
            pending,
            paused_for,
            channels,
        } = &state
        {
            let holders: Vec<String> = channels
                .iter()
                .map(|(c, n)| format!("{}: {n}", sanitized(c)))
                .collect();
            tracing::warn!(
                pending,
                paused_s = paused_for.as_secs(),
                holders = %holders.join(", "),
                "backpressure has paused the connect loop for every channel: a consumer stopped \
                 taking events (a Subscription held but not polled, or detached subscriptions \
                 without a receive() reader)"
            );
        }
        self.set_state(state);
    }
}
