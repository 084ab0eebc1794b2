//! What the connection task shares with the handles of one open session: the inbox, the state,
//! the confirmed subscriptions and the replay bookkeeping.

use super::inbox::Inbox;
use super::state::{ConnectionState, Status};
use crate::event::Event;
use crate::replay::CommitPolicy;
use crate::replay::tracker::ReplayState;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

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

    /// A stream handed out `taken` and showed `done` processed: store markers per the policy.
    pub(crate) fn after_poll(&self, taken: Option<&Event>, done: Option<Event>) {
        if let Some(done) = done {
            done.ack();
        }
        if self.replay.policy() == CommitPolicy::OnReceive
            && let Some(event) = taken
        {
            self.replay.commit(event.channel(), event.data());
        }
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
