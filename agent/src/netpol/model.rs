//! What the compiler hands the kernel writer: the design's model of the
//! kubernetes tier (`/work/design-owners.md`, "What the agent's compiler
//! produces"), in the `ebpf` crate's own types (`policy::kubernetes::{KubeProto,
//! KubeRule, KubePodPolicy}`, `abi::{Peer, IDENTITY_HOST}`), so that writing a
//! [`Compiled`] with the store API (`apply_kubernetes`, `replace_peers`,
//! `replace_policy_names`) is a field-for-field mapping.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
pub use podmeter_ebpf::{
    abi::{Direction, Peer, IDENTITY_HOST},
    policy::{
        kubernetes::{KubePodPolicy, KubeProto, KubeRule},
        PortRange,
    },
};

/// No identity: a rule's "any peer", a peer entry's "not a pod"/"no region".
pub const IDENTITY_NONE: u32 = 0;

/// A pod on this node (not hostNetwork) and its tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    pub uid: String,
    /// `status.podIPs`: how the writer finds the pod's host veth.
    pub ips: Vec<IpAddr>,
    pub policy: KubePodPolicy,
}

/// Everything the kubernetes tier of one node is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    /// For `pm_peers`, sorted by prefix: every known pod IP (full-length
    /// prefix) → (its class, its region); every region prefix → (0, its
    /// region); this node's addresses → (HOST, HOST).
    pub peers: Vec<(IpNet, Peer)>,
    /// Every local pod by "namespace/name", isolated or not (a pod no
    /// policy selects has an empty tier, which the writer clears).
    pub pods: BTreeMap<String, LocalPod>,
    /// For `pm_k8s_policies`: index → "namespace/name", of the policies that
    /// select a local pod.
    pub policy_names: Vec<(u32, String)>,
}

impl Compiled {
    /// The number of rules over all local pods (before port ranges become
    /// prefixes in the kernel).
    pub fn rule_count(&self) -> usize {
        self.pods.values().map(|p| p.policy.rules.len()).sum()
    }

    /// Local pods isolated in at least one direction.
    pub fn isolated_pods(&self) -> usize {
        self.pods
            .values()
            .filter(|p| p.policy.isolated.iter().any(|i| *i))
            .count()
    }
}
