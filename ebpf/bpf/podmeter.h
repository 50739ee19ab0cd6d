/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The ABI shared by podmeter's tc programs and its userspace (the `ebpf`
 * crate's `abi` module mirrors every struct here; a test checks the mirror
 * against this object's BTF). Change a layout => bump PODMETER_ABI_VERSION,
 * which moves every pin to a new directory instead of reusing old maps.
 */
#ifndef PODMETER_H
#define PODMETER_H

#include <linux/types.h>

#define PODMETER_ABI_VERSION 4

/* Traffic direction, as seen by the pod (like cAdvisor's container_network_*). */
enum pm_direction {
	PM_DIR_RECEIVE = 0,  /* host veth egress: towards the pod */
	PM_DIR_TRANSMIT = 1, /* host veth ingress: from the pod */
};

/* pm_counters key: one entry per pod interface and direction. */
struct pm_counter_key {
	__u32 ifindex; /* host-side veth, in the node's netns */
	__u32 direction; /* enum pm_direction */
};

/* pm_counters value, per CPU: userspace sums over all possible CPUs. */
struct pm_counter {
	__u64 packets;
	__u64 bytes; /* skb->len: what the veth's own rx/tx_bytes count */
};

/*
 * pm_drops key: the kernel's drops (tracepoint skb:kfree_skb) attributed to
 * a pod interface, by direction and drop reason (enum skb_drop_reason).
 * The value is a struct pm_counter per CPU.
 */
struct pm_drop_key {
	__u32 ifindex; /* host-side veth of the pod */
	__u32 direction; /* enum pm_direction */
	__u32 reason; /* enum skb_drop_reason of the running kernel */
	__u32 pad;
};

/* Which end of a pod's veth pair a pm_devices entry describes. */
enum pm_side {
	PM_SIDE_HOST = 0, /* the host veth, in the node's netns */
	PM_SIDE_POD = 1, /* the pod's interface, in the pod's netns */
	PM_SIDE_NETNS = 2, /* the pod's network namespace itself (ifindex 0) */
};

/*
 * pm_devices key: a network device anywhere on the node. ifindex alone is
 * only unique within one netns, so the netns cookie comes with it. ifindex
 * 0 (no device has it) stands for the pod's network namespace as a whole:
 * the TCP programs (tcp.h) find the pod of a socket by it.
 */
struct pm_dev_key {
	__u64 netns_cookie;
	__u32 ifindex;
	__u32 pad;
};

struct pm_dev {
	__u32 host_ifindex; /* the pod, as pm_registry and pm_counters key it */
	__u32 side; /* enum pm_side */
};

/* 64-bit words of the after-egress drop reason bitmap: reasons 0..255. */
#define PM_REASON_WORDS 4

#define PM_MAX_IPS 4

struct pm_ip {
	__u8 family; /* AF_INET (2) or AF_INET6 (10); 0 = unused slot */
	__u8 prefix_len;
	__u8 pad[2];
	__u8 addr[16]; /* network byte order; IPv4 uses the first 4 bytes */
};

/*
 * pm_registry value: who is behind a host veth. Strings are NUL-padded and
 * sized for Kubernetes' limits (namespace 63, pod name 253, UID 36). Written
 * whole by one map update, so a reader never sees half an entry.
 */
struct pm_pod_info {
	char k8s_namespace[64];
	char k8s_pod[256];
	char k8s_uid[64];
	char container_id[128];
	char network[128]; /* CNI network name: GC and DEL act on their own network only */
	char ifname[16]; /* pod-side interface (CNI_IFNAME) */
	char host_ifname[16];
	struct pm_ip ips[PM_MAX_IPS];
	__u32 n_ips;
	__u32 flags; /* reserved, 0 */
};

/*
 * pm_sources value, keyed by the pod's host veth ifindex (__u32): who the
 * pod may send as (validate.h), as ADD configured it, and its gateways
 * (routers whose ICMP errors about the pod's flows pass its policy).
 * Written by userspace before the pod's links come up.
 */
#define PM_MAX_GATEWAYS 2
struct pm_source {
	__u8 mac[6]; /* the pod interface's */
	__u8 pad[2];
	__u8 link_local[16]; /* fe80::/64 EUI-64 of mac */
	struct pm_ip ips[PM_MAX_IPS]; /* family 0 = unused slot */
	struct pm_ip gateways[PM_MAX_GATEWAYS];
};

