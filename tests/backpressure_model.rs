//! Property-based test of backpressure through the public API, against the scripted server of
//! `common::mock`: random sequences of connect responses (events on a channel read through its
//! `Subscription` and on a detached one read through `receive()`), partial reads of either
//! stream and a detach of the first. After every step:
//!
//! - `pending_count()` is what was delivered and not taken;
//! - while it is below `max_pending_count` the connect loop runs (a `/meta/connect` comes),
//!   and while it is at or above, no connect is sent and the state is `Paused`;
//! - every event is taken once, in order per channel, and `receive()` takes the oldest first.
//!
//! Each case opens a client on a mock transport; 256 cases take about 3 s.

mod common;

use common::mock::{Exchange, MockServer, event, open, subscribe};
use common::within;
use futures::StreamExt;
use proptest::prelude::*;
use sfstream::{Client, ConnectionState, Events, Subscription};
use std::collections::VecDeque;

const A: &str = "/event/A__e";
const B: &str = "/event/B__e";

#[derive(Debug, Clone)]
enum Op {
    /// Answer the waiting connect with this many events on A, then on B.
    Respond(usize, usize),
    /// Take up to this many events from A's `Subscription` (while it has one).
    TakeA(usize),
    /// Take up to this many events from `receive()`.
    Receive(usize),
    DetachA,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize, 0..4usize).prop_map(|(a, b)| Op::Respond(a, b)),
        3 => (1..4usize).prop_map(Op::TakeA),
        3 => (1..4usize).prop_map(Op::Receive),
        1 => Just(Op::DetachA),
    ]
}

struct Model {
    client: Client,
    server: MockServer,
    max_pending: usize,
    a: Option<Subscription>,
    receive: Events,
    /// The connect the client sent and the server has not answered.
    connect: Option<Exchange>,
    /// Queued (arrival number, replay id) per channel.
    queued: [VecDeque<(u64, i64)>; 2],
    published: [i64; 2],
    arrivals: u64,
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

impl Model {
    async fn open(max_pending: usize) -> Self {
        let (client, mut server) = open(max_pending).await;
        let mut subs = Vec::new();
        for channel in [A, B] {
            subs.push(subscribe(&client, &mut server, channel).await);
        }
        subs.pop().unwrap().detach();
        let receive = client.receive().unwrap();
        Model {
            a: subs.pop(),
            receive,
            client,
            server,
            max_pending,
            connect: None,
            queued: Default::default(),
            published: [0; 2],
            arrivals: 0,
        }
    }

    fn pending(&self) -> usize {
        self.queued.iter().map(VecDeque::len).sum()
    }

    async fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Respond(na, nb) => {
                if let Some(connect) = self.connect.take() {
                    let mut events = Vec::new();
                    for (ch, n) in [(0, na), (1, nb)] {
                        for _ in 0..n {
                            self.published[ch] += 1;
                            self.arrivals += 1;
                            self.queued[ch].push_back((self.arrivals, self.published[ch]));
                            events.push(event([A, B][ch], self.published[ch]));
                        }
                    }
                    connect.ok_with(events);
                }
            }
            Op::TakeA(n) => {
                if let Some(sub) = &mut self.a {
                    for _ in 0..n.min(self.queued[0].len()) {
                        let e = within("an event queued for A", sub.next()).await;
                        let id = e.unwrap().unwrap().replay_id();
                        let expected = self.queued[0].pop_front().map(|(_, id)| id);
                        prop_assert_eq!(id, expected, "A: out of order, lost or twice");
                    }
                }
            }
            Op::Receive(n) => {
                for _ in 0..n {
                    // The oldest event across the detached channels.
                    let detached = [self.a.is_none(), true];
                    let Some(ch) = (0..2)
                        .filter(|c| detached[*c])
                        .filter(|c| !self.queued[*c].is_empty())
                        .min_by_key(|c| self.queued[*c][0].0)
                    else {
                        break;
                    };
                    let e = within("a queued event", self.receive.next()).await;
                    let e = e.unwrap().unwrap();
                    prop_assert_eq!(e.channel(), [A, B][ch], "receive(): not the oldest");
                    let expected = self.queued[ch].pop_front().map(|(_, id)| id);
                    prop_assert_eq!(e.replay_id(), expected, "out of order, lost or twice");
                }
            }
            Op::DetachA => {
                if let Some(sub) = self.a.take() {
                    sub.detach();
                }
            }
        }
        self.check().await
    }

    async fn check(&mut self) -> Result<(), TestCaseError> {
        let pending = self.pending();
        within("the client sees what was delivered", async {
            while self.client.pending_count() != pending {
                tokio::task::yield_now().await;
            }
        })
        .await;
        if pending < self.max_pending {
            // Room: the connect loop runs.
            if self.connect.is_none() {
                let next = within("a connect once there is room", async {
                    self.server.next_on("/meta/connect").await
                })
                .await;
                self.connect = Some(next);
            }
        } else {
            prop_assert!(self.connect.is_none(), "the model answered it");
            within("the paused state", async {
                while !matches!(self.client.state(), ConnectionState::Paused { .. }) {
                    tokio::task::yield_now().await;
                }
            })
            .await;
            settle().await;
            prop_assert!(
                !self.server.has_waiting("/meta/connect"),
                "a connect was sent with {pending} pending (limit {})",
                self.max_pending
            );
        }
        Ok(())
    }

    /// Everything is read: the loop runs and nothing was lost.
    async fn finish(&mut self) -> Result<(), TestCaseError> {
        self.step(Op::TakeA(usize::MAX)).await?;
        self.step(Op::DetachA).await?;
        self.step(Op::Receive(usize::MAX)).await?;
        prop_assert_eq!(self.client.pending_count(), 0);
        prop_assert!(self.connect.is_some());
        Ok(())
    }
}

proptest! {
    // PROPTEST_CASES overrides the default of 256.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn the_connect_loop_pauses_at_the_limit_and_resumes_when_readers_drain(
        max_pending in 1..6usize,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut model = Model::open(max_pending).await;
            model.check().await?;
            for op in ops {
                model.step(op).await?;
            }
            model.finish().await
        })?;
    }
}
