//! `ReplayOption::NewEvents` before a channel's first event.
//!
//! A subscribe with -1 starts at "now", but Salesforce does not say which replay id that is.
//! Until the first event arrives there is nothing to resume from, and a resubscribe with -1
//! after a session loss would skip whatever was published in between. So a resubscribe in that
//! window asks for every retained event (-2) and drops those dated before the first subscribe
//! went out, less an allowance for the difference between this machine's clock and the
//! server's. The cost is one replay of the retained events of a channel that has been quiet
//! since the subscribe; the price of clock skew beyond the allowance would be loss, so the
//! allowance is generous and events up to that much older than the subscribe may come too.

use super::ReplayMarker;
use crate::bayeux::Data;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// How far this machine's clock may be ahead of Salesforce's without losing events.
pub(crate) const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
pub(crate) struct Unpositioned {
    /// Names subscribed with -1 that have delivered nothing yet, and since when. Keyed by the
    /// subscribed name, PushTopic filter included: one filter's first event positions only
    /// that filter, and a sibling's resubscribe must still replay (-2). An event that comes on
    /// the topic's name positions only the topic's own subscription; a filter left here then
    /// replays once more on a resubscribe (duplicates, never a loss).
    channels: Mutex<HashMap<String, Since>>,
    /// Some channel is replaying with -2 and filtering (the hot path checks only this).
    filtering: AtomicBool,
}

struct Since {
    /// Events dated before this are older than the subscribe.
    cutoff: SystemTime,
    /// A -2 resubscribe went out: its events are filtered.
    replaying: bool,
}

impl Unpositioned {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Since>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The replay id for a `NewEvents` subscribe of `channel` with no position: -1 the first
    /// time, -2 (filtered) for every later one.
    pub(crate) fn start_id(&self, channel: &str) -> i64 {
        self.start_id_at(channel, SystemTime::now())
    }

    fn start_id_at(&self, channel: &str, now: SystemTime) -> i64 {
        let mut channels = self.lock();
        match channels.get_mut(channel) {
            Some(since) => {
                if !since.replaying {
                    tracing::info!(%channel,
                        "resubscribing before the first event: replaying retained events (-2) and skipping those older than the subscribe");
                }
                since.replaying = true;
                self.filtering.store(true, Ordering::Release);
                -2
            }
            None => {
                let cutoff = now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now);
                channels.insert(
                    channel.to_owned(),
                    Since {
                        cutoff,
                        replaying: false,
                    },
                );
                -1
            }
        }
    }

    /// Whether some replay is being filtered (else every event is admitted).
    pub(crate) fn filtering(&self) -> bool {
        self.filtering.load(Ordering::Acquire)
    }

    /// Whether an event of `channel` is for the stream: false for one a filtered replay brought
    /// that is dated before the subscribe. Undated events pass (a duplicate beats a loss).
    pub(crate) fn admit(&self, channel: &str, data: &Data) -> bool {
        if !self.filtering.load(Ordering::Acquire) {
            return true;
        }
        let channels = self.lock();
        let Some(since) = channels.get(channel) else {
            return true;
        };
        if !since.replaying {
            return true;
        }
        match ReplayMarker::of(data).and_then(|m| m.date) {
            Some(date) => date >= since.cutoff,
            None => true,
        }
    }

    /// `channel` has a position now (an event was delivered, an explicit start), or its
    /// subscription ended: the next subscribe decides afresh.
    pub(crate) fn clear(&self, channel: &str) {
        let mut channels = self.lock();
        if channels.remove(channel).is_some() {
            self.update_filtering(&channels);
        }
    }

    pub(crate) fn clear_all(&self) {
        let mut channels = self.lock();
        channels.clear();
        self.update_filtering(&channels);
    }

    fn update_filtering(&self, channels: &HashMap<String, Since>) {
        let any = channels.values().any(|s| s.replaying);
        self.filtering.store(any, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::format_date;

    fn ev(id: i64, date: SystemTime) -> Data {
        Data::from_json(
            serde_json::json!({"event": {"replayId": id, "createdDate": format_date(date)}})
                .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn a_resubscribe_before_the_first_event_replays_and_skips_what_is_older_than_the_subscribe() {
        let u = Unpositioned::default();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let minute = Duration::from_secs(60);
        assert_eq!(u.start_id_at("/event/A__e", t), -1);
        // Nothing filtered before a replay was asked for.
        assert!(u.admit("/event/A__e", &ev(1, t - 60 * minute)));
        assert_eq!(u.start_id_at("/event/A__e", t + minute), -2);
        assert_eq!(u.start_id_at("/event/A__e", t + 2 * minute), -2);
        let old = t - CLOCK_SKEW_ALLOWANCE - Duration::from_secs(1);
        assert!(
            !u.admit("/event/A__e", &ev(1, old)),
            "older than the subscribe"
        );
        assert!(
            u.admit("/event/A__e", &ev(2, t - minute)),
            "within the skew allowance"
        );
        assert!(u.admit("/event/A__e", &ev(3, t + minute)));
        let undated = Data::from_json(r#"{"event":{"replayId":4}}"#.to_owned()).unwrap();
        assert!(u.admit("/event/A__e", &undated), "undated: delivered");
        assert!(u.admit("/event/B__e", &ev(5, old)), "another channel");
        // A PushTopic filter has its own position, apart from its topic's.
        assert_eq!(u.start_id_at("/topic/T?Name='x'", t), -1);
        assert_eq!(u.start_id_at("/topic/T", t), -1);
        assert_eq!(u.start_id_at("/topic/T", t), -2);
        u.clear("/event/A__e");
        u.clear("/topic/T");
        assert_eq!(
            u.start_id_at("/topic/T?Name='x'", t),
            -2,
            "cleared only the topic's"
        );
        u.clear("/topic/T?Name='x'");
        assert!(u.admit("/event/A__e", &ev(1, old)));
        assert!(u.lock().is_empty());
        assert!(!u.filtering.load(Ordering::Acquire));
        assert_eq!(
            u.start_id_at("/event/A__e", t),
            -1,
            "a new subscription starts afresh"
        );
        u.clear_all();
        assert!(u.lock().is_empty());
    }
}