/*
 * Per-pod policy. A pod with a pm_policy entry has its packets checked
 * against its rules (pm_rules) and its flows tracked (its pm_flow_tables
 * table); a pod
 * without one is only counted. Written by userspace only.
 */
enum pm_action {
	PM_ACTION_ALLOW = 0,
	PM_ACTION_DENY = 1,
};

/*
 * pm_policy value, keyed by the pod's host veth ifindex (__u32). userspace
 * bumps generation with every change of the pod's rules or defaults, by any
 * owner: a flow's verdict is reused only while the generation it was made
 * under stands, so a change takes effect at the next packet of every flow.
 */
struct pm_policy {
	/* enum pm_action, indexed by enum pm_direction: the effective default
	 * (the operator's if set, else the config's, else allow). */
	__u8 default_action[2];
	/* 1: Kubernetes NetworkPolicy isolates the pod in that direction, so
	 * what no admin rule decides is allowed only by the kubernetes tier
	 * (k8s_policy.h), never by the default. */
	__u8 k8s_isolated[2];
	__u32 generation;
	/* userspace only: each admin owner's own default, [PM_OWNER_x - 1]
	 * [direction]: 0 unset, else enum pm_action + 1. */
	__u8 owner_default[2][2];
	__u8 pad[4];
};

/* Who wrote a rule or default (pm_rule.owner; userspace only). The
 * kubernetes owner's rules live in pm_k8s_rules, not pm_rules. */
#define PM_OWNER_CONFIG 1 /* the CNI config's policy, applied by ADD */
#define PM_OWNER_OPERATOR 2 /* podmeterctl policy add/delete/default */

/* pm_rule.proto: an IPPROTO_* value (TCP 6, UDP 17, ICMP 1, ICMPV6 58) or any. */
#define PM_PROTO_ANY 0
/* pm_rule.flags: the rule matches only packets with ports (TCP, UDP, SCTP,
 * first fragments) whose destination port is in [port_lo, port_hi]. */
#define PM_RULE_PORTS 1
/* pm_rule.flags, for userspace only: the rule was given without a CIDR and
 * is stored under both families' /0. */
#define PM_RULE_ANY_ADDRESS 2

struct pm_rule {
	__u32 id; /* unique per pod, chosen by userspace */
	__u8 proto;
	__u8 action; /* enum pm_action */
	__u8 flags;
	__u8 owner; /* PM_OWNER_*, userspace only */
	__u16 port_lo; /* host byte order, inclusive */
	__u16 port_hi;
};

/*
 * pm_rules key (an LPM trie): the pod, direction and address family are a
 * fixed 64-bit prefix, followed by the remote address. prefixlen counts
 * those 64 bits plus the CIDR's prefix length.
 */
#define PM_RULE_KEY_FIXED_BITS 64
struct pm_rule_key {
	__u32 prefixlen;
	__u32 ifindex; /* host veth of the pod */
	__u8 direction; /* enum pm_direction */
	__u8 family; /* AF_INET or AF_INET6 */
	__u8 pad[2];
	__u8 addr[16]; /* network byte order; IPv4 uses the first 4 bytes */
};

/*
 * pm_rules value: every rule of one pod, direction and CIDR, in the order
 * they are tried (userspace sorts them: specific protocol before any,
 * narrower port ranges first, deny before allow on a tie). If none matches,
 * the next shorter CIDR holding the address is tried, then the default.
 */
#define PM_RULES_PER_PREFIX 16
struct pm_rule_set {
	__u32 prefix_len; /* the CIDR's, without the fixed bits */
	__u32 n_rules;
	struct pm_rule rules[PM_RULES_PER_PREFIX];
};

/* Distinct (pod, direction, CIDR) entries the node can hold. */
#define PM_MAX_RULE_PREFIXES 65536

/*
 * The kubernetes tier (k8s_policy.h): what NetworkPolicy allows a pod
 * isolated in a direction, written by the node agent.
 *
 * pm_peers key (an LPM trie, node-wide): who a remote address is. prefixlen
 * counts the 32 fixed bits (family and pad) plus the address bits.
 */
