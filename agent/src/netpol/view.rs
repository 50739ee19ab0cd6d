//! The few facts of Pods and Namespaces that policy depends on, read once
//! per compile: namespace labels (with the automatic
//! `kubernetes.io/metadata.name`), and per pod its labels, node, named
//! ports and the addresses it may be matched by.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;

use super::{
    ports::{named_ports, NamedPort},
    selector::Labels,
};

/// The label the API server puts on every Namespace; added when an object
/// lacks it (one made before v1.21, or a test's).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Every namespace's labels, by name.
pub fn namespace_labels(namespaces: &[Arc<Namespace>]) -> BTreeMap<String, Labels> {
    namespaces
        .iter()
        .map(|ns| {
            let name = ns.name_any();
            let mut labels = ns.labels().clone();
            labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
            (name, labels)
        })
        .collect()
}

/// The labels of a namespace not (yet) in the store: only the automatic one.
pub fn unknown_namespace(name: &str) -> Labels {
    [(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned())].into()
}

#[derive(Debug)]
pub struct PodView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub labels: &'a Labels,
    pub node: Option<&'a str>,
    pub host_network: bool,
    /// Succeeded or Failed: no traffic, no tier.
    pub finished: bool,
    /// `status.podIPs` (or `podIP`).
    pub ips: Vec<IpAddr>,
    /// The addresses a peer selector may match it by: none for a pod being
    /// deleted or finished (its address may already be someone else's).
    pub peer_ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
}

impl<'a> PodView<'a> {
    pub fn new(pod: &'a Pod) -> Self {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        let finished = matches!(phase, Some("Succeeded" | "Failed"));
        let listed = status.and_then(|s| s.pod_ips.as_ref());
        let mut ips: Vec<IpAddr> = match listed {
            Some(list) if !list.is_empty() => {
                list.iter().filter_map(|p| p.ip.parse().ok()).collect()
            }
            _ => status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok())
                .into_iter()
                .collect(),
        };
        ips.dedup();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let peer_ips = if finished || deleting || host_network {
            Vec::new()
        } else {
            ips.clone()
        };
        Self {
            namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
            name: pod.metadata.name.as_deref().unwrap_or_default(),
            uid: pod.metadata.uid.as_deref().unwrap_or_default(),
            labels: pod.labels(),
            node: spec.and_then(|s| s.node_name.as_deref()),
            host_network,
            finished,
            ips,
            peer_ips,
            named_ports: named_ports(pod),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// On `node`, wired by the plugin (not hostNetwork) and not finished.
    pub fn is_local(&self, node: &str) -> bool {
        self.node == Some(node) && !self.host_network && !self.finished
    }
}
