use super::inbox::SubId;
use crate::bayeux::{Data, Message};
use crate::error::Result;
use tokio::sync::oneshot;

/// What client handles ask of the connection task.
pub(crate) enum Command {
    /// Subscribe `sub` (already registered in the inbox) to `channel`.
    Subscribe {
        channel: String,
        sub: SubId,
        /// `subscribe_from`: start after this replay id instead of the stored marker.
        replay_from: Option<i64>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// A `Subscription` was dropped: unsubscribe without waiting.
    Drop { sub: SubId },
    /// `Client::unsubscribe(channel)`, or `Subscription::unsubscribe` (which names its `sub`).
    Unsubscribe {
        channel: String,
        sub: Option<SubId>,
        reply: oneshot::Sender<Result<()>>,
    },
    Publish {
        channel: String,
        data: Data,
        reply: oneshot::Sender<Result<Message>>,
    },
    /// `Err` if some replay marker could not be stored.
    Close { reply: oneshot::Sender<Result<()>> },
    /// Something the health reports changed outside the task (a `Manual` event dropped
    /// without an ack): publish it.
    Health,
}
