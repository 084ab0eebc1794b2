use super::marker::{format_date, parse_date};
use super::{ReplayMarker, ReplayStorage};
use crate::error::{Error, ErrorKind, Result};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// Markers in a JSON file that a restarted process resumes from.
///
/// Every `set` writes the whole file to a temporary file in the same directory, fsyncs it,
/// renames it over the old one and fsyncs the directory, so a crash at any moment leaves either
/// the old file or the new one, never a torn one. The temporary file has an unpredictable name
/// and is created exclusively with mode `0600` (never through a planted symlink); a new replay
/// file is therefore private to its owner, and an existing file keeps the mode you gave it. The
/// write happens outside the lock that `get` takes, on a blocking thread. Writes are coalesced by the client (see
/// [`CommitPolicy`](super::CommitPolicy)), so the fsync cost does not bound the event rate.
///
/// One process owns a file at a time: `open` takes an advisory lock (a `.<name>.lock` file next
/// to it) and fails with [`ErrorKind::Replay`] while another process holds it. Within a
/// process, opening the same path again shares the one open storage, so two clients can use it
/// (with different channels) without overwriting each other.
///
/// ```no_run
/// # fn f(auth: sfstream::auth::AccessToken) -> sfstream::Result<()> {
/// use sfstream::replay::{FileStorage, ReplayOption};
/// let client = sfstream::Client::builder(auth)
///     .replay(ReplayOption::AllEvents)
///     .replay_storage(FileStorage::open("/var/lib/myapp/replay.json")?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FileStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// What the file holds; locked only briefly, never across I/O (`get` runs on the
    /// connection task).
    markers: Mutex<BTreeMap<String, ReplayMarker>>,
    /// One writer at a time, held across the file I/O (on a blocking thread only), so that a
    /// later snapshot is never overwritten by an earlier one.
    writer: Mutex<()>,
    /// Held open for the advisory lock; released when the last handle goes.
    _lock: File,
}

/// The storages open in this process, by absolute path.
static OPEN: Mutex<BTreeMap<PathBuf, Weak<Inner>>> = Mutex::new(BTreeMap::new());

fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // Resolve symlinks in the directory (the file itself may not exist yet).
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(path.clone()),
        _ => path,
    }
}

/// The markers in the file at `path` (none if it does not exist).
fn read_file(path: &Path) -> Result<BTreeMap<String, ReplayMarker>> {
    let markers = match fs::read(path) {
        Ok(bytes) => {
            let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| {
                replay_error(format!("{} is not a replay marker file", path.display()), e)
            })?;
            disk.markers
                .into_iter()
                .map(|(k, m)| {
                    let date = m.date.as_deref().and_then(parse_date);
                    (k, ReplayMarker::new(m.replay_id, date))
                })
                .collect()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(replay_error(format!("cannot read {}", path.display()), e)),
    };
    Ok(markers)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(".{name}{suffix}"))
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    markers: BTreeMap<String, DiskMarker>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiskMarker {
    replay_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    date: Option<String>,
}

fn replay_error(what: String, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Replay, what).with_source(e)
}

