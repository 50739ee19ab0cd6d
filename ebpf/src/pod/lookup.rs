//! A pod by what an operator (or the agent) knows of it: `namespace/name`,
//! a bare name (pods without a namespace, as under podman), a container ID,
//! or a host interface name.

use crate::{
    maps::{registry::PodIdentity, PinnedMaps},
    Error,
};

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(
        "no pod {query:?} on this node (give namespace/name, a container ID or a host \
         interface; `podmeterctl pods` lists them)"
    )]
    NotFound { query: String },

    #[error("{query:?} names several pod interfaces: {}; give the host interface", .candidates.join(", "))]
    Ambiguous {
        query: String,
        /// Each as `host interface (pod interface)`.
        candidates: Vec<String>,
    },

    #[error(transparent)]
    Maps(#[from] Error),
}

/// Whether `query` names `pod`.
pub fn matches(pod: &PodIdentity, query: &str) -> bool {
    query == pod.host_ifname
        || query == pod.container_id
        || query == format!("{}/{}", pod.namespace, pod.pod)
        || (pod.namespace.is_empty() && query == pod.pod)
}

impl PinnedMaps {
    /// The one registered pod interface `query` names.
    pub fn lookup(&self, query: &str) -> Result<(u32, PodIdentity), LookupError> {
        let mut found: Vec<(u32, PodIdentity)> = self
            .pods()?
            .into_iter()
            .filter(|(_, p)| matches(p, query))
            .collect();
        match found.len() {
            0 => Err(LookupError::NotFound {
                query: query.to_owned(),
            }),
            1 => Ok(found.remove(0)),
            _ => Err(LookupError::Ambiguous {
                query: query.to_owned(),
                candidates: found
                    .iter()
                    .map(|(_, p)| format!("{} ({})", p.host_ifname, p.ifname))
                    .collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_found_by_what_an_operator_knows() {
        let k8s = PodIdentity {
            namespace: "shop".into(),
            pod: "web".into(),
            container_id: "c0ffee".into(),
            host_ifname: "pm1234".into(),
            ..Default::default()
        };
        let podman = PodIdentity {
            pod: "web".into(),
            ..k8s.clone()
        };
        let podman = PodIdentity {
            namespace: String::new(),
            ..podman
        };
        for q in ["shop/web", "c0ffee", "pm1234"] {
            assert!(matches(&k8s, q), "{q}");
        }
        assert!(
            !matches(&k8s, "web"),
            "a bare name is for pods without a namespace"
        );
        assert!(matches(&podman, "web"));
        assert!(!matches(&k8s, "shop/we"));
    }
}