#define PM_PEER_KEY_FIXED_BITS 32
struct pm_peer_key {
	__u32 prefixlen;
	__u8 family; /* AF_INET or AF_INET6 */
	__u8 pad[3];
	__u8 addr[16]; /* network byte order; IPv4 uses the first 4 bytes */
};

/*
 * pm_peers value. A pod IP (a full-length prefix) carries the identity of
 * its pod's class and that of the CIDR region holding it; a region (from
 * ipBlocks, flattened so that the longest prefix decides) carries
 * pod_identity 0 and its own. Identities are the agent's; 0 is none.
 */
struct pm_peer {
	__u32 pod_identity;
	__u32 cidr_identity;
};

/* The node itself: always allowed by the kubernetes tier (kubelet probes). */
#define PM_IDENTITY_HOST 1

/*
 * pm_k8s_rules key (an LPM trie, per pod): the pod, direction, protocol and
 * peer identity are 96 fixed bits, then the destination port, big-endian so
 * that its bits are prefix bits: a port range is stored as the prefixes
 * covering it. proto 0 with a 96-bit prefix allows every protocol and port
 * (a NetworkPolicy rule without ports); a protocol with a 96-bit prefix,
 * every port of it. identity 0: any peer.
 */
#define PM_K8S_KEY_FIXED_BITS 96
struct pm_k8s_rule_key {
	__u32 prefixlen;
	__u32 ifindex; /* host veth of the pod */
	__u8 direction; /* enum pm_direction */
	__u8 proto; /* IPPROTO_TCP, _UDP, _SCTP, or 0: any */
	__u16 pad;
	__u32 identity; /* the peer's (pm_peer), 0: any */
	__be16 port; /* destination port */
	__u16 pad2;
};

/* pm_k8s_rules value: which NetworkPolicy allowed it (pm_k8s_policies). */
struct pm_k8s_rule {
	__u32 policy;
};

/* pm_k8s_policies value, keyed by pm_k8s_rule.policy (__u32): the
 * NetworkPolicy's "namespace/name", NUL-padded; userspace only. */
#define PM_K8S_POLICY_NAME_LEN 320
struct pm_k8s_policy_name {
	char name[PM_K8S_POLICY_NAME_LEN];
};

#define PM_MAX_PEERS 65536
#define PM_MAX_K8S_RULES 262144
#define PM_MAX_K8S_POLICIES 16384

/*
 * The key of a pod's flow table: a flow of a pod with policy, from the pod's
 * side. ICMP echo uses the identifier as pod_port (remote_port 0); other
 * ICMP has no ports. The ifindex is the table's pod (the per-CPU last-flow
 * cache compares it).
 */
struct pm_flow_key {
	__u32 ifindex; /* host veth of the pod */
	__u8 family;
	__u8 proto;
	__u16 pod_port; /* host byte order */
	__u16 remote_port;
	__u16 pad;
	__u8 remote[16]; /* network byte order */
};

struct pm_flow {
	__u64 last_seen_ns; /* bpf_ktime_get_coarse_ns() */
	__u32 opened_by; /* enum pm_direction of the packet that opened it */
	__u32 generation; /* the pod's policy generation its rules allowed it under */
};

/*
 * Flows a pod may have open per opening direction: flows it opened
 * (opened_by transmit) and flows others opened towards it (receive). A pod
 * has a flow table of its own (pm_flow_tables, created by userspace with
 * its policy) with room for both budgets, so no pod's flows, and no
 * direction's, can take another's room. A new flow beyond the budget, after
 * a sweep of the pod's expired flows, is not recorded (refused).
 */
#define PM_FLOW_BUDGET 8192
#define PM_FLOWS_PER_POD (2 * PM_FLOW_BUDGET)

/*
 * pm_flow_state value, keyed by the pod's host ifindex (__u32): the
 * occupancy of its flow table and the policy's verdicts on new flows,
 * indexed by enum pm_direction (opened_by). userspace creates it zeroed
 * with the table, before the pod's pm_policy entry, and removes it after;
 * the programs keep it with atomic adds.
 */
struct pm_flow_state {
	__u64 flows[2]; /* entries in the pod's table */
	__u64 refused[2]; /* new flows not recorded: the budget was spent */
	__u64 reclaimed[2]; /* expired flows deleted to make room */
	__u64 swept_ns; /* when the table was last swept for expired flows */
	/* Packets no live flow let through, on which the pod's policy
	 * decided (policy.h): a new flow's first packet, or a flow's next
	 * packet after a policy change. A denied flow opens nothing, so each
	 * of its packets (a retransmitted SYN) is a decision of its own. */
	__u64 allowed[2];
	__u64 denied[2];
};

