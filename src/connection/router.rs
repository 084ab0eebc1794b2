//! Which subscriptions an incoming event goes to.

use super::inbox::SubId;
use std::collections::HashMap;

/// Channel patterns of the live subscriptions: exact names, Bayeux wildcards (`/a/*` one
/// segment, `/a/**` any depth), and PushTopic filters (`/topic/T?Status__c=Open`, whose events
/// may come back on the base channel).
#[derive(Default)]
pub(crate) struct Router {
    exact: HashMap<String, Vec<SubId>>,
    wildcards: Vec<(String, bool, SubId)>,
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
}
