//! Active/standby: waiting for the lease before a session starts, and keeping it while the
//! session runs (renewals, loss, release).

use crate::connection::{Command, Shared};
use crate::error::{Error, ErrorKind};
use crate::replay::Lease;
use crate::replay::lease::LeaseTiming;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A client's lease and its timing.
#[derive(Clone)]
pub(crate) struct LeaseConfig {
    pub(crate) lease: Arc<dyn Lease>,
    pub(crate) timing: LeaseTiming,
}

/// A lease just acquired.
pub(crate) struct Grant {
    pub(crate) owner: String,
    pub(crate) epoch: u64,
    /// Until when this client may assume it holds the lease: the store set the expiry at or
    /// after the request left, so by the store's clock it expires no earlier than this.
    pub(crate) valid_until: Instant,
}

/// A name no other holder has: host (when known), process and a random part, so that a
/// restarted process never mistakes its predecessor's lease for its own.
fn owner_id() -> String {
    let random = std::collections::hash_map::RandomState::new()
        .hash_one((std::time::SystemTime::now(), std::process::id()));
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-._".contains(*c))
        .take(64)
        .collect();
    format!("{host}/{}/{random:016x}", std::process::id())
}

impl LeaseConfig {
    /// Stand by until the lease is free, then take it. Store errors are logged and waited out.
    pub(crate) async fn acquire(&self) -> Grant {
        let owner = owner_id();
        let LeaseTiming {
            duration,
            renew_every,
        } = self.timing;
        let mut waiting_logged = false;
        loop {
            let sent = Instant::now();
            match tokio::time::timeout(duration, self.lease.try_acquire(&owner, duration)).await {
                Ok(Ok(Some(epoch))) => {
                    tracing::info!(%owner, epoch, "lease acquired: this client streams");
                    return Grant {
                        owner,
                        epoch,
                        valid_until: sent + duration,
                    };
                }
                Ok(Ok(None)) => {
                    if !waiting_logged {
                        tracing::info!(%owner, "lease held by another client: standing by");
                        waiting_logged = true;
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot reach the lease; still waiting"),
                Err(_) => {
                    tracing::warn!(?duration, "the lease store did not answer; still waiting")
                }
            }
            tokio::time::sleep_until(sent + renew_every).await;
        }
    }

    /// Keep `grant` while `shared`'s session runs. The returned handle releases it.
    pub(crate) fn keep(
        &self,
        grant: Grant,
        shared: &Arc<Shared>,
        commands: &mpsc::UnboundedSender<Command>,
    ) -> Keeper {
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        shared.replay.hold_lease(grant.epoch, lost_tx);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = Task {
            config: self.clone(),
            grant,
            shared: Arc::downgrade(shared),
            commands: commands.downgrade(),
        };
        tokio::spawn(task.run(lost_rx, stop_rx));
        Keeper {
            stop: Some(stop_tx),
        }
    }
}

/// Stops the keeper of a session: [`Keeper::release`] frees the lease for a standby.
pub(crate) struct Keeper {
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

impl Keeper {
    /// Release the lease (if still held) and wait until the store has been told, so that a
    /// standby can take over at once.
    pub(crate) async fn release(&mut self) {
        if let Some(stop) = self.stop.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
    }
}

struct Task {
    config: LeaseConfig,
    grant: Grant,
    shared: std::sync::Weak<Shared>,
    // Weak: the keeper must not keep the connection task alive when every handle is gone.
    commands: mpsc::WeakUnboundedSender<Command>,
}

impl Task {
    async fn run(
        mut self,
        mut refused: mpsc::UnboundedReceiver<Error>,
        mut stop: oneshot::Receiver<oneshot::Sender<()>>,
    ) {
        let LeaseTiming {
            duration,
            renew_every,
        } = self.config.timing;
        let mut next = Instant::now() + renew_every;
        loop {
            let at = next.min(self.grant.valid_until);
            tokio::select! {
                biased;
                done = &mut stop => {
                    self.release().await;
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                Some(error) = refused.recv() => {
                    self.lost(error);
                    return;
                }
                () = tokio::time::sleep_until(at) => {}
            }
            if self.shared.upgrade().is_none_or(|s| s.inbox.is_closed()) {
                // The session ended without close() (every handle dropped, a failed open).
                self.release().await;
                return;
            }
            let now = Instant::now();
            if now >= self.grant.valid_until {
                self.lost(lease_lost(format!(
                    "the lease was not renewed within its duration ({duration:?}); another client may hold it now"
                )));
                return;
            }
            let renewal = self
                .config
                .lease
                .renew(&self.grant.owner, self.grant.epoch, duration);
            match tokio::time::timeout(self.grant.valid_until - now, renewal).await {
                Ok(Ok(true)) => {
                    self.grant.valid_until = now + duration;
                    next = now + renew_every;
                }
                Ok(Ok(false)) => {
                    self.lost(lease_lost(
                        "the lease expired or another client took it over".to_owned(),
                    ));
                    return;
                }
                Ok(Err(e)) => {
                    // Retried until the lease would expire: a short outage of the store keeps it.
                    tracing::warn!(error = %e, "renewing the lease failed; retrying");
                    next = now + (renew_every / 4).max(Duration::from_millis(20));
                }
                Err(_) => next = now, // the deadline passed: lost at the top of the loop
            }
        }
    }

    /// Stop streaming: no more writes, every stream yields `error` next (before any event it
    /// had queued) and ends.
    fn lost(&self, error: Error) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.replay.lose_lease(self.grant.epoch, None);
        tracing::warn!(owner = %self.grant.owner, epoch = self.grant.epoch, error = %error, "lease lost: this client stops streaming");
        // Nothing queued is handed out any more: the new holder redelivers it.
        shared.inbox.abort(error);
        if let Some(commands) = self.commands.upgrade() {
            let (reply, _) = oneshot::channel();
            let _ = commands.send(Command::Close { reply });
        }
    }

    async fn release(&self) {
        let LeaseTiming { duration, .. } = self.config.timing;
        if let Some(shared) = self.shared.upgrade() {
            // What the session processed is stored under the lease before it goes (close()
            // has flushed already; a session whose handles were all dropped may not have).
            let _ = tokio::time::timeout(duration, shared.replay.flush()).await;
            // Only this session's epoch: the client may have been re-opened under a newer
            // lease meanwhile (this keeper was slow to release), which must stay untouched.
            // The store release below is then a no-op (it checks owner and epoch).
            shared.replay.lose_lease(self.grant.epoch, None);
        }
        let release = self
            .config
            .lease
            .release(&self.grant.owner, self.grant.epoch);
        match tokio::time::timeout(duration, release).await {
            Ok(Ok(())) => tracing::info!(owner = %self.grant.owner, "lease released"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing the lease failed; it expires by itself")
            }
            Err(_) => tracing::warn!("releasing the lease timed out; it expires by itself"),
        }
    }
}

fn lease_lost(message: String) -> Error {
    Error::new(ErrorKind::LeaseLost, message)
}