/*
 * podmeter's own drop reason in pm_drops, for packets its policy denied.
 * Above every kernel's enum skb_drop_reason (whose subsystems use the high
 * 16 bits from 0 upwards), so the two never collide.
 */
#define PM_DROP_POLICY_DENIED 0xffff0001u
/* A pod sent as someone else, tagged a frame or acted as a router (validate.h). */
#define PM_DROP_SPOOFED_SOURCE 0xffff0002u
/* A packet that could not be classified to its end (parse.h), from a pod
 * or to a pod with policy. */
#define PM_DROP_UNPARSABLE 0xffff0003u

/*
 * pm_tcp value, per CPU, keyed by the pod's host veth ifindex (__u32): the
 * TCP statistics of the pod's network namespace, counted where the kernel
 * counts its own (tcp.h). Userspace creates it zeroed at ADD; the
 * programs never insert.
 */
/* RTT histogram bounds: 50 us << i for i in 0..PM_TCP_RTT_BOUNDS-1
 * (50 us ... 3.2768 s); one more slot for anything above. */
#define PM_TCP_RTT_BOUNDS 17
#define PM_TCP_RTT_FIRST_US 50
struct pm_tcp {
	__u64 retransmits; /* segments: TcpRetransSegs */
	__u64 resets_sent; /* TcpOutRsts */
	__u64 active_opens; /* TcpActiveOpens */
	__u64 passive_opens; /* TcpPassiveOpens */
	__u64 established; /* TcpCurrEstab: this CPU's share, may wrap below 0 */
	__u64 rtt_count; /* connections ended with an RTT observed */
	__u64 rtt_sum_us; /* their smoothed RTTs, microseconds */
	__u64 rtt_buckets[PM_TCP_RTT_BOUNDS + 1]; /* not cumulative */
};

#define PM_MAX_PODS 8192
/* Distinct (pod, direction, reason) drop entries the node can hold. */
#define PM_MAX_DROP_KEYS (16 * PM_MAX_PODS)

_Static_assert(sizeof(struct pm_counter_key) == 8, "pm_counter_key layout");
_Static_assert(sizeof(struct pm_counter) == 16, "pm_counter layout");
_Static_assert(sizeof(struct pm_drop_key) == 16, "pm_drop_key layout");
_Static_assert(sizeof(struct pm_dev_key) == 16, "pm_dev_key layout");
_Static_assert(sizeof(struct pm_dev) == 8, "pm_dev layout");
_Static_assert(sizeof(struct pm_ip) == 20, "pm_ip layout");
_Static_assert(sizeof(struct pm_pod_info) == 760, "pm_pod_info layout");

_Static_assert(sizeof(struct pm_source) == 144, "pm_source layout");
_Static_assert(sizeof(struct pm_policy) == 16, "pm_policy layout");
_Static_assert(sizeof(struct pm_peer_key) == 24, "pm_peer_key layout");
_Static_assert(sizeof(struct pm_peer) == 8, "pm_peer layout");
_Static_assert(sizeof(struct pm_k8s_rule_key) == 20, "pm_k8s_rule_key layout");
_Static_assert(sizeof(struct pm_k8s_rule) == 4, "pm_k8s_rule layout");
_Static_assert(sizeof(struct pm_k8s_policy_name) == 320, "pm_k8s_policy_name layout");
_Static_assert(sizeof(struct pm_rule) == 12, "pm_rule layout");
_Static_assert(sizeof(struct pm_rule_key) == 28, "pm_rule_key layout");
_Static_assert(sizeof(struct pm_rule_set) == 200, "pm_rule_set layout");
_Static_assert(sizeof(struct pm_flow_key) == 28, "pm_flow_key layout");
_Static_assert(sizeof(struct pm_flow) == 16, "pm_flow layout");
_Static_assert(sizeof(struct pm_flow_state) == 88, "pm_flow_state layout");
_Static_assert(sizeof(struct pm_tcp) == 200, "pm_tcp layout");

#endif /* PODMETER_H */
