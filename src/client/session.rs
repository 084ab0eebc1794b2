use crate::connection::{Command, Shared};
use crate::error::{Error, Result};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// One open period of a client: the task's command channel and what it shares with the
/// handles. A reopened client gets a new one; streams of the old one have ended.
pub(crate) struct Session {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) shared: Arc<Shared>,
    /// Keeps the lease of a client that has one; `close()` releases it.
    pub(crate) lease: tokio::sync::Mutex<Option<super::lease::Keeper>>,
}

impl Session {
    pub(crate) fn is_open(&self) -> bool {
        !self.shared.inbox.is_closed()
    }

    /// Send a command and wait for its reply.
    pub(crate) async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| Error::closed())?;
        rx.await.map_err(|_| Error::closed())?
    }
}
