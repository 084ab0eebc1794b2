//! The order of a hand-off's events under `CommitPolicy::OnReceive`.
//!
//! `OnReceive` issues no tickets: its streams store each marker when they hand the event out.
//! A hand-off does not (its workers may still be on the event), so its acks store the markers
//! instead, in hand-out order: the stored marker moves to the newest event before which every
//! event handed out is acked, whatever order the workers ack in.

use crate::bayeux::Data;
use crate::replay::tracker::ReplayState;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub(super) struct Order {
    replay: Arc<ReplayState>,
    inner: Mutex<Runs>,
}

#[derive(Default)]
struct Runs {
    next: u64,
    /// Handed-out events not yet stored, oldest first. A pending run is one event; an acked run
    /// stands for consecutive acked events and keeps only the newest event per channel, so
    /// there are at most two runs per unacked event.
    runs: VecDeque<Run>,
}

struct Run {
    first: u64,
    last: u64,
    acked: bool,
    /// Per channel (a wildcard subscription has several), the newest event of the run.
    newest: Vec<(Arc<str>, Data)>,
}

impl Run {
    /// Take `later`'s events, which come after this run's.
    fn absorb(&mut self, later: Run) {
        self.last = later.last;
        for (channel, data) in later.newest {
            match self.newest.iter_mut().find(|(c, _)| *c == channel) {
                Some(slot) => slot.1 = data,
                None => self.newest.push((channel, data)),
            }
        }
    }
}

impl Order {
    pub(super) fn new(replay: Arc<ReplayState>) -> Self {
        Order {
            replay,
            inner: Mutex::new(Runs::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Runs> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An event is handed out: its number, to [`done`](Self::done) on ack.
    pub(super) fn push(&self, channel: &str, data: &Data) -> u64 {
        let mut inner = self.lock();
        let number = inner.next;
        inner.next += 1;
        inner.runs.push_back(Run {
            first: number,
            last: number,
            acked: false,
            newest: vec![(channel.into(), data.clone())],
        });
        number
    }

    /// Event `number` is acked: store the markers of the acked front.
    pub(super) fn done(&self, number: u64) {
        let mut inner = self.lock();
        let runs = &mut inner.runs;
        let Some(mut index) = runs.partition_point(|r| r.first <= number).checked_sub(1) else {
            return;
        };
        let run = &mut runs[index];
        if run.acked || run.last < number {
            return;
        }
        run.acked = true;
        if runs.get(index + 1).is_some_and(|r| r.acked)
            && let Some(next) = runs.remove(index + 1)
        {
            runs[index].absorb(next);
        }
        if index > 0
            && runs[index - 1].acked
            && let Some(run) = runs.remove(index)
        {
            index -= 1;
            runs[index].absorb(run);
        }
        if index == 0
            && let Some(front) = runs.pop_front()
        {
            // Stored under this lock, so that commits reach the tracker in order.
            for (channel, data) in &front.newest {
                self.replay.commit(channel, data);
            }
        }
    }
}
