//! Which subscriptions an incoming event goes to.

use super::inbox::SubId;
use crate::bayeux::Channel;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// At most this many channel names are shared between events; beyond it (wildcard subscriptions
/// matching ever new names) each run of events gets a name of its own.
const MAX_INTERNED: usize = 4096;

/// Channel patterns of the live subscriptions: exact names, Bayeux wildcards (`/a/*` one
/// segment, `/a/**` any depth), and PushTopic filters (`/topic/T?Status__c=Open`, whose events
/// may come back on the base channel).
#[derive(Default)]
pub(crate) struct Router {
    exact: HashMap<String, Vec<SubId>>,
    wildcards: Vec<(String, bool, SubId)>,
    /// Names of routed channels, shared by their events; each goes with its last subscription.
    interned: HashSet<Arc<str>>,
}

/// The part of a channel name before a PushTopic filter query.
pub(crate) fn base_channel(channel: &str) -> &str {
    channel.split_once('?').map_or(channel, |(base, _)| base)
}

impl Router {
    pub(crate) fn add(&mut self, channel: &str, sub: SubId) {
        if let Some(prefix) = channel.strip_suffix("/**") {
            self.wildcards.push((format!("{prefix}/"), true, sub));
        } else if let Some(prefix) = channel.strip_suffix("/*") {
            self.wildcards.push((format!("{prefix}/"), false, sub));
        } else {
            self.exact.entry(channel.to_owned()).or_default().push(sub);
            let base = base_channel(channel);
            if base != channel {
                self.exact.entry(base.to_owned()).or_default().push(sub);
            }
        }
    }

    pub(crate) fn remove(&mut self, sub: SubId) {
        self.exact.retain(|_, subs| {
            subs.retain(|s| *s != sub);
            !subs.is_empty()
        });
        self.wildcards.retain(|(_, _, s)| *s != sub);
        let mut interned = std::mem::take(&mut self.interned);
        interned.retain(|c| self.routes(c));
        self.interned = interned;
    }

    /// The shared name of a routed channel (call it only for channels that route somewhere).
    pub(crate) fn intern(&mut self, channel: Channel) -> Arc<str> {
        if let Some(c) = self.interned.get(channel.as_str()) {
            return c.clone();
        }
        let c: Arc<str> = channel.into();
        if self.interned.len() < MAX_INTERNED {
            self.interned.insert(c.clone());
        }
        c
    }

    fn routes(&self, channel: &str) -> bool {
        let mut any = false;
        self.route(channel, |_| any = true);
        any
    }

    /// Calls `f` once per subscription that wants an event on `channel`.
    pub(crate) fn route(&self, channel: &str, mut f: impl FnMut(SubId)) {
        let mut seen: Option<SubId> = None;
        if let Some(subs) = self.exact.get(channel) {
            for s in subs {
                seen = Some(*s);
                f(*s);
            }
        }
        for (prefix, deep, sub) in &self.wildcards {
            if let Some(rest) = channel.strip_prefix(prefix.as_str())
                && !rest.is_empty()
                && (*deep || !rest.contains('/'))
                && seen != Some(*sub)
            {
                f(*sub);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(r: &Router, ch: &str) -> Vec<SubId> {
        let mut v = Vec::new();
        r.route(ch, |s| v.push(s));
        v.sort();
        v
    }

    #[test]
    fn exact_wildcards_and_filters() {
        let mut r = Router::default();
        r.add("/event/A__e", 1);
        r.add("/event/*", 2);
        r.add("/data/**", 3);
        r.add("/topic/Inv?Status__c=Open", 4);
        assert_eq!(routed(&r, "/event/A__e"), vec![1, 2]);
        assert_eq!(routed(&r, "/event/B__e"), vec![2]);
        assert_eq!(routed(&r, "/event/x/y"), Vec::<SubId>::new());
        assert_eq!(routed(&r, "/data/AccountChangeEvent"), vec![3]);
        assert_eq!(routed(&r, "/data/a/b"), vec![3]);
        assert_eq!(routed(&r, "/topic/Inv"), vec![4]);
        assert_eq!(routed(&r, "/topic/Inv?Status__c=Open"), vec![4]);
        r.remove(2);
        r.remove(4);
        assert_eq!(routed(&r, "/event/A__e"), vec![1]);
        assert_eq!(routed(&r, "/topic/Inv"), Vec::<SubId>::new());
    }

    #[test]
    fn unrouted_channels_are_not_interned_and_names_go_with_the_last_subscription() {
        let mut r = Router::default();
        r.add("/event/A__e", 1);
        r.add("/event/A__e", 2);
        r.add("/data/**", 3);
        let a = r.intern("/event/A__e".into());
        assert!(Arc::ptr_eq(&a, &r.intern("/event/A__e".into())));
        r.intern("/data/AccountChangeEvent".into());
        assert_eq!(r.interned.len(), 2);
        r.remove(1);
        assert_eq!(
            r.interned.len(),
            2,
            "subscription 2 still wants /event/A__e"
        );
        r.remove(2);
        r.remove(3);
        assert!(r.interned.is_empty());
        // However many names arrive, the table stays bounded.
        r.add("/data/**", 4);
        for i in 0..MAX_INTERNED + 10 {
            r.intern(format!("/data/E{i}").into());
        }
        assert_eq!(r.interned.len(), MAX_INTERNED);
    }
}
