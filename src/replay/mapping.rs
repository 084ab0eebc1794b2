use super::{ReplayMarker, ReplayStorage};
use crate::error::Result;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The shared map a [`MappingStorage`] keeps markers in: inspect or pre-fill it yourself.
pub type MarkerMap = Arc<Mutex<HashMap<String, ReplayMarker>>>;

/// Markers in a map you can share (aiosfstream's `MappingStorage`). Not durable by itself.
///
/// Pre-filling the map is one way to start a channel from a specific replay id:
///
/// ```
/// use sfstream::replay::{MappingStorage, ReplayMarker};
/// let storage = MappingStorage::new();
/// storage.map().lock().unwrap().insert("/event/Order__e".into(), ReplayMarker::new(1234, None));
/// ```
#[derive(Debug, Clone, Default)]
pub struct MappingStorage {
    map: MarkerMap,
}

impl MappingStorage {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep markers in `map`.
    pub fn from_map(map: MarkerMap) -> Self {
        MappingStorage { map }
    }

    /// The map itself.
    pub fn map(&self) -> &MarkerMap {
        &self.map
    }

    fn lookup(&self, subscription: &str) -> Option<ReplayMarker> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(subscription)
            .copied()
    }

    fn store(&self, subscription: &str, marker: ReplayMarker) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(subscription.to_owned(), marker);
    }
}

impl ReplayStorage for MappingStorage {
    fn get<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<ReplayMarker>>> {
        Box::pin(async move { Ok(self.lookup(subscription)) })
    }

    fn set<'a>(&'a self, subscription: &'a str, marker: ReplayMarker) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.store(subscription, marker);
            Ok(())
        })
    }
}

/// A [`MappingStorage`] that answers `default_id` for a channel it has nothing for
/// (aiosfstream's `DefaultMappingStorage`): "resume where we were, or else start after
/// `default_id`".
///
/// ```
/// use sfstream::replay::DefaultMappingStorage;
/// // Channels never seen start after replay id 1234 (or use -2 for all retained events).
/// let storage = DefaultMappingStorage::new(1234);
/// ```
#[derive(Debug, Clone)]
pub struct DefaultMappingStorage {
    inner: MappingStorage,
    default_id: i64,
}

impl DefaultMappingStorage {
    /// An empty map with a default replay id.
    pub fn new(default_id: i64) -> Self {
        Self::from_map(MarkerMap::default(), default_id)
    }

    /// Keep markers in `map`, answering `default_id` for missing channels.
    pub fn from_map(map: MarkerMap, default_id: i64) -> Self {
        DefaultMappingStorage {
            inner: MappingStorage::from_map(map),
            default_id,
        }
    }

    /// The map itself.
    pub fn map(&self) -> &MarkerMap {
        self.inner.map()
    }
}

impl ReplayStorage for DefaultMappingStorage {
    fn get<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<ReplayMarker>>> {
        Box::pin(async move {
            Ok(Some(
                self.inner
                    .lookup(subscription)
                    .unwrap_or(ReplayMarker::new(self.default_id, None)),
            ))
        })
    }

    fn set<'a>(&'a self, subscription: &'a str, marker: ReplayMarker) -> BoxFuture<'a, Result<()>> {
        self.inner.set(subscription, marker)
    }
}

/// Always the same replay id, nothing stored (aiosfstream's `ConstantReplayId`).
///
/// ```
/// let storage = sfstream::replay::ConstantReplayId::new(-2);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ConstantReplayId(i64);

impl ConstantReplayId {
    /// Every subscribe uses `replay_id`.
    pub fn new(replay_id: i64) -> Self {
        ConstantReplayId(replay_id)
    }
}

impl ReplayStorage for ConstantReplayId {
    fn get<'a>(&'a self, _subscription: &'a str) -> BoxFuture<'a, Result<Option<ReplayMarker>>> {
        let id = self.0;
        Box::pin(async move { Ok(Some(ReplayMarker::new(id, None))) })
    }

    fn set<'a>(
        &'a self,
        _subscription: &'a str,
        _marker: ReplayMarker,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}
