//! Incoming messages: events to the streams, replies to the requests waiting for them.

use super::*;
use crate::bayeux::Channel;

impl Task {
    /// Route events and complete control replies. Connect and handshake replies are read by
    /// their callers.
    /// Returns the error of a malformed meta message, which explains a missing reply.
    pub(super) fn dispatch(&mut self, response: Response) -> Option<Error> {
        let mut events: Vec<Event> = Vec::with_capacity(response.messages.len());
        // (subscription, index into `events`); fan-out to several subscriptions is adjacent.
        let mut targets_of: Vec<(SubId, usize)> = Vec::with_capacity(response.messages.len());
        let mut replies = Vec::new();
        // Events of a batch mostly share a channel: route and intern once per run. The run's
        // name as received is kept to compare with the next event's: the parser gives a run one
        // shared name, so that is a pointer comparison.
        let mut run: Option<(Channel, Arc<str>, Vec<SubId>)> = None;
        // Messages are read in place and only their parts taken: a `Message` is ~300 bytes,
        // and moving each one out of the vector cost two copies of it per event.
        let mut messages = response.messages;
        for m in &mut messages {
            if m.is_meta() {
                match m.channel.as_str() {
                    channels::CONNECT | channels::HANDSHAKE => {}
                    channels::DISCONNECT if m.id.is_none() => {
                        tracing::info!("the server sent /meta/disconnect");
                        self.server_disconnected = true;
                    }
                    _ => replies.push(std::mem::take(m)),
                }
                continue;
            }
            if m.is_unaddressed_reply() {
                continue; // read by the caller waiting for the request it answers
            }
            // Replies always carry `successful`, events never do (Faye echoes the publisher's id
            // on the delivered event, so the id alone cannot tell them apart).
            if m.successful.is_some() {
                replies.push(std::mem::take(m));
                continue;
            }
            let Some(data) = m.data.take() else {
                replies.push(std::mem::take(m));
                continue;
            };
            let channel = std::mem::take(&mut m.channel);
            if run
                .as_ref()
                .is_none_or(|(c, _, _)| !c.same(&channel) && *c != channel)
            {
                let mut targets = Vec::new();
                self.router.route(&channel, |s| targets.push(s));
                // Only names someone subscribed to are kept: a server sending events on ever new
                // channels must not grow the table.
                let name = if targets.is_empty() {
                    Arc::from(channel.clone())
                } else {
                    self.router.intern(channel.clone())
                };
                run = Some((channel, name, targets));
            }
            let Some((_, channel, targets)) = &run else {
                continue;
            };
            if targets.is_empty() {
                tracing::debug!(channel = %sanitized(channel), "event for no live subscription");
                continue;
            }
            // Each subscription's own cut-off: a filter's replayed event on its topic's name is
            // the filter's, however old for the topic's.
            let replay = &self.shared.replay;
            let name = |s: &SubId| self.subs.get(s).map_or(&**channel, |s| s.channel.as_str());
            let refused =
                replay.filtering() && !targets.iter().all(|s| replay.admit(name(s), &data));
            let admitted = refused.then(|| {
                let mut admitted = targets.clone();
                admitted.retain(|s| replay.admit(name(s), &data));
                admitted
            });
            let targets = admitted.as_ref().unwrap_or(targets);
            if targets.is_empty() {
                tracing::debug!(%channel, "replayed event older than the subscribe; skipped");
                continue;
            }
            // A notice is its own subscription's: not a filter's that takes its topic's events.
            if replay.gaps_waiting() {
                for s in targets {
                    if let Some(gap) = replay.take_gap(name(s)) {
                        self.announce_gap(&[*s], gap);
                    }
                }
            }
            targets_of.extend(targets.iter().map(|s| (*s, events.len())));
            events.push(Event::new(channel.clone(), data));
        }
        if !events.is_empty() {
            self.note_activity(&targets_of);
            crate::metrics::delivered(&events);
            self.deliver(events, &targets_of);
        }
        for m in replies {
            self.on_reply(m);
        }
        let mut meta_error = None;
        for bad in response.malformed {
            tracing::warn!(error = %bad.error, "malformed message");
            if bad
                .channel
                .as_deref()
                .is_some_and(|c| c.starts_with("/meta/"))
            {
                // A broken reply: the request it answers fails with this error.
                meta_error.get_or_insert(bad.error);
                continue;
            }
            let mut targets = Vec::new();
            if let Some(channel) = &bad.channel {
                self.router.route(channel, |s| targets.push(s));
            }
            if targets.is_empty() {
                self.shared.inbox.broadcast_error(bad.error);
            } else {
                for s in targets {
                    self.shared.inbox.push_error(s, bad.error.clone());
                }
            }
        }
        meta_error
    }

