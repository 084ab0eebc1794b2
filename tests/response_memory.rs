//! What reading a large response allocates on the client's thread. Large short-lived blocks
//! per response (a joined copy of the body, a messages vector presized for 40 times the
//! events) left holes in the heap that queued events split up, so a stalled consumer's RSS
//! went past the README's memory bound. One test in this binary: its allocator counts only
//! the test thread's allocations, and the emulator runs on a thread of its own.

use futures::StreamExt;
use serde_json::json;
use sfstream::Client;
use sfstream::auth::AccessToken;
use sfstream::emulator::Emulator;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Blocks at least this large are counted: half of one response body below.
const LARGE: usize = 1 << 20;

static LARGE_BLOCKS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

struct CountLarge;

impl CountLarge {
    fn note(size: usize) {
        if size >= LARGE && COUNTING.with(Cell::get) {
            LARGE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is passed on to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            Self::note(new_size);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountLarge = CountLarge;

const CHANNEL: &str = "/event/Large__e";
/// Events per response and responses: 100 events of ~20 KB make responses of ~2 MB.
const PER_RESPONSE: usize = 100;
const RESPONSES: usize = 6;

#[test]
fn successive_large_responses_allocate_no_body_sized_block_after_the_first() {
    let (emu_tx, emu_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let emu = Emulator::builder()
                .max_batch(Some(PER_RESPONSE))
                .start()
                .await
                .unwrap();
            emu_tx.send(emu.clone()).unwrap();
            let _ = stop_rx.await;
            emu.shutdown().await;
        });
    });
    let emu: Emulator = emu_rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let blocks = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), async {
            let token = AccessToken::new(emu.issue_token(), emu.instance_url().parse().unwrap());
            let client = Client::builder(token)
                .api_version(emu.api_version())
                .max_pending_count(PER_RESPONSE)
                .connect()
                .await
                .unwrap();
            let mut events = client.subscribe(CHANNEL).await.unwrap();
            emu.wait_until(|s| s.subscribes >= 1 && s.held_connects >= 1)
                .await;
            let notes = "x".repeat(20_000);
            emu.push_generated(
                CHANNEL,
                PER_RESPONSE * RESPONSES,
                move |id| json!({"Order_Number__c": format!("ORD-{id:07}"), "Notes__c": notes}),
            );
            COUNTING.with(|c| c.set(true));
            for _ in 0..PER_RESPONSE * RESPONSES {
                let event = events.next().await.unwrap().unwrap();
                assert!(event.data().get().len() > 20_000);
            }
            COUNTING.with(|c| c.set(false));
            client.close().await.unwrap();
            LARGE_BLOCKS.load(Ordering::Relaxed)
        })
        .await
        .expect("the events within 120 s")
    });
    let _ = stop_tx.send(());
    server.join().unwrap();
    // The first response sizes the body buffer that every later one reuses; nothing else
    // of a response's size is allocated.
    assert!(
        blocks <= 1,
        "{blocks} blocks of 1 MiB or more for {RESPONSES} responses of about 2 MB"
    );
}
