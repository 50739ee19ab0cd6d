//! Rust mirrors of the structs in `bpf/podmeter.h`.
//!
//! `tests/btf_layout.rs` checks every size and field offset here against the
//! BTF of the compiled object, so a change on one side cannot go unnoticed.

/// Mirrors `PODMETER_ABI_VERSION`: part of every pin path (`<pin path>/v1/...`).
pub const ABI_VERSION: u32 = 4;

/// Mirrors `PM_MAX_PODS`: the registry's capacity (the counters hold two entries a pod).
pub const MAX_PODS: u32 = 8192;

/// Mirrors `PM_MAX_DROP_KEYS`.
pub const MAX_DROP_KEYS: u32 = 16 * MAX_PODS;

/// Mirrors `PM_REASON_WORDS`: the after-egress drop reason bitmap's size.
pub const REASON_WORDS: usize = 4;

/// The name of the rodata global holding that bitmap.
pub const AFTER_EGRESS_REASONS: &str = "pm_after_egress_reasons";

/// The name of the rodata global holding the bitmap of a tc program's
/// `TC_ACT_SHOT` drop reasons.
pub const TC_DROP_REASONS: &str = "pm_tc_drop_reasons";

/// The name of the rodata global holding the bitmap of the reasons that
/// drop a frame on its way into a veth end, before it is received.
pub const ARRIVAL_REASONS: &str = "pm_arrival_reasons";

/// The name of the rodata global holding the bitmap of a packet socket's
/// drop reasons.
pub const PACKET_SOCKET_REASONS: &str = "pm_packet_socket_reasons";

/// The name of the rodata global holding the bitmap of the reasons an
/// IPv6 multicast packet for a group not joined is freed with.
pub const UNJOINED_MCAST_REASONS: &str = "pm_unjoined_mcast_reasons";

/// The name of the rodata global telling the retransmission program
/// whether its tracepoint passes `err` (1) or not (0).
pub const RETRANSMIT_ERR_ARG: &str = "pm_retransmit_err_arg";

/// Mirrors `PM_MAX_IPS`.
pub const MAX_IPS: usize = 4;

/// Mirrors `enum pm_direction`: receive/transmit as seen by the pod.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[repr(u32)]
pub enum Direction {
    /// Host veth egress: traffic towards the pod.
    Receive = 0,
    /// Host veth ingress: traffic from the pod.
    Transmit = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Receive, Direction::Transmit];

    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|d| *d as u32 == raw)
    }

    /// The label value the exporter uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Receive => "receive",
            Direction::Transmit => "transmit",
        }
    }
}

/// Mirrors `struct pm_counter_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct CounterKey {
    pub ifindex: u32,
    pub direction: u32,
}

impl CounterKey {
    pub fn new(ifindex: u32, direction: Direction) -> Self {
        Self {
            ifindex,
            direction: direction as u32,
        }
    }
}

/// Mirrors `struct pm_counter`; also the sum over CPUs handed to readers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PodCounter {
    pub packets: u64,
    pub bytes: u64,
}

/// Mirrors `struct pm_drop_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C)]
pub struct DropKey {
    pub ifindex: u32,
    pub direction: u32,
    /// The running kernel's `enum skb_drop_reason` (see `programs::drop_reasons`).
    pub reason: u32,
    pub pad: u32,
}

/// Mirrors `enum pm_side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Side {
    Host = 0,
    Pod = 1,
    /// The pod's network namespace (`ifindex` 0): whose sockets the TCP
    /// programs attribute to the pod.
    Netns = 2,
}

/// Mirrors `struct pm_dev_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct DevKey {
    pub netns_cookie: u64,
    pub ifindex: u32,
    pub pad: u32,
}

/// Mirrors `struct pm_dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Dev {
    pub host_ifindex: u32,
    pub side: u32,
}

/// Mirrors `struct pm_ip`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct IpEntry {
    pub family: u8,
    pub prefix_len: u8,
    pub pad: [u8; 2],
    pub addr: [u8; 16],
}

