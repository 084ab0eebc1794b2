//! The health the task publishes for probes (see [`crate::health`]): computed at state
//! changes, round trips, subscription changes and the unhealthy threshold, never per event.

use super::*;
use crate::health::{DEFAULT_UNHEALTHY_AFTER, Health, Pause, PauseReason, SubscriptionHealth};
use std::time::SystemTime;

/// What health needs beyond the task's own state. Wall-clock times are taken when things
/// happen, so an unchanged health compares equal and wakes no watcher.
pub(super) struct Clock {
    connected: bool,
    since: Option<SystemTime>,
    last_round_trip: Option<SystemTime>,
    paused_since: Option<SystemTime>,
    /// When backpressure held the connect loop (for the log line and the paused time).
    paused_at: Option<Instant>,
    /// Unhealthy was published for the current outage.
    reported_unhealthy: bool,
}

impl Clock {
    pub(super) fn new() -> Self {
        Clock {
            connected: false,
            since: None,
            last_round_trip: None,
            paused_since: None,
            paused_at: None,
            reported_unhealthy: false,
        }
    }

    pub(super) fn round_trip(&mut self) {
        self.last_round_trip = Some(SystemTime::now());
    }
}

impl Task {
    /// Backpressure holds the next connect (logged once per pause).
    pub(super) fn note_pause(&mut self, pending: usize) {
        if self.clock.paused_at.is_none() {
            self.clock.paused_at = Some(Instant::now());
            crate::metrics::pending(pending);
            tracing::info!(
                pending,
                "paused by backpressure: the next connect waits for a consumer to take an event"
            );
        }
    }

    /// The connect loop goes on; returns how long it was paused.
    pub(super) fn note_resume(&mut self) -> Option<Duration> {
        let paused = self.clock.paused_at.take()?.elapsed();
        crate::metrics::paused(paused);
        tracing::info!(
            paused_ms = paused.as_millis() as u64,
            "resumed after backpressure"
        );
        Some(paused)
    }

    fn unhealthy_after(&self) -> Duration {
        self.settings
            .unhealthy_after
            .or(self.settings.connection_timeout)
            .unwrap_or(DEFAULT_UNHEALTHY_AFTER)
    }

    /// When the current outage makes the client unhealthy, if that is still to come.
    pub(super) fn health_deadline(&self) -> Option<Instant> {
        let outage = self.outage.as_ref()?;
        (!self.clock.reported_unhealthy)
            .then(|| saturating_add(outage.since, self.unhealthy_after()))
    }

    pub(super) fn check_health(&mut self) {
        if self.health_deadline().is_some_and(|t| t <= Instant::now()) {
            self.publish_health();
        }
    }

    pub(super) fn publish_health(&mut self) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let state = self.shared.status.get();
        let connected = state.is_connected();
        if self.clock.since.is_none() || connected != self.clock.connected {
            self.clock.connected = connected;
            self.clock.since = Some(wall);
        }
        if matches!(
            state,
            ConnectionState::Paused { .. } | ConnectionState::PausedLong { .. }
        ) {
            self.clock.paused_since.get_or_insert(wall);
        } else {
            self.clock.paused_since = None;
        }
        let failing_too_long = match &self.outage {
            Some(o) => saturating_add(o.since, self.unhealthy_after()) <= now,
            None => false,
        };
        self.clock.reported_unhealthy = failing_too_long;
        // Before the first connect (`open_reply` still waiting) the client is not healthy yet.
        let healthy =
            self.open_reply.is_none() && state != ConnectionState::Closed && !failing_too_long;
        let mut subscriptions: Vec<SubscriptionHealth> = self
            .subs
            .values()
            .map(|s| SubscriptionHealth {
                channel: s.channel.clone(),
                subscribed: s.state == SubState::Active,
                last_event: s.last_event,
                replay_id: self.shared.replay.last_delivered_id(&s.channel),
                unacked: self.shared.replay.skipped_ack(&s.channel),
            })
            .collect();
        subscriptions.sort_by(|a, b| a.channel.cmp(&b.channel));
        if cfg!(feature = "metrics") {
            crate::metrics::pending(self.shared.inbox.pending());
            for s in self.subs.values() {
                if let Some(lag) = self.shared.replay.marker_lag(&s.channel) {
                    crate::metrics::marker_lag(&s.channel, lag);
                }
            }
        }
        let health = Health {
            healthy,
            connected,
            since: self.clock.since,
            last_round_trip: self.clock.last_round_trip,
            failures: self.backoff.failures(),
            pending: self.shared.inbox.pending(),
            paused: self.clock.paused_since.map(|since| Pause {
                reason: PauseReason::Backpressure,
                since,
            }),
            subscriptions,
        };
        self.shared.status.set_health(health);
    }
}
