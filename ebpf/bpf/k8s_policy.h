/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The kubernetes tier of a pod's policy (policy.h asks it only for a new
 * flow of a pod that NetworkPolicy isolates in that direction, when no
 * admin rule decided): is the packet allowed by some NetworkPolicy? The
 * node agent writes who each remote address is (pm_peers) and what each
 * pod allows (pm_k8s_rules); the README's "Policy" section says the same.
 */
#ifndef PODMETER_K8S_POLICY_H
#define PODMETER_K8S_POLICY_H

#include "parse.h"
#include "podmeter.h"
#include "validate.h"

/* Who a remote address is; node-wide, written by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PM_MAX_PEERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pm_peer_key);
	__type(value, struct pm_peer);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_peers SEC(".maps");

/* What each isolated pod allows, by direction, protocol, peer and port. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PM_MAX_K8S_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pm_k8s_rule_key);
	__type(value, struct pm_k8s_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_k8s_rules SEC(".maps");

/* NetworkPolicy names, for podmeterctl only: the programs never read it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PM_MAX_K8S_POLICIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct pm_k8s_policy_name);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_k8s_policies SEC(".maps");

/* Whether the pod allows peer identity id: its packet's protocol and port
 * (a packet without ports: that protocol's every-port entry), then a rule
 * for every protocol. */
static __always_inline int k8s_allows_peer(struct pm_k8s_rule_key *k, __u32 id,
					   const struct pm_tuple *t)
{
	k->identity = id;
	k->proto = t->proto;
	k->prefixlen = PM_K8S_KEY_FIXED_BITS + (t->has_ports ? 16 : 0);
	if (bpf_map_lookup_elem(&pm_k8s_rules, k))
		return 1;
	k->proto = 0;
	k->prefixlen = PM_K8S_KEY_FIXED_BITS;
	return bpf_map_lookup_elem(&pm_k8s_rules, k) != NULL;
}

/*
 * Whether NetworkPolicy allows this packet of a pod isolated in direction
 * dir: the node (a gateway of the pod, or an address of identity HOST)
 * always; else some rule for the remote's pod identity, its CIDR region's,
 * or any peer (at most 6 trie lookups, for new flows only).
 */
static __always_inline int k8s_allows(__u32 ifindex, __u32 dir, const struct pm_tuple *t)
{
	const __u8 *remote = dir == PM_DIR_RECEIVE ? t->saddr : t->daddr;
	struct pm_peer_key pk = {
		.prefixlen = PM_PEER_KEY_FIXED_BITS + (t->family == AF_INET ? 32 : 128),
		.family = t->family,
	};
	struct pm_k8s_rule_key k = {
		.ifindex = ifindex,
		.direction = dir,
		.port = bpf_htons(t->dport),
	};
	struct pm_peer *peer;
	__u32 pod = 0, cidr = 0;

	__builtin_memcpy(pk.addr, remote, 16);
	peer = bpf_map_lookup_elem(&pm_peers, &pk);
	if (peer) {
		pod = peer->pod_identity;
		cidr = peer->cidr_identity;
	}
	if (pod == PM_IDENTITY_HOST || cidr == PM_IDENTITY_HOST ||
	    pod_gateway(ifindex, t->family, remote))
		return 1;
	if (pod && k8s_allows_peer(&k, pod, t))
		return 1;
	if (cidr && cidr != pod && k8s_allows_peer(&k, cidr, t))
		return 1;
	return k8s_allows_peer(&k, 0, t);
}

#endif /* PODMETER_K8S_POLICY_H */