impl IpEntry {
    /// A single address (its full prefix length).
    pub fn host(addr: std::net::IpAddr) -> Self {
        let mut e = Self::default();
        match addr {
            std::net::IpAddr::V4(a) => {
                e.family = libc::AF_INET as u8;
                e.prefix_len = 32;
                e.addr[..4].copy_from_slice(&a.octets());
            }
            std::net::IpAddr::V6(a) => {
                e.family = libc::AF_INET6 as u8;
                e.prefix_len = 128;
                e.addr = a.octets();
            }
        }
        e
    }
}

/// Mirrors `struct pm_pod_info`: fixed-size, NUL-padded strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct PodInfo {
    pub k8s_namespace: [u8; 64],
    pub k8s_pod: [u8; 256],
    pub k8s_uid: [u8; 64],
    pub container_id: [u8; 128],
    pub network: [u8; 128],
    pub ifname: [u8; 16],
    pub host_ifname: [u8; 16],
    pub ips: [IpEntry; MAX_IPS],
    pub n_ips: u32,
    pub flags: u32,
}

/// Mirrors `PM_MAX_GATEWAYS`.
pub const MAX_GATEWAYS: usize = 2;

/// Mirrors `struct pm_source`: who a pod may send as, and its gateways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Source {
    pub mac: [u8; 6],
    pub pad: [u8; 2],
    /// The `fe80::/64` EUI-64 address of `mac`.
    pub link_local: [u8; 16],
    pub ips: [IpEntry; MAX_IPS],
    pub gateways: [IpEntry; MAX_GATEWAYS],
}

/// Mirrors `PM_DROP_POLICY_DENIED`: podmeter's own drop reason, beyond
/// any kernel's `enum skb_drop_reason`.
pub const DROP_POLICY_DENIED: u32 = 0xffff_0001;

/// Mirrors `PM_DROP_SPOOFED_SOURCE`: a pod sent as someone else, tagged a
/// frame or acted as a router.
pub const DROP_SPOOFED_SOURCE: u32 = 0xffff_0002;

/// Mirrors `PM_DROP_UNPARSABLE`: a packet that could not be classified.
pub const DROP_UNPARSABLE: u32 = 0xffff_0003;

/// Mirrors `PM_RULES_PER_PREFIX`.
pub const RULES_PER_PREFIX: usize = 16;

/// Mirrors `PM_RULE_KEY_FIXED_BITS`: the pod, direction and family in front
/// of the address in a rule key.
pub const RULE_KEY_FIXED_BITS: u32 = 64;

/// Mirrors `PM_MAX_RULE_PREFIXES`.
pub const MAX_RULE_PREFIXES: u32 = 65536;

/// Mirrors `PM_FLOW_BUDGET`: the flows a pod may have open per opening
/// direction.
pub const FLOW_BUDGET: u64 = 8192;

/// Mirrors `PM_FLOWS_PER_POD`: the room of a pod's flow table.
pub const FLOWS_PER_POD: u32 = 2 * FLOW_BUDGET as u32;

/// Mirrors `PM_PROTO_ANY`.
pub const PROTO_ANY: u8 = 0;

/// Mirrors `PM_RULE_PORTS`.
pub const RULE_PORTS: u8 = 1;

/// Mirrors `enum pm_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Action {
    Allow = 0,
    Deny = 1,
}