    /// Hand events to their subscriptions' queues, with tickets when processing is tracked.
    fn deliver(&mut self, events: Vec<Event>, targets_of: &[(SubId, usize)]) {
        let replay = &self.shared.replay;
        replay.delivered(events.iter().map(|e| (e.channel(), e.data())));
        // One ticket per delivery: an event fanned out to two subscriptions is processed only
        // when both are done with it.
        let mut tickets = if replay.tracks() {
            replay
                .issue(targets_of.iter().map(|(sub, index)| {
                    let e = &events[*index];
                    (*index, *sub, e.channel(), e.data())
                }))
                .into_iter()
        } else {
            Vec::new().into_iter()
        };
        let mut deliveries = Vec::with_capacity(targets_of.len());
        let mut targets = targets_of.iter().peekable();
        for (index, event) in events.into_iter().enumerate() {
            let mut event = Some(event);
            while let Some((sub, _)) = targets.next_if(|(_, i)| *i == index) {
                let last_use = targets.peek().is_none_or(|(_, next)| *next != index);
                let copy = if last_use {
                    event.take()
                } else {
                    event.clone()
                };
                if let Some(mut copy) = copy {
                    if let Some(ticket) = tickets.next() {
                        copy.set_ticket(ticket);
                    }
                    deliveries.push((*sub, copy));
                }
            }
        }
        self.shared.inbox.deliver(deliveries);
    }

    /// Tell the streams that a replay id expired, before any event the fallback brings.
    pub(super) fn announce_gap(&self, subs: &[SubId], gap: crate::error::ReplayGap) {
        tracing::warn!(?gap, "replay gap");
        crate::metrics::replay_gap(&gap.channel);
        let error = Error::replay_gap(gap);
        for sub in subs {
            self.shared.inbox.push_error(*sub, error.clone());
        }
    }

    /// Leave the current session behind (a best-effort disconnect, not awaited).
    pub(super) fn abandon_session(&mut self) {
        let Some(client_id) = self.lose_session() else {
            return;
        };
        let mut m = Message::new(channels::DISCONNECT);
        m.id = Some(self.id());
        m.client_id = Some(client_id);
        let flight = self.flight(vec![m], self.settings.request_timeout);
        self.control
            .push(Box::pin(async move { (Vec::new(), flight.await) }));
    }

    /// Forget the session: replies still in flight for it become stale.
    pub(super) fn lose_session(&mut self) -> Option<String> {
        self.session_gen += 1;
        self.client_id.take()
    }

    pub(super) fn on_reply(&mut self, m: Message) {
        let Some(pending) = m.id.as_ref().and_then(|id| self.pending.remove(id)) else {
            tracing::debug!(channel = %sanitized(&m.channel), "reply to no pending request");
            return;
        };
        match pending {
            Pending::Subscribe { sub, session } => self.on_subscribe_reply(sub, session, Ok(m)),
            Pending::Unsubscribe { channel, reply } => {
                self.unsubscribe_done(&channel);
                let result = if m.is_successful() {
                    Ok(())
                } else {
                    Err(Error::from_reply("unsubscribe", &m))
                };
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "unsubscribe failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Pending::Publish {
                channel,
                data,
                reply,
                session,
                retried,
            } => {
                if m.is_successful() {
                    let _ = reply.send(Ok(m));
                    return;
                }
                let error = Error::from_reply("publish", &m);
                let unknown = error.server_error().is_some_and(|s| s.is_unknown_client());
                if unknown && !retried {
                    // Not processed by the server: send again, in the next session.
                    if session != self.session_gen && self.client_id.is_some() {
                        self.publish(channel, data, reply, true); // that session is here
                    } else {
                        self.deferred.push((channel, data, reply, true));
                        if session == self.session_gen && self.client_id.is_some() {
                            self.rehandshake(self.advice_interval);
                        }
                    }
                } else {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    pub(super) fn on_control(&mut self, ids: Vec<String>, result: Result<Response>) {
        match result {
            Ok(response) => {
                let unaddressed = response
                    .messages
                    .iter()
                    .find(|m| m.is_unaddressed_reply())
                    .cloned();
                let malformed = self.dispatch(response);
                for id in ids {
                    if let Some(mut reply) = unaddressed.clone()
                        && self.pending.contains_key(&id)
                    {
                        // Refused as a whole: the reply answers this request.
                        reply.id = Some(id);
                        self.on_reply(reply);
                        continue;
                    }
                    if let Some(p) = self.pending.remove(&id) {
                        let e = malformed.clone().unwrap_or_else(|| {
                            Error::new(
                                ErrorKind::Protocol,
                                "the response has no reply to the request",
                            )
                        });
                        self.fail_pending(p, e);
                    }
                }
            }
            Err(error) => {
                for id in ids {
                    if let Some(p) = self.pending.remove(&id) {
                        self.fail_pending(p, error.clone());
                    }
                }
            }
        }
    }

    pub(super) fn fail_pending(&mut self, pending: Pending, error: Error) {
        match pending {
            Pending::Subscribe { sub, session } => {
                self.on_subscribe_reply(sub, session, Err(error))
            }
            Pending::Unsubscribe { channel, reply } => {
                self.unsubscribe_done(&channel);
                if let Some(r) = reply {
                    let _ = r.send(Err(error));
                }
            }
            Pending::Publish { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}
