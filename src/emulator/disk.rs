//! Retention kept on disk ([`EmulatorBuilder::retention_file`](super::EmulatorBuilder::retention_file)):
//! every retained event appended as one JSON line, read back when an emulator starts, so a
//! restarted emulator replays what the last one retained and continues its replay ids.
//!
//! A line is `{"channel":<base channel>,"replayId":<id>,"event":<the event message as text>}`.
//! Each line is written with one `write` call, so a killed emulator loses nothing it answered
//! for; an unfinished last line (a power loss mid-write) is skipped when read.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One retained event as stored.
#[derive(Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) channel: String,
    #[serde(rename = "replayId")]
    pub(crate) replay_id: i64,
    pub(crate) event: String,
}

/// The open retention file.
pub(crate) struct RetentionFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl RetentionFile {
    /// Open (or create) `path` for appending, with the records it already holds, in order.
    pub(crate) fn open(path: &Path) -> io::Result<(RetentionFile, Vec<Record>)> {
        let mut records = Vec::new();
        match File::open(path) {
            Ok(existing) => {
                for line in BufReader::new(existing).lines() {
                    // An unreadable line can only be a torn last write: what came before holds.
                    match serde_json::from_str::<Record>(&line?) {
                        Ok(record) => records.push(record),
                        Err(e) => tracing::warn!(
                            path = %path.display(),
                            "skipping an unreadable line of the retention file: {e}"
                        ),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let file = RetentionFile {
            path: path.to_owned(),
            file: Mutex::new(file),
        };
        Ok((file, records))
    }

    /// Append one retained event. A failed write is logged, not fatal: the event is still
    /// published, only a restart would not replay it.
    pub(crate) fn append(&self, channel: &str, replay_id: i64, event: &Bytes) {
        let record = Record {
            channel: channel.to_owned(),
            replay_id,
            event: String::from_utf8_lossy(event).into_owned(),
        };
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(&line) {
            tracing::warn!(path = %self.path.display(), "cannot append to the retention file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_a_torn_last_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("sfstream-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("retention.jsonl");
        let _ = std::fs::remove_file(&path);
        let (file, records) = RetentionFile::open(&path).unwrap();
        assert!(records.is_empty());
        file.append(
            "/event/A__e",
            1,
            &Bytes::from_static(br#"{"channel":"/event/A__e"}"#),
        );
        file.append("/event/A__e", 2, &Bytes::from_static(b"{}"));
        drop(file);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"channel":"/event/A__e","repl"#)
            .unwrap();
        let (_, records) = RetentionFile::open(&path).unwrap();
        let ids: Vec<i64> = records.iter().map(|r| r.replay_id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(records[0].event, r#"{"channel":"/event/A__e"}"#);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
