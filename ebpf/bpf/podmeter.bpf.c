// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * tc programs attached to each pod's host-side veth. They only count: both
 * return TC_ACT_UNSPEC so that, under TCX, any program attached after ours
 * (another tool's policy, say) still runs and decides the packet's fate.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "podmeter.h"

/*
 * Per-CPU so concurrent packets on different CPUs never lose an update.
 * Userspace creates both entries of a pod (zeroed) before the veth comes up
 * and deletes them on DEL; the programs never insert, so a packet still in
 * flight after DEL cannot resurrect a deleted pod's entry.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 2 * PM_MAX_PODS);
	__type(key, struct pm_counter_key);
	__type(value, struct pm_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_counters SEC(".maps");

/* Pod identity by host veth ifindex; written and read by userspace only. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PM_MAX_PODS);
	__type(key, __u32);
	__type(value, struct pm_pod_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_registry SEC(".maps");

static __always_inline int count(struct __sk_buff *skb, __u32 direction)
{
	struct pm_counter_key key = {
		.ifindex = skb->ifindex,
		.direction = direction,
	};
	struct pm_counter *c = bpf_map_lookup_elem(&pm_counters, &key);

	if (c) {
		c->packets += 1;
		c->bytes += skb->len;
	}
	return TC_ACT_UNSPEC;
}

/* Host veth ingress: the pod transmitted this packet. */
SEC("classifier")
int pm_ingress(struct __sk_buff *skb)
{
	return count(skb, PM_DIR_TRANSMIT);
}

/* Host veth egress: the pod will receive this packet. */
SEC("classifier")
int pm_egress(struct __sk_buff *skb)
{
	return count(skb, PM_DIR_RECEIVE);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
