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
        reply: oneshot::Sender<Result<()>>,
    },
    /// A `Subscription` was dropped: unsubscribe without waiting.
    Drop {
        sub: SubId,
    },
    /// `Client::unsubscribe(channel)`.
    Unsubscribe {
        channel: String,
        reply: oneshot::Sender<Result<()>>,
    },
    Publish {
        channel: String,
        data: Data,
        reply: oneshot::Sender<Result<Message>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}
