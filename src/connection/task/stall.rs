//! Stall detection: a subscription that delivers nothing while the session is healthy (the
//! event-bus backlog of Salesforce knowledge article 005321562) is subscribed again from the
//! last replay id it delivered. Deliveries are noted here for health too.

use super::*;

impl Task {
    /// When the quietest confirmed subscription counts as stalled.
    pub(super) fn stall_deadline(&self) -> Option<Instant> {
        let timeout = self.settings.stall_timeout?;
        self.subs
            .values()
            .filter(|s| s.state == SubState::Active)
            .map(|s| saturating_add(s.quiet_since, timeout))
            .min()
    }

    /// Events reached these subscriptions (one entry per event and target).
    pub(super) fn note_activity(&mut self, targets_of: &[(SubId, usize)]) {
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        let mut last = None;
        for (sub, _) in targets_of {
            if last == Some(*sub) {
                continue;
            }
            last = Some(*sub);
            if let Some(s) = self.subs.get_mut(sub) {
                s.quiet_since = now;
                s.last_event = Some(wall);
            }
        }
    }

    pub(super) fn check_stalls(&mut self) {
        let Some(timeout) = self.settings.stall_timeout else {
            return;
        };
        let now = Instant::now();
        // Silence only counts while the long-poll loop runs: an outage or a backpressure pause
        // explains it, and recovering from those resubscribes anyway.
        let healthy = self.outage.is_none()
            && self.client_id.is_some()
            && self.shared.status.get() == ConnectionState::Connected;
        let stalled: Vec<SubId> = self
            .subs
            .iter()
            .filter(|(_, s)| {
                s.state == SubState::Active && saturating_add(s.quiet_since, timeout) <= now
            })
            .map(|(id, _)| *id)
            .collect();
        for sub in stalled {
            if healthy {
                self.recover_stalled(sub, timeout);
            } else if let Some(s) = self.subs.get_mut(&sub) {
                s.quiet_since = now;
            }
        }
    }

    /// Unsubscribe and subscribe again: the subscribe waits for the unsubscribe's reply and
    /// carries the last delivered replay id (the replay layer), so what the server retained
    /// during the stall arrives once. A session the server forgot ends in a rehandshake.
    fn recover_stalled(&mut self, sub: SubId, timeout: Duration) {
        let Some(s) = self.subs.get_mut(&sub) else {
            return;
        };
        s.quiet_since = Instant::now();
        s.state = SubState::Wanted;
        let channel = s.channel.clone();
        let from = self.shared.replay.last_delivered_id(&channel);
        let from_text = match from {
            Some(id) => format!("replay id {id}"),
            None => "its start option".to_owned(),
        };
        s.span.in_scope(|| {
            tracing::warn!(
                ?timeout,
                replay_id = from,
                "subscription stalled; resubscribing"
            )
        });
        crate::metrics::stall(&channel);
        self.shared.inbox.push_error(
            sub,
            Error::new(
                ErrorKind::Stalled,
                format!(
                    "no event on {channel} for {timeout:?} while connected; subscribed again from {from_text}"
                ),
            ),
        );
        self.send_unsubscribe(channel, None);
        self.send_subscribe(sub);
    }
}
