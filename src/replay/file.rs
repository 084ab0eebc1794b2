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
/// the old file or the new one, never a torn one. Writes are coalesced by the client (see
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
    markers: Mutex<BTreeMap<String, ReplayMarker>>,
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
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| replay_error(format!("cannot open {}", lock_path.display()), e))?;
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
    /// Store under the lock so that concurrent writers never share the temporary file.
    fn store(&self, subscription: &str, marker: ReplayMarker) -> Result<()> {
        let mut markers = self.markers.lock().unwrap_or_else(|p| p.into_inner());
        let previous = markers.insert(subscription.to_owned(), marker);
        let result = self.write(&markers);
        if result.is_err() {
            // Keep memory equal to the file.
            match previous {
                Some(p) => markers.insert(subscription.to_owned(), p),
                None => markers.remove(subscription),
            };
        }
        result
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
        let tmp = sibling(&self.path, ".tmp");
        let io =
            |what: &str, e: std::io::Error| replay_error(format!("{what} {}", tmp.display()), e);
        let mut file = File::create(&tmp).map_err(|e| io("cannot create", e))?;
        file.write_all(&bytes).map_err(|e| io("cannot write", e))?;
        file.sync_all().map_err(|e| io("cannot fsync", e))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(|e| {
            replay_error(
                format!("cannot rename {} to {}", tmp.display(), self.path.display()),
                e,
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
