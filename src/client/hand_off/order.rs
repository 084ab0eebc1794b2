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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{CommitPolicy, MappingStorage, ReplayOption};

    fn ev(id: i64) -> Data {
        Data::from_json(format!(r#"{{"event":{{"replayId":{id}}}}}"#)).unwrap()
    }

    /// Acks in any order store the acked front only; an event never acked holds the marker and
    /// costs at most two runs, however many are acked after it.
    #[tokio::test]
    async fn acks_store_the_acked_front_in_hand_out_order() {
        let storage = MappingStorage::new();
        let map = storage.map().clone();
        let replay = Arc::new(ReplayState::new(
            Some(Arc::new(storage)),
            ReplayOption::AllEvents,
            None,
            CommitPolicy::OnReceive,
        ));
        let order = Order::new(replay.clone());
        let n: Vec<u64> = (1..=5)
            .map(|id| order.push("/event/A__e", &ev(id)))
            .collect();
        let stored = || map.lock().unwrap().get("/event/A__e").map(|m| m.replay_id);
        order.done(n[1]);
        order.done(n[2]);
        replay.flush().await.unwrap();
        assert_eq!(stored(), None, "1 is not acked");
        order.done(n[0]);
        order.done(n[0]); // twice: nothing more
        replay.flush().await.unwrap();
        assert_eq!(stored(), Some(3));
        // 4 is never acked (its worker crashed): nothing after it is stored, in two runs.
        for id in 6..=100 {
            let number = order.push("/event/A__e", &ev(id));
            order.done(number);
        }
        order.done(n[4]);
        replay.flush().await.unwrap();
        assert_eq!(stored(), Some(3));
        assert_eq!(order.lock().runs.len(), 2);
        order.done(n[3]);
        replay.flush().await.unwrap();
        assert_eq!(stored(), Some(100));
        assert!(order.lock().runs.is_empty());
    }
}
