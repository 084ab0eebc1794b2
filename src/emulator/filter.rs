//! PushTopic filtered subscriptions (streaming guide, "Filtered Subscriptions"):
//! `/topic/Name?Field=value&Other='quoted value'` delivers only the events whose record has
//! every listed field equal to its value, on the channel name as subscribed (EMP-Connector
//! listens on the filtered name and receives them). Only equality, joined by `&`, is supported,
//! as documented.

use bytes::Bytes;
use serde_json::Value;

/// A parsed filter: field to expected value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    conditions: Vec<(String, String)>,
}

impl Filter {
    /// The filter of a subscription, if it has one (`None` for a bare channel or an empty query).
    pub(crate) fn of(subscription: &str) -> Option<Filter> {
        let (_, query) = subscription.split_once('?')?;
        let conditions: Vec<(String, String)> = query
            .split('&')
            .filter(|c| !c.is_empty())
            .map(|c| {
                let (field, value) = c.split_once('=').unwrap_or((c, ""));
                let value = value.trim();
                let value = value
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .unwrap_or(value);
                (field.trim().to_owned(), value.to_owned())
            })
            .collect();
        (!conditions.is_empty()).then_some(Filter { conditions })
    }

    /// The filter's fields that are not among `known` (case-insensitive, as field names are).
    pub(crate) fn unknown_fields(&self, known: &[String]) -> Vec<String> {
        self.conditions
            .iter()
            .map(|(f, _)| f)
            .filter(|f| !known.iter().any(|k| k.eq_ignore_ascii_case(f)))
            .cloned()
            .collect()
    }

    /// Whether the record (`data.sobject` of a PushTopic event) matches every condition.
    fn matches(&self, record: &Value) -> bool {
        self.conditions.iter().all(|(field, want)| {
            let got = record.as_object().and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(field))
                    .map(|(_, v)| v)
            });
            match got {
                Some(Value::String(s)) => s == want,
                Some(Value::Null) | None => want.eq_ignore_ascii_case("null"),
                Some(other) => serde_json::from_str::<Value>(want).ok().as_ref() == Some(other),
            }
        })
    }

    /// The event re-framed on `subscription` if its record matches, else `None`.
    pub(crate) fn apply(&self, subscription: &str, event: &Bytes) -> Option<Bytes> {
        let message: Value = serde_json::from_slice(event).ok()?;
        let data = message.get("data")?;
        self.matches(&data["sobject"])
            .then(|| super::events::frame(subscription, data))
    }
}

/// The error for filter fields the topic's query does not select. The wording after "Query
/// fields" is not verified against a capture.
pub(crate) fn unknown_fields_error(fields: &[String]) -> String {
    format!(
        "400::Query fields {} do not exist on the topic entity",
        fields.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_parse_and_match_like_the_guide() {
        let f = Filter::of("/topic/T?Industry='Energy'&ShippingCity='San Francisco'").unwrap();
        assert!(f.matches(&json!({"Industry": "Energy", "ShippingCity": "San Francisco"})));
        assert!(!f.matches(&json!({"Industry": "Energy", "ShippingCity": "Oakland"})));
        assert!(!f.matches(&json!({"Industry": "Energy"})));
        let emp = Filter::of("/topic/T?Type=Technology Partner&Phone=(415) 555-1212").unwrap();
        assert!(emp.matches(&json!({"Type": "Technology Partner", "Phone": "(415) 555-1212"})));
        let n = Filter::of("/topic/T?Amount=5").unwrap();
        assert!(n.matches(&json!({"Amount": 5})));
        assert_eq!(Filter::of("/topic/T"), None);
        assert_eq!(Filter::of("/topic/T?"), None);
        assert_eq!(
            f.unknown_fields(&["industry".into()]),
            vec!["ShippingCity".to_owned()]
        );
    }

    #[test]
    fn apply_reframes_on_the_subscribed_name() {
        let event = super::super::events::frame(
            "/topic/T",
            &json!({"event": {"replayId": 1}, "sobject": {"Id": "a", "Status": "Open"}}),
        );
        let open = Filter::of("/topic/T?Status=Open").unwrap();
        let framed = open.apply("/topic/T?Status=Open", &event).unwrap();
        let v: Value = serde_json::from_slice(&framed).unwrap();
        assert_eq!(v["channel"], "/topic/T?Status=Open");
        assert_eq!(v["data"]["event"]["replayId"], 1);
        let closed = Filter::of("/topic/T?Status=Closed").unwrap();
        assert_eq!(closed.apply("/topic/T?Status=Closed", &event), None);
    }
}