impl Action {
    pub fn from_raw(raw: u8) -> Option<Self> {
        [Action::Allow, Action::Deny]
            .into_iter()
            .find(|a| *a as u8 == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// Mirrors `struct pm_policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PolicyEntry {
    /// The effective `enum pm_action` by `enum pm_direction`: what the
    /// programs read (the operator's default, else the config's, else allow).
    pub default_action: [u8; 2],
    /// 1: NetworkPolicy isolates the pod in that direction.
    pub k8s_isolated: [u8; 2],
    /// Bumped by every change of the pod's rules or defaults.
    pub generation: u32,
    /// `[owner - 1][direction]`: each admin owner's own default, 0 unset,
    /// else `enum pm_action + 1` (userspace only).
    pub owner_default: [[u8; 2]; 2],
    pub pad: [u8; 4],
}

/// Mirrors `PM_OWNER_CONFIG`.
pub const OWNER_CONFIG: u8 = 1;
/// Mirrors `PM_OWNER_OPERATOR`.
pub const OWNER_OPERATOR: u8 = 2;

/// Mirrors `struct pm_rule`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RuleEntry {
    pub id: u32,
    pub proto: u8,
    pub action: u8,
    pub flags: u8,
    /// `PM_OWNER_*`.
    pub owner: u8,
    pub port_lo: u16,
    pub port_hi: u16,
}

/// Mirrors `struct pm_rule_key` without its leading `prefixlen`, which
/// aya's `lpm_trie::Key` carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C)]
pub struct RuleKeyData {
    pub ifindex: u32,
    pub direction: u8,
    pub family: u8,
    pub pad: [u8; 2],
    pub addr: [u8; 16],
}

/// Mirrors `struct pm_rule_set`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RuleSet {
    pub prefix_len: u32,
    pub n_rules: u32,
    pub rules: [RuleEntry; RULES_PER_PREFIX],
}

/// Mirrors `PM_PEER_KEY_FIXED_BITS`.
pub const PEER_KEY_FIXED_BITS: u32 = 32;

/// Mirrors `struct pm_peer_key` without its leading `prefixlen`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C)]
pub struct PeerKeyData {
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

/// Mirrors `struct pm_peer`: who a remote address is (0: no identity).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(C)]
pub struct Peer {
    pub pod_identity: u32,
    pub cidr_identity: u32,
}

/// Mirrors `PM_IDENTITY_HOST`: the node itself.
pub const IDENTITY_HOST: u32 = 1;

/// Mirrors `PM_K8S_KEY_FIXED_BITS`.
pub const K8S_KEY_FIXED_BITS: u32 = 96;

/// Mirrors `struct pm_k8s_rule_key` without its leading `prefixlen`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C)]
pub struct K8sRuleKeyData {
    pub ifindex: u32,
    pub direction: u8,
    /// `IPPROTO_*`, 0: any.
    pub proto: u8,
    pub pad: u16,
    /// The peer's identity, 0: any.
    pub identity: u32,
    /// Big-endian, as its bits are prefix bits.
    pub port: u16,
    pub pad2: u16,
}

/// Mirrors `struct pm_k8s_rule`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct K8sRule {
    /// The key of its NetworkPolicy's name in `pm_k8s_policies`.
    pub policy: u32,
}

/// Mirrors `PM_K8S_POLICY_NAME_LEN`.
pub const K8S_POLICY_NAME_LEN: usize = 320;

/// Mirrors `struct pm_k8s_policy_name`: `namespace/name`, NUL-padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct K8sPolicyName {
    pub name: [u8; K8S_POLICY_NAME_LEN],
}

/// Mirrors `PM_MAX_PEERS`.
pub const MAX_PEERS: u32 = 65536;
/// Mirrors `PM_MAX_K8S_RULES`.
pub const MAX_K8S_RULES: u32 = 262_144;
/// Mirrors `PM_MAX_K8S_POLICIES`.
pub const MAX_K8S_POLICIES: u32 = 16384;

/// Mirrors `struct pm_flow_key`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FlowKey {
    pub ifindex: u32,
    pub family: u8,
    pub proto: u8,
    pub pod_port: u16,
    pub remote_port: u16,
    pub pad: u16,
    pub remote: [u8; 16],
}

/// Mirrors `struct pm_flow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Flow {
    pub last_seen_ns: u64,
    pub opened_by: u32,
    pub generation: u32,
}

