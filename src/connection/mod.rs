//! Layer 4: the connection task. One spawned task per open client runs the handshake, the
//! long-poll connect loop, advice, backoff, rehandshake with resubscription, and the
//! `/meta/disconnect` on close. Client handles talk to it with [`Command`]s and oneshot replies;
//! it hands events to the streams through the [`Inbox`].

mod backoff;
mod command;
mod inbox;
mod router;
mod shared;
mod state;
mod task;

pub(crate) use command::Command;
pub(crate) use inbox::SubId;
pub(crate) use router::base_channel;
pub(crate) use shared::Shared;
pub use state::ConnectionState;
pub(crate) use state::Status;
#[cfg(feature = "fuzzing")]
pub(crate) use task::advised;
pub(crate) use task::{Settings, spawn};
