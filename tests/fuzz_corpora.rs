//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same harnesses the
//! `cargo fuzz` targets run, so an input that once found new coverage keeps being checked on
//! stable: a change that makes one of them panic fails here, without nightly.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    entries.sort();
    assert!(
        !entries.is_empty(),
        "{}: the corpus is empty",
        dir.display()
    );
    let failed: Vec<String> = entries
        .iter()
        .filter(|path| {
            let input = std::fs::read(path).expect("a corpus file");
            catch_unwind(AssertUnwindSafe(|| harness(&input))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus inputs panic (reproduce with `cargo fuzz run {target} <file>`): {failed:#?}",
        failed.len(),
        entries.len()
    );
}

#[test]
fn batch_corpus() {
    replay("batch", sfstream::fuzzing::batch);
}

#[test]
fn server_error_corpus() {
    replay("server_error", sfstream::fuzzing::server_error);
}

#[test]
fn advice_corpus() {
    replay("advice", sfstream::fuzzing::advice);
}

#[test]
fn replay_marker_corpus() {
    replay("replay_marker", sfstream::fuzzing::replay_marker);
}

#[test]
fn file_storage_corpus() {
    replay("file_storage", sfstream::fuzzing::file_storage);
}

#[test]
fn token_reply_corpus() {
    replay("token_reply", sfstream::fuzzing::token_reply);
}
