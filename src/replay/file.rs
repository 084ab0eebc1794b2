use super::marker::{format_date, parse_date};
use super::{ReplayMarker, ReplayStorage};
use crate::error::{Error, ErrorKind, Result};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Markers in a JSON file that a restarted process resumes from.
///
/// Every `set` writes the whole file to a temporary file in the same directory, fsyncs it,
/// renames it over the old one and fsyncs the directory, so a crash at any moment leaves either
/// the old file or the new one, never a torn one. Writes are coalesced by the client (see
/// [`CommitPolicy`](super::CommitPolicy)), so the fsync cost does not bound the event rate.
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
        let path = path.as_ref().to_path_buf();
        let markers = match fs::read(&path) {
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
        Ok(FileStorage {
            inner: Arc::new(Inner {
                path,
                markers: Mutex::new(markers),
            }),
        })
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
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp"));
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
