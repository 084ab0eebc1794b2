//! One channel's event log: replay id assignment, retention by count and age, and the replay
//! semantics of `/meta/subscribe` (`-1` new events, `-2` everything retained, `N` after N).

use bytes::Bytes;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayFrom {
    /// `-1`, or no replay extension: new events only.
    New,
    /// `-2`: every retained event, then new ones.
    All,
    /// `N`: retained events with a replay id above N, then new ones.
    After(i64),
}

impl ReplayFrom {
    /// Read a replay map value; `Err` carries the text to quote in the error string.
    pub(crate) fn parse(value: &Value) -> Result<ReplayFrom, String> {
        let n = match value {
            Value::Number(n) => n.as_i64(),
            // Some clients send ids as strings; Salesforce parses them as longs.
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n {
            Some(-1) => Ok(ReplayFrom::New),
            Some(-2) => Ok(ReplayFrom::All),
            Some(n) if n >= 0 => Ok(ReplayFrom::After(n)),
            _ => Err(match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        }
    }
}

/// The error string of a replay id outside the retention window, exactly as Salesforce words it
/// (two spaces after "invalid.").
pub(crate) fn invalid_replay_id(id: &str) -> String {
    format!(
        "400::The replayId {{{id}}} you provided was invalid.  Please provide a valid ID, -2 to replay all events, or -1 to replay only new events."
    )
}

/// The error string of a replay map without an entry for the subscribed channel.
pub(crate) fn replay_id_not_found(channel: &str, map: &Value) -> String {
    format!(
        "400::The replayId for channel {{{channel}}} wasn't found using the provided replay ID map {{{map}}}."
    )
}

struct Retained {
    replay_id: i64,
    at: Instant,
    event: Bytes,
}

/// A channel: its retained events, its replay id counter and its subscribers.
pub(crate) struct ChannelLog {
    /// The channel name, shared with every queued event so unsubscribe can drop them.
    pub(crate) name: Arc<str>,
    /// Client ids of the sessions subscribed to this channel.
    pub(crate) subscribers: HashSet<String>,
    next_id: i64,
    step: i64,
    latest: Option<i64>,
    log: VecDeque<Retained>,
}

impl ChannelLog {
    pub(crate) fn new(name: &str, start: i64, step: i64) -> Self {
        ChannelLog {
            name: Arc::from(name),
            subscribers: HashSet::new(),
            next_id: start,
            step: step.max(1),
            latest: None,
            log: VecDeque::new(),
        }
    }

    /// The next replay id; ids are handed out when an event is built, even if it is pushed later.
    pub(crate) fn assign_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(self.step);
        id
    }

    /// Hand out `count` replay ids at once for events that are never retained; returns the
    /// first. The last of them becomes the latest id, so a resume from it is valid.
    pub(crate) fn reserve(&mut self, count: usize) -> i64 {
        let first = self.next_id;
        let span = self
            .step
            .saturating_mul(i64::try_from(count).unwrap_or(i64::MAX));
        self.next_id = first.saturating_add(span);
        if count > 0 {
            let last = self.next_id.saturating_sub(self.step);
            self.latest = Some(self.latest.map_or(last, |l| l.max(last)));
        }
        first
    }

    /// The distance between consecutive replay ids.
    pub(crate) fn step(&self) -> i64 {
        self.step
    }

    /// Retain a published event, dropping the oldest beyond `max_count`.
    pub(crate) fn retain(&mut self, replay_id: i64, at: Instant, event: Bytes, max_count: usize) {
        self.latest = Some(self.latest.map_or(replay_id, |l| l.max(replay_id)));
        if max_count == 0 {
            return;
        }
        while self.log.len() >= max_count {
            self.log.pop_front();
        }
        self.log.push_back(Retained {
            replay_id,
            at,
            event,
        });
    }

    /// Retain an event read back from a retention file; later ids continue after it.
    pub(crate) fn restore(&mut self, replay_id: i64, at: Instant, event: Bytes, max_count: usize) {
        self.next_id = self.next_id.max(replay_id.saturating_add(self.step));
        self.retain(replay_id, at, event, max_count);
    }

    /// Drop events older than `max_age` at virtual time `now`.
    pub(crate) fn trim(&mut self, now: Instant, max_age: Duration) {
        while let Some(front) = self.log.front() {
            if now.saturating_duration_since(front.at) > max_age {
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    /// Drop events with a replay id up to and including `through`.
    pub(crate) fn expire_through(&mut self, through: i64) {
        self.log.retain(|r| r.replay_id > through);
    }

    /// The retained events a subscription starting at `from` gets first, or Salesforce's error
    /// string when `N` is outside the window: the channel never had events, events after N were
    /// dropped, or N is ahead of the latest event.
    pub(crate) fn backlog(&self, from: ReplayFrom) -> Result<Vec<Bytes>, String> {
        match from {
            ReplayFrom::New => Ok(Vec::new()),
            ReplayFrom::All => Ok(self.log.iter().map(|r| r.event.clone()).collect()),
            ReplayFrom::After(n) => {
                let invalid = || invalid_replay_id(&n.to_string());
                let latest = self.latest.ok_or_else(invalid)?;
                // With nothing retained, only the latest id itself is a valid resume point.
                let oldest = self
                    .log
                    .front()
                    .map_or(latest.saturating_add(self.step), |r| r.replay_id);
                if n > latest || n < oldest.saturating_sub(self.step) {
                    return Err(invalid());
                }
                Ok(self
                    .log
                    .iter()
                    .filter(|r| r.replay_id > n)
                    .map(|r| r.event.clone())
                    .collect())
            }
        }
    }

    /// The number of retained events.
    pub(crate) fn retained(&self) -> usize {
        self.log.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log_with(ids: std::ops::RangeInclusive<i64>, max: usize) -> (ChannelLog, Instant) {
        let now = Instant::now();
        let mut c = ChannelLog::new("/u/x", *ids.start(), 1);
        for _ in ids {
            let id = c.assign_id();
            c.retain(id, now, Bytes::from(id.to_string()), max);
        }
        (c, now)
    }

    #[test]
    fn replay_window() {
        let (mut c, now) = log_with(1..=10, 5); // retains 6..=10
        assert_eq!(c.retained(), 5);
        assert_eq!(c.backlog(ReplayFrom::All).unwrap().len(), 5);
        assert_eq!(c.backlog(ReplayFrom::After(5)).unwrap().len(), 5);
        assert_eq!(c.backlog(ReplayFrom::After(8)).unwrap().len(), 2);
        assert_eq!(c.backlog(ReplayFrom::After(10)).unwrap().len(), 0);
        assert!(c.backlog(ReplayFrom::After(4)).is_err());
        assert!(c.backlog(ReplayFrom::After(11)).is_err());
        c.expire_through(10);
        assert!(c.backlog(ReplayFrom::After(9)).is_err());
        assert!(c.backlog(ReplayFrom::After(10)).is_ok());
        c.retain(11, now, Bytes::new(), 5);
        c.trim(now + Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(c.retained(), 0);
        let empty = ChannelLog::new("/u/y", 1, 1);
        assert!(empty.backlog(ReplayFrom::After(0)).is_err());
        assert!(empty.backlog(ReplayFrom::All).unwrap().is_empty());
    }

    #[test]
    fn parse_values() {
        assert_eq!(ReplayFrom::parse(&json!(-1)), Ok(ReplayFrom::New));
        assert_eq!(ReplayFrom::parse(&json!(-2)), Ok(ReplayFrom::All));
        assert_eq!(ReplayFrom::parse(&json!("42")), Ok(ReplayFrom::After(42)));
        assert_eq!(ReplayFrom::parse(&json!(-3)), Err("-3".into()));
        assert_eq!(ReplayFrom::parse(&json!("abc")), Err("abc".into()));
        assert_eq!(
            invalid_replay_id("1800"),
            "400::The replayId {1800} you provided was invalid.  Please provide a valid ID, -2 to replay all events, or -1 to replay only new events."
        );
        assert_eq!(
            replay_id_not_found("/data/ChangeEvents", &json!({})),
            "400::The replayId for channel {/data/ChangeEvents} wasn't found using the provided replay ID map {{}}."
        );
    }
}
