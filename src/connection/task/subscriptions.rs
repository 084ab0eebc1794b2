//! Subscribe, unsubscribe and publish: the commands of client handles and their replies.

use super::*;

impl Task {
    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe {
                channel,
                sub,
                replay_from,
                reply,
            } => {
                if self.subs.values().any(|s| s.channel == channel) {
                    self.shared.inbox.remove(sub);
                    let _ = reply.send(Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("already subscribed to {channel}"),
                    )));
                    return;
                }
                if let Some(id) = replay_from {
                    self.shared.replay.start_from(&channel, id);
                }
                let span = crate::telemetry::subscription_span(
                    &self.settings.spans,
                    &channel,
                    replay_from,
                );
                self.shared.replay.subscribing(sub, &channel);
                self.router.add(&channel, sub);
                self.subs.insert(
                    sub,
                    Sub {
                        channel,
                        state: SubState::Wanted,
                        waiter: Some(reply),
                        quiet_since: Instant::now(),
                        last_event: None,
                        span,
                        failing_since: None,
                    },
                );
                self.send_subscribe(sub);
            }
            Command::Drop { sub } => self.drop_sub(sub, None),
            Command::Unsubscribe {
                channel,
                sub: Some(sub),
                reply,
            } => {
                if self.subs.get(&sub).is_some_and(|s| s.channel == channel) {
                    self.drop_sub(sub, Some(reply));
                } else {
                    let _ = reply.send(Ok(())); // already gone
                }
            }
            Command::Unsubscribe {
                channel,
                sub: None,
                reply,
            } => match self.subs.iter().find(|(_, s)| s.channel == channel) {
                Some((&sub, _)) => self.drop_sub(sub, Some(reply)),
                None => {
                    let _ = reply.send(Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("not subscribed to {channel}"),
                    )));
                }
            },
            Command::Publish {
                channel,
                data,
                reply,
            } => self.publish(channel, data, reply, false),
            Command::Close { .. } => {}
            Command::Health => self.publish_health(),
        }
    }

    /// An unsubscribe of `channel` was answered: a subscribe of the same channel that waited
    /// for it (so the server cannot see them in the wrong order) goes out now.
    pub(super) fn unsubscribe_done(&mut self, channel: &str) {
        if self.unsubscribing.remove(channel) {
            self.resubscribe();
        }
    }

    /// Send the subscribe for `sub` if there is a session; otherwise the handshake will.
    pub(super) fn send_subscribe(&mut self, sub: SubId) {
        let Some(client_id) = self.client_id.clone() else {
            return;
        };
        if self
            .subs
            .get(&sub)
            .is_some_and(|s| self.unsubscribing.contains(&s.channel))
        {
            return; // sent when the unsubscribe of the same channel is answered
        }
        let id = self.id();
        let Some(s) = self.subs.get_mut(&sub) else {
            return;
        };
        s.state = SubState::Subscribing;
        let mut m = Message::new(channels::SUBSCRIBE);
        m.id = Some(id);
        m.client_id = Some(client_id);
        m.subscription = Some(s.channel.clone());
        let span = s.span.clone();
        let _in_subscription = span.enter();
        if let Some(from) = self.shared.replay.last_delivered_id(&s.channel) {
            span.record("replay_start", from);
        }
        tracing::debug!("subscribe");
        let session = self.session_gen;
        self.send_control(m, Pending::Subscribe { sub, session });
    }

    pub(super) fn resubscribe(&mut self) {
        let wanted: Vec<SubId> = self
            .subs
            .iter()
            .filter(|(_, s)| s.state == SubState::Wanted)
            .map(|(id, _)| *id)
            .collect();
        for sub in wanted {
            self.send_subscribe(sub);
        }
    }

    pub(super) fn on_subscribe_reply(&mut self, sub: SubId, session: u64, reply: Result<Message>) {
        if session != self.session_gen {
            return; // From a lost session; the resubscribe of the current one decides.
        }
        let Some(s) = self.subs.get_mut(&sub) else {
            // Dropped while subscribing: undo on the server, unless the channel was subscribed
            // again meanwhile (then the new subscription owns it).
            if let Ok(m) = &reply
                && m.is_successful()
                && let Some(channel) = m.subscription.clone()
                && !self.subs.values().any(|s| s.channel == channel)
            {
                self.send_unsubscribe(channel, None);
            }
            return;
        };
        if s.state != SubState::Subscribing {
            return;
        }
        let error = match reply {
            Ok(m) if m.is_successful() => {
                s.state = SubState::Active;
                s.failing_since = None;
                self.sub_backoff.reset();
                s.quiet_since = Instant::now();
                let channel = s.channel.clone();
                let waiter = s.waiter.take();
                let span = s.span.clone();
                // Visible in subscriptions() and health() by the time subscribe() returns.
                self.shared.set_subscribed(&channel, true);
                self.publish_health();
                if let Some(w) = waiter
                    && w.send(Ok(())).is_err()
                {
                    // The subscribe() future was cancelled: nobody holds the stream.
                    self.drop_sub(sub, None);
                    return;
                }
                span.in_scope(|| tracing::info!(channel = %sanitized(&channel), "subscribed"));
                if let Some(gap) = self.shared.replay.take_gap(&channel) {
                    self.announce_gap(&[sub], gap);
                }
                return;
            }
            Ok(m) => Error::from_reply(&format!("subscribe to {}", s.channel), &m),
            Err(e) => e,
        };
        if error.server_error().is_some_and(|e| e.is_unknown_client()) {
            s.state = SubState::Wanted;
            self.rehandshake(self.advice_interval);
            return;
        }
        if cookies_refused(&error) {
            s.state = SubState::Wanted;
            self.cookies_refused();
            // With backoff: a server that refuses every new session's cookies too must not
            // get a handshake storm.
            let delay = self.failure(&error, true);
            self.rehandshake(delay);
            return;
        }
        // Network trouble, an org limit, or a replay storage that could not be read: retried
        // with backoff (subscribe is idempotent, so a lost reply is harmless); a server's
        // rejection is final.
        let network = transient(&error);
        let limit = error.server_error().is_some_and(|e| e.is_limit_exceeded());
        let storage = error.kind() == ErrorKind::Replay && error.server_error().is_none();
        let now = Instant::now();
        let first_failure = s.failing_since.is_none();
        let since = *s.failing_since.get_or_insert(now);
        let in_time = self
            .settings
            .connection_timeout
            .is_none_or(|t| now < saturating_add(since, t));
        match s.waiter.take() {
            Some(w) if network && in_time => {
                tracing::info!(error = %error, channel = %sanitized(&s.channel), "subscribe failed; retrying");
                s.waiter = Some(w);
                s.state = SubState::Wanted;
                self.schedule_subscribe_retry();
            }
            Some(w) => {
                let _ = w.send(Err(error));
                if let Some(s) = self.forget_sub(sub)
                    && network
                {
                    // The last subscribe may have reached the server: undo it.
                    self.send_unsubscribe(s.channel, None);
                }
            }
            None if network || storage || limit => {
                s.span
                    .in_scope(|| tracing::info!(error = %error, "resubscribe failed; will retry"));
                s.state = SubState::Wanted;
                if limit && first_failure {
                    // Told once per streak: the stream goes on once the limit lifts.
                    self.shared.inbox.push_error(sub, error);
                }
                self.schedule_subscribe_retry();
            }
            None => {
                s.span.in_scope(|| {
                    tracing::warn!(error = %error, "resubscribe rejected; ending the subscription")
                });
                self.shared.inbox.push_error(sub, error);
                self.shared.inbox.end(sub);
                self.forget_sub(sub);
            }
        }
    }

    /// Send the waiting subscribes again after the subscribe backoff.
    fn schedule_subscribe_retry(&mut self) {
        let at = later(self.sub_backoff.failure());
        self.retry_subscribes_at = Some(self.retry_subscribes_at.map_or(at, |t| t.min(at)));
    }

    pub(super) fn retry_subscribes(&mut self) {
        if self
            .retry_subscribes_at
            .is_some_and(|at| at <= Instant::now())
        {
            self.retry_subscribes_at = None;
            self.resubscribe();
        }
    }

    pub(super) fn forget_sub(&mut self, sub: SubId) -> Option<Sub> {
        let s = self.subs.remove(&sub)?;
        self.router.remove(sub);
        self.shared.set_subscribed(&s.channel, false);
        // Events it delivered but nobody took were not processed: a new subscription of the
        // channel starts from the stored marker, not after them.
        self.shared.replay.forget(sub, &s.channel);
        self.publish_health();
        Some(s)
    }

    pub(super) fn drop_sub(&mut self, sub: SubId, reply: Option<oneshot::Sender<Result<()>>>) {
        let Some(s) = self.forget_sub(sub) else {
            self.shared.inbox.remove(sub);
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        };
        if reply.is_some() {
            // Explicit unsubscribe: the stream ends after what it already holds.
            self.shared.inbox.end(sub);
        } else {
            self.shared.inbox.remove(sub);
        }
        if let Some(w) = s.waiter {
            let _ = w.send(Err(Error::new(ErrorKind::InvalidOperation, "unsubscribed")));
        }
        if s.state == SubState::Active {
            self.send_unsubscribe(s.channel, reply);
        } else if let Some(r) = reply {
            // Never confirmed (or in flight: its reply will undo it on the server).
            let _ = r.send(Ok(()));
        }
    }

    pub(super) fn send_unsubscribe(
        &mut self,
        channel: String,
        reply: Option<oneshot::Sender<Result<()>>>,
    ) {
        let Some(client_id) = self.client_id.clone() else {
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        };
        let mut m = Message::new(channels::UNSUBSCRIBE);
        m.id = Some(self.id());
        m.client_id = Some(client_id);
        m.subscription = Some(channel.clone());
        self.unsubscribing.insert(channel.clone());
        self.send_control(m, Pending::Unsubscribe { channel, reply });
    }

    pub(super) fn publish(
        &mut self,
        channel: String,
        data: Data,
        reply: oneshot::Sender<Result<Message>>,
        retried: bool,
    ) {
        let Some(client_id) = self.client_id.clone() else {
            self.deferred.push((channel, data, reply, retried));
            return;
        };
        let mut m = Message::new(channel.clone());
        m.id = Some(self.id());
        m.client_id = Some(client_id);
        m.data = Some(data.clone());
        let session = self.session_gen;
        self.send_control(
            m,
            Pending::Publish {
                channel,
                data,
                reply,
                session,
                retried,
            },
        );
    }
}
