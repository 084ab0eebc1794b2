//! The replay gap's restart marker against the marker writer: a storage whose `set` of one
//! marker waits for the test, so that the interleavings are driven, not hoped for.

use super::*;
use crate::replay::MappingStorage;
use futures::future::BoxFuture;
use std::sync::atomic::AtomicBool;
use tokio::sync::oneshot;

const CH: &str = "/event/A__e";

/// A `MappingStorage` whose first `set` of replay id `gated` says so on `entered`, waits for
/// `release`, and then fails if `fail` is set. Every `set` is recorded in `history`.
struct Gated {
    map: MappingStorage,
    gated: i64,
    fail: AtomicBool,
    entered: Mutex<Option<oneshot::Sender<()>>>,
    release: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
    history: Mutex<Vec<i64>>,
}

impl ReplayStorage for Gated {
    fn get<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<ReplayMarker>>> {
        self.map.get(subscription)
    }

    fn set<'a>(&'a self, subscription: &'a str, marker: ReplayMarker) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.history.lock().unwrap().push(marker.replay_id);
            if marker.replay_id == self.gated {
                let entered = self.entered.lock().unwrap().take();
                if let Some(entered) = entered {
                    let _ = entered.send(());
                    let release = self.release.lock().await.take();
                    if let Some(release) = release {
                        let _ = release.await;
                    }
                    if self.fail.swap(false, Ordering::SeqCst) {
                        return Err(Error::new(ErrorKind::Replay, "the test's storage failed"));
                    }
                }
            }
            self.map.set(subscription, marker).await
        })
    }
}

fn ev(id: i64, date: &str) -> Data {
    Data::from_json(serde_json::json!({"event": {"replayId": id, "createdDate": date}}).to_string())
        .unwrap()
}

struct Setup {
    state: Arc<ReplayState>,
    storage: Arc<Gated>,
    entered: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

/// Stored: the expired id 50 (read by a subscribe); the `set` of 60 waits for the test.
async fn setup(fail: bool) -> Setup {
    let (entered_tx, entered) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    let map = MappingStorage::new();
    map.map().lock().unwrap().insert(
        CH.into(),
        ReplayMarker::of(&ev(50, "2026-11-28T07:00:50Z")).unwrap(),
    );
    let storage = Arc::new(Gated {
        map,
        gated: 60,
        fail: AtomicBool::new(fail),
        entered: Mutex::new(Some(entered_tx)),
        release: tokio::sync::Mutex::new(Some(release_rx)),
        history: Mutex::new(Vec::new()),
    });
    let state = Arc::new(ReplayState::new(
        Some(storage.clone()),
        ReplayOption::AllEvents,
        Some(ReplayOption::AllEvents),
        CommitPolicy::OnReceive,
    ));
    assert_eq!(state.start_id(CH).await.unwrap(), 50);
    Setup {
        state,
        storage,
        entered,
        release,
    }
}

fn gap() -> ReplayGap {
    ReplayGap {
        channel: CH.into(),
        rejected_id: Some(50),
        fallback_id: -2,
    }
}

fn stored(storage: &Gated) -> i64 {
    storage.map.map().lock().unwrap()[CH].replay_id
}

/// Commits 60, whose `set` waits; while the writer is inside it, commits `older` (if any) and
/// hands out the notice of the gap that rejected 50; then lets the writer go and flushes.
/// What is stored then, and every `set` the storage saw.
async fn gap_while_60_is_written(fail: bool, older: Option<Data>) -> (i64, Vec<i64>) {
    let Setup {
        state,
        storage,
        entered,
        release,
    } = setup(fail).await;
    state.commit(CH, &ev(60, "2026-11-28T07:01:00Z"));
    entered.await.unwrap(); // the writer is inside `set(60)`
    if let Some(older) = older {
        state.commit(CH, &older);
    }
    state.gap_handed_out(&gap());
    release.send(()).unwrap();
    // A first writer that fails stops; flush retries once.
    state.flush().await.unwrap();
    let history = storage.history.lock().unwrap().clone();
    (stored(&storage), history)
}

/// The notice of a gap that rejected 50 is handed out while the writer is storing 60, an event
/// committed past it (another filter of the topic, say): the writer holds 60 in neither
/// `dirty` nor `stored` then. The restart marker must not be written after 60, or a restart
/// would begin at -2 (or at -1, skipping everything after 60 not processed yet).
#[tokio::test]
async fn a_gap_notice_handed_out_while_a_newer_marker_is_being_written_does_not_overwrite_it() {
    let (stored, history) = gap_while_60_is_written(false, None).await;
    assert_eq!(stored, 60);
    assert_eq!(history, [60], "no restart marker written");
}

/// As above, but a slower filter of the topic then hands out the older event 45 (`OnReceive`
/// commits it), so the last commit is before the gap and the restart is queued: the writer,
/// having stored 60 meanwhile, must drop the restart instead of writing it over 60.
#[tokio::test]
async fn a_gap_restart_queued_after_an_older_commit_is_not_written_over_a_newer_marker() {
    let older = ev(45, "2026-11-28T07:00:45Z");
    let (stored, history) = gap_while_60_is_written(false, Some(older)).await;
    assert_eq!(stored, 60);
    assert_eq!(history, [60], "no restart marker written");
}

/// As above, but the write of 60 fails: the writer gives 60 back to be written again, and the
/// restart queued meanwhile must not win over it.
#[tokio::test]
async fn a_failed_write_of_a_newer_marker_is_retried_instead_of_the_gap_restart() {
    let older = ev(45, "2026-11-28T07:00:45Z");
    let (stored, history) = gap_while_60_is_written(true, Some(older)).await;
    assert_eq!(stored, 60);
    assert_eq!(history, [60, 60], "60 written again, no restart marker");
}

/// Without anything past the gap, the restart is still written (the fix for the crash loop
/// stays): the stored expired id is replaced by the fallback.
#[tokio::test]
async fn without_a_newer_commit_the_gap_restart_replaces_the_expired_marker() {
    let Setup { state, storage, .. } = setup(false).await;
    state.gap_handed_out(&gap());
    state.flush().await.unwrap();
    assert_eq!(stored(&storage), -2);
}
