//! Label selectors as the API defines them (`matchLabels` ANDed with every
//! `matchExpressions` requirement; an empty selector selects everything).
//! An operator the API would have refused selects nothing, so a malformed
//! policy never opens more than it says.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

pub type Labels = BTreeMap<String, String>;

/// Whether `selector` selects an object labelled `labels`.
pub fn matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|r| requirement(r, labels))
}

fn requirement(r: &LabelSelectorRequirement, labels: &Labels) -> bool {
    let value = labels.get(&r.key);
    let listed = |v: &String| r.values.iter().flatten().any(|x| x == v);
    match r.operator.as_str() {
        "In" => value.is_some_and(listed),
        "NotIn" => !value.is_some_and(listed),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn operators_as_the_api_defines_them() {
        let ab = labels(&[("pod", "a"), ("tier", "web")]);
        let none = labels(&[]);
        let cases = [
            (json!({}), true, true),
            (json!({"matchLabels": {"pod": "a"}}), true, false),
            (json!({"matchLabels": {"pod": "b"}}), false, false),
            (
                json!({"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]}),
                true,
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]}),
                false,
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["b"]}]}),
                true,
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                true,
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
                false,
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "Gt", "values": ["1"]}]}),
                false,
                false,
            ),
            // matchLabels AND matchExpressions.
            (
                json!({"matchLabels": {"pod": "a"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
                false,
                false,
            ),
        ];
        for (s, want_ab, want_none) in cases {
            let selector = sel(s.clone());
            assert_eq!(matches(&selector, &ab), want_ab, "{s} on {ab:?}");
            assert_eq!(matches(&selector, &none), want_none, "{s} on no labels");
        }
    }
}
