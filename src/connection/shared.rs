//! What the connection task shares with the handles of one open session: the inbox, the state,
//! the confirmed subscriptions and the replay bookkeeping.

use super::inbox::{Inbox, Polled};
use super::state::{ConnectionState, Status};
use crate::error::Result;
use crate::event::Event;
use crate::replay::CommitPolicy;
use crate::replay::tracker::{ReplayState, marker_key};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::task::Poll;

/// State shared by the task and every handle of one open session.
pub(crate) struct Shared {
    pub(crate) inbox: Inbox,
    /// The client's state, which outlives this session.
    pub(crate) status: Arc<Status>,
    pub(crate) subscriptions: Mutex<BTreeSet<String>>,
    pub(crate) replay: Arc<ReplayState>,
}

impl Shared {
    pub(crate) fn new(max_pending: usize, replay: Arc<ReplayState>, status: Arc<Status>) -> Self {
        status.set(ConnectionState::Handshaking);
        Shared {
            inbox: Inbox::new(max_pending),
            status,
            subscriptions: Mutex::new(BTreeSet::new()),
            replay,
        }
    }

    /// Whether streams remember their last event to count it processed when polled again.
    pub(crate) fn tracks_processing(&self) -> bool {
        self.replay.tracks() && self.replay.policy() == CommitPolicy::AfterProcessed
    }

    /// What a stream's poll took, with the commit policy applied: the event the poll showed
    /// processed is acknowledged, and under `OnReceive` the one handed out is stored, unless
    /// `store_on_receive` is false (a hand-off, whose acks store its markers), under the marker
    /// key of `subscribed` (see [`marker_key`]). A replay gap notice handed out moves the stored
    /// marker off the expired id.
    pub(crate) fn settle(
        &self,
        (polled, done): Polled,
        store_on_receive: bool,
        subscribed: Option<&str>,
    ) -> Poll<Option<Result<Event>>> {
        if let Some(done) = done {
            done.ack();
        }
        if store_on_receive
            && self.replay.policy() == CommitPolicy::OnReceive
            && let Poll::Ready(Some(Ok(event))) = &polled
        {
            let channel = event.channel();
            let key = subscribed.map_or(channel, |name| marker_key(name, channel));
            self.replay.commit(key, event.data());
        }
        if let Poll::Ready(Some(Err(e))) = &polled
            && let Some(gap) = e.replay_gap_info()
        {
            self.replay.gap_handed_out(gap);
        }
        polled
    }

    pub(crate) fn set_subscribed(&self, channel: &str, on: bool) {
        let mut set = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            set.insert(channel.to_owned());
        } else {
            set.remove(channel);
        }
    }
}