/// Mirrors `struct pm_flow_state`: a pod's flow table occupancy and its
/// policy's verdicts on new flows, each field indexed by `enum
/// pm_direction` (the direction that opened the flows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FlowState {
    pub flows: [u64; 2],
    pub refused: [u64; 2],
    pub reclaimed: [u64; 2],
    pub swept_ns: u64,
    /// Packets no live flow let through that the policy allowed: each new
    /// flow's first (a flow not recorded, refused, is decided again).
    pub allowed: [u64; 2],
    /// Packets no live flow let through that the policy denied: each
    /// retransmission of a denied flow's first packet counts again.
    pub denied: [u64; 2],
}

/// Mirrors `PM_TCP_RTT_BOUNDS`: the finite bounds of the RTT histogram.
pub const TCP_RTT_BOUNDS: usize = 17;

/// Mirrors `PM_TCP_RTT_FIRST_US`: the first bound; each next one doubles.
pub const TCP_RTT_FIRST_US: u64 = 50;

/// Mirrors `struct pm_tcp`: a pod's TCP statistics (per CPU in the map;
/// also the sum over CPUs handed to readers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Tcp {
    pub retransmits: u64,
    pub resets_sent: u64,
    pub active_opens: u64,
    pub passive_opens: u64,
    /// A gauge: one CPU's share may wrap below zero, the sum does not.
    pub established: u64,
    pub rtt_count: u64,
    pub rtt_sum_us: u64,
    /// Not cumulative: slot `i` counts RTTs in `(bound(i-1), bound(i)]`,
    /// the last one those above every bound.
    pub rtt_buckets: [u64; TCP_RTT_BOUNDS + 1],
}

impl Tcp {
    /// The upper bound of RTT bucket `i` (< [`TCP_RTT_BOUNDS`]), microseconds.
    pub fn rtt_bound_us(i: usize) -> u64 {
        TCP_RTT_FIRST_US << i
    }

    /// Adds `other` to `self`, wrapping (per-CPU shares of a gauge).
    pub fn add(&mut self, other: &Tcp) {
        self.retransmits = self.retransmits.wrapping_add(other.retransmits);
        self.resets_sent = self.resets_sent.wrapping_add(other.resets_sent);
        self.active_opens = self.active_opens.wrapping_add(other.active_opens);
        self.passive_opens = self.passive_opens.wrapping_add(other.passive_opens);
        self.established = self.established.wrapping_add(other.established);
        self.rtt_count = self.rtt_count.wrapping_add(other.rtt_count);
        self.rtt_sum_us = self.rtt_sum_us.wrapping_add(other.rtt_sum_us);
        for (a, b) in self.rtt_buckets.iter_mut().zip(&other.rtt_buckets) {
            *a = a.wrapping_add(*b);
        }
    }
}

// SAFETY: plain `#[repr(C)]` data without padding or pointers; any bit
// pattern is a valid value.
unsafe impl aya::Pod for CounterKey {}
// SAFETY: as above.
unsafe impl aya::Pod for PodCounter {}
// SAFETY: as above.
unsafe impl aya::Pod for PodInfo {}
// SAFETY: as above.
unsafe impl aya::Pod for DropKey {}
// SAFETY: as above.
unsafe impl aya::Pod for DevKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Dev {}
// SAFETY: as above.
unsafe impl aya::Pod for PolicyEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for RuleKeyData {}
// SAFETY: as above.
unsafe impl aya::Pod for RuleSet {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Flow {}
// SAFETY: as above.
unsafe impl aya::Pod for Source {}
unsafe impl aya::Pod for FlowState {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerKeyData {}
// SAFETY: as above.
unsafe impl aya::Pod for Peer {}
// SAFETY: as above.
unsafe impl aya::Pod for K8sRuleKeyData {}
// SAFETY: as above.
unsafe impl aya::Pod for K8sRule {}
// SAFETY: as above.
unsafe impl aya::Pod for K8sPolicyName {}
// SAFETY: as above.
unsafe impl aya::Pod for Tcp {}
