//! What the compiler hands the kernel writer: the design's model of the
//! kubernetes tier (`/work/design-owners.md`, "What the agent's compiler
//! produces"). The names and shapes mirror the `ebpf` crate's store API
//! (`apply_kubernetes`, `replace_peers`, `replace_policy_names`) so that
//! writing a [`Compiled`] is a field-for-field mapping: [`KubeProto`],
//! [`KubeRule`], [`KubePodPolicy`], [`Peer`] and [`IDENTITY_HOST`] are
//! stand-ins for the `ebpf` crate's own (`policy::{KubeProto, KubeRule,
//! KubePodPolicy}`, `abi::{Peer, IDENTITY_HOST}`), to be replaced by
//! `pub use` of those once both branches meet; nothing here adds methods
//! to them.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
pub use podmeter_ebpf::{abi::Direction, policy::PortRange};

/// No identity: a rule's "any peer", a peer entry's "not a pod"/"no region".
pub const IDENTITY_NONE: u32 = 0;
/// `PM_IDENTITY_HOST`: this node, always allowed by the kubernetes tier.
pub const IDENTITY_HOST: u32 = 1;

/// The protocols a NetworkPolicy port names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KubeProto {
    Tcp,
    Udp,
    Sctp,
}

/// One allow of the kubernetes tier for one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeRule {
    /// `Receive` for NetworkPolicy ingress, `Transmit` for egress.
    pub direction: Direction,
    /// The remote's identity (a pod class or a CIDR region); 0 = any.
    pub peer: u32,
    /// `None`: every protocol and port.
    pub proto: Option<KubeProto>,
    /// `None`: every port of `proto`.
    pub ports: Option<PortRange>,
    /// Index into [`Compiled::policy_names`]: the policy this allow is from.
    pub policy: u32,
}

/// A local pod's kubernetes tier, replaced whole on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubePodPolicy {
    /// Indexed by `Direction as usize`: isolated for ingress, egress.
    pub isolated: [bool; 2],
    /// Sorted and without duplicates (a rule for the same traffic keeps the
    /// lowest policy index).
    pub rules: Vec<KubeRule>,
}

/// Who a remote address is (`struct pm_peer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Peer {
    pub pod_identity: u32,
    pub cidr_identity: u32,
}

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
