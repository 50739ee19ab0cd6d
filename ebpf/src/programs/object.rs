//! The compiled BPF object (built by `build.rs`) and what we expect of it.

use aya::{maps::MapType, programs::TcAttachType};

use crate::{
    abi::{
        CounterKey, Dev, DevKey, DropKey, FlowState, K8sPolicyName, K8sRule, K8sRuleKeyData, Peer,
        PeerKeyData, PodCounter, PodInfo, PolicyEntry, RuleKeyData, RuleSet, Source, Tcp,
        MAX_DROP_KEYS, MAX_K8S_POLICIES, MAX_K8S_RULES, MAX_PEERS, MAX_PODS, MAX_RULE_PREFIXES,
    },
    pins::{
        COUNTERS_MAP, DEVICES_MAP, DROPS_MAP, FLOW_STATE_MAP, FLOW_TABLES_MAP, K8S_POLICIES_MAP,
        K8S_RULES_MAP, PEERS_MAP, POLICY_MAP, REGISTRY_MAP, RULES_MAP, SOURCES_MAP, TCP_MAP,
    },
};

/// The object, aligned as the ELF parser requires.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/podmeter.bpf.o"));

/// A map as this build defines it; a pinned map must match it to be reused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapSpec {
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

pub const MAPS: [MapSpec; 13] = [
    MapSpec {
        name: COUNTERS_MAP,
        map_type: MapType::PerCpuHash,
        key_size: size_of::<CounterKey>() as u32,
        value_size: size_of::<PodCounter>() as u32,
        max_entries: 2 * MAX_PODS,
    },
    MapSpec {
        name: REGISTRY_MAP,
        map_type: MapType::Hash,
        key_size: size_of::<u32>() as u32,
        value_size: size_of::<PodInfo>() as u32,
        max_entries: MAX_PODS,
    },
    MapSpec {
        name: DEVICES_MAP,
        map_type: MapType::Hash,
        key_size: size_of::<DevKey>() as u32,
        value_size: size_of::<Dev>() as u32,
        // Both veth ends and the pod's netns.
        max_entries: 3 * MAX_PODS,
    },
    MapSpec {
        name: DROPS_MAP,
        map_type: MapType::PerCpuHash,
        key_size: size_of::<DropKey>() as u32,
        value_size: size_of::<PodCounter>() as u32,
        max_entries: MAX_DROP_KEYS,
    },
    MapSpec {
        name: SOURCES_MAP,
        map_type: MapType::Hash,
        key_size: size_of::<u32>() as u32,
        value_size: size_of::<Source>() as u32,
        max_entries: MAX_PODS,
    },
    MapSpec {
        name: POLICY_MAP,
        map_type: MapType::Hash,
        key_size: size_of::<u32>() as u32,
        value_size: size_of::<PolicyEntry>() as u32,
        max_entries: MAX_PODS,
    },
    MapSpec {
        name: RULES_MAP,
        map_type: MapType::LpmTrie,
        // The kernel's key starts with the prefix length.
        key_size: (size_of::<u32>() + size_of::<RuleKeyData>()) as u32,
        value_size: size_of::<RuleSet>() as u32,
        max_entries: MAX_RULE_PREFIXES,
    },
    MapSpec {
        name: PEERS_MAP,
        map_type: MapType::LpmTrie,
        key_size: (size_of::<u32>() + size_of::<PeerKeyData>()) as u32,
        value_size: size_of::<Peer>() as u32,
        max_entries: MAX_PEERS,
    },
    MapSpec {
        name: K8S_RULES_MAP,
        map_type: MapType::LpmTrie,
        key_size: (size_of::<u32>() + size_of::<K8sRuleKeyData>()) as u32,
        value_size: size_of::<K8sRule>() as u32,
        max_entries: MAX_K8S_RULES,
    },
    MapSpec {
        name: K8S_POLICIES_MAP,
        map_type: MapType::Hash,
        key_size: size_of::<u32>() as u32,
        value_size: size_of::<K8sPolicyName>() as u32,
        max_entries: MAX_K8S_POLICIES,
    },
    // Its values are the ids of per-pod tables (`maps::flow_tables`),
    // which the kernel checks against the object's template at each insert.
    MapSpec {
        name: FLOW_TABLES_MAP,
        map_type: MapType::HashOfMaps,
        key_size: size_of::<u32>() as u32,
        value_size: size_of::<u32>() as u32,
        max_entries: MAX_PODS,
    },
    MapSpec {
        name: FLOW_STATE_MAP,
        map_type: MapType::Hash,
        key_size: size_of::<u32>() as u32,
        value_size: size_of::<FlowState>() as u32,
        max_entries: MAX_PODS,
    },
    MapSpec {
        name: TCP_MAP,
        map_type: MapType::PerCpuHash,
        key_size: size_of::<u32>() as u32,
        value_size: size_of::<Tcp>() as u32,
        max_entries: MAX_PODS,
    },
];

/// The drop tracer: a BTF tracepoint program on `skb:kfree_skb`, attached
/// once per pin path (it sees the whole node and keeps to registered pods).
pub const DROP_TRACER: &str = "pm_kfree_skb";
pub const DROP_TRACEPOINT: &str = "kfree_skb";

/// A node-wide BTF tracepoint program, attached once per pin path; its
/// link is pinned as `links/<tracepoint>`.
#[derive(Debug, Clone, Copy)]
pub struct TracerSpec {
    /// The C function name.
    pub name: &'static str,
    pub tracepoint: &'static str,
}

/// The drop tracer, then the TCP programs (`bpf/tcp.h`).
pub const TRACERS: [TracerSpec; 5] = [
    TracerSpec {
        name: DROP_TRACER,
        tracepoint: DROP_TRACEPOINT,
    },
    TracerSpec {
        name: "pm_tcp_state",
        tracepoint: "inet_sock_set_state",
    },
    TracerSpec {
        name: "pm_tcp_retransmit",
        tracepoint: "tcp_retransmit_skb",
    },
    TracerSpec {
        name: "pm_tcp_retransmit_synack",
        tracepoint: "tcp_retransmit_synack",
    },
    TracerSpec {
        name: "pm_tcp_send_reset",
        tracepoint: "tcp_send_reset",
    },
];

/// A tc program and the hook of the host veth it runs on.
#[derive(Debug, Clone, Copy)]
pub struct ProgramSpec {
    /// The C function name, which is how aya finds it.
    pub name: &'static str,
    pub attach_type: TcAttachType,
    /// Short hook name used in link pin names.
    pub hook: &'static str,
}

pub const PROGRAMS: [ProgramSpec; 2] = [
    ProgramSpec {
        name: "pm_ingress",
        attach_type: TcAttachType::Ingress,
        hook: "ingress",
    },
    ProgramSpec {
        name: "pm_egress",
        attach_type: TcAttachType::Egress,
        hook: "egress",
    },
];