/// Open (or create, mode `0600`) the lock file without following a symlink, and only if it is
/// a regular file: a planted link must not make us open, create or lock anything else.
fn open_lock_file(path: &Path) -> Result<File> {
    let mut options = File::options();
    options.create(true).truncate(false).read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let cannot = |e| replay_error(format!("cannot open {}", path.display()), e);
    let file = options.open(path).map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(Error::new(
            ErrorKind::Replay,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

impl FileStorage {
    /// Open (or, if it does not exist, start) the file at `path`. A file that exists but cannot
    /// be read as markers is an error: starting over silently would replay or skip events.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = absolute(path.as_ref());
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(FileStorage { inner });
        }
        let lock_path = sibling(&path, ".lock");
        let lock = open_lock_file(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::Replay,
                    format!("{} is in use by another process", path.display()),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(replay_error(
                    format!("cannot lock {}", lock_path.display()),
                    e,
                ));
            }
        }
        let markers = read_file(&path)?;
        let inner = Arc::new(Inner {
            path: path.clone(),
            markers: Mutex::new(markers),
            writer: Mutex::new(()),
            _lock: lock,
        });
        open.retain(|_, w| w.strong_count() > 0);
        open.insert(path, Arc::downgrade(&inner));
        Ok(FileStorage { inner })
    }

    /// Read the markers of a file without opening it for writing (no lock): for tools and
    /// monitoring while a client owns the file.
    pub fn read(path: impl AsRef<Path>) -> Result<BTreeMap<String, ReplayMarker>> {
        read_file(path.as_ref())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Every stored marker.
    pub fn markers(&self) -> BTreeMap<String, ReplayMarker> {
        self.inner
            .markers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Inner {
    /// Write a snapshot with `marker` in it, then remember it: memory changes only once the
    /// file has it, so a failure (a panic included) leaves both as they were.
    fn store(&self, subscription: &str, marker: ReplayMarker) -> Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut snapshot = self
            .markers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        snapshot.insert(subscription.to_owned(), marker);
        self.write(&snapshot)?;
        self.markers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(subscription.to_owned(), marker);
        Ok(())
    }

    fn write(&self, markers: &BTreeMap<String, ReplayMarker>) -> Result<()> {
        let disk = OnDisk {
            version: 1,
            markers: markers
                .iter()
                .map(|(k, m)| {
                    let date = m.date.map(format_date);
                    (
                        k.clone(),
                        DiskMarker {
                            replay_id: m.replay_id,
                            date,
                        },
                    )
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&disk)
            .map_err(|e| replay_error("cannot serialize replay markers".into(), e))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let io = |what: &str, e: std::io::Error| {
            replay_error(format!("{what} a temporary file in {}", dir.display()), e)
        };
        // Random name, O_EXCL, mode 0600: nothing planted in the directory can be followed.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| io("cannot create", e))?;
        // A replay file whose mode its owner chose (e.g. group-readable) keeps it.
        if let Ok(meta) = fs::symlink_metadata(&self.path)
            && meta.is_file()
        {
            tmp.as_file()
                .set_permissions(meta.permissions())
                .map_err(|e| io("cannot set the mode of", e))?;
        }
        tmp.write_all(&bytes).map_err(|e| io("cannot write", e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| io("cannot fsync", e))?;
        tmp.persist(&self.path).map_err(|e| {
            replay_error(
                format!("cannot rename a temporary file to {}", self.path.display()),
                e.error,
            )
        })?;
        // The rename itself must reach the disk; not every platform lets a directory be synced.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl ReplayStorage for FileStorage {
    fn get<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<ReplayMarker>>> {
        Box::pin(async move {
            Ok(self
                .inner
                .markers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(subscription)
                .copied())
        })
    }

    fn set<'a>(&'a self, subscription: &'a str, marker: ReplayMarker) -> BoxFuture<'a, Result<()>> {
        let inner = self.inner.clone();
        let subscription = subscription.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.store(&subscription, marker))
                .await
                .map_err(|e| replay_error("the replay file writer stopped".into(), e))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_is_not_blocked_by_a_write_in_progress() {
        let dir = std::env::temp_dir().join(format!("sfstream-file-get-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let storage = FileStorage::open(dir.join("replay.json")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(storage.set("/a", ReplayMarker::new(1, None)))
            .unwrap();
        // A write in progress (its fsyncs may take long) holds the writer lock only.
        let writing = storage.inner.writer.lock().unwrap();
        let got = rt.block_on(storage.get("/a")).unwrap();
        assert_eq!(got.map(|m| m.replay_id), Some(1));
        assert_eq!(storage.markers().len(), 1);
        drop(writing);
        drop(storage);
        let _ = fs::remove_dir_all(&dir);
    }
}
