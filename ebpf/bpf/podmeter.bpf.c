// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * tc programs attached to each pod's host-side veth. They count, drop what
 * a pod sends as someone else (validate.h), and for a pod with policy
 * (policy.h) drop what its rules deny. Everything else
 * returns TC_ACT_UNSPEC so that, under TCX, any program attached after ours
 * (another tool's policy, say) still runs and decides the packet's fate.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "fragments.h"
#include "parse.h"
#include "podmeter.h"
#include "policy.h"
#include "validate.h"

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

/* Pod devices (both veth ends, and the pod's netns) by netns and ifindex,
 * written by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 3 * PM_MAX_PODS);
	__type(key, struct pm_dev_key);
	__type(value, struct pm_dev);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_devices SEC(".maps");

/*
 * Drops by pod, direction and reason. Unlike pm_counters the program inserts
 * here (reasons are not known in advance), so entries are allocated on
 * demand rather than preallocated for every possible key.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, PM_MAX_DROP_KEYS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pm_drop_key);
	__type(value, struct pm_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_drops SEC(".maps");

/*
 * Drop reasons (a bitmap by enum skb_drop_reason value) that hit a packet on
 * the host veth only after pm_egress counted it: the qdisc's (a shaping tbf,
 * a down link). The loader sets it from the running kernel's BTF, since reason
 * values differ between kernels. Such drops are taken back out of the pod's
 * receive counters, which then count what reached the pod, as the veth's own
 * transmit counters do; they stay visible in pm_drops.
 */
const volatile __u64 pm_after_egress_reasons[PM_REASON_WORDS] = {};

/* The drop reasons of a tc program's TC_ACT_SHOT (TC_INGRESS, TC_EGRESS),
 * set by the loader like the bitmap above. */
const volatile __u64 pm_tc_drop_reasons[PM_REASON_WORDS] = {};

/*
 * Drop reasons that hit a frame on its way into a veth end, after the peer
 * end transmitted it and before this end received it: veth_xmit hands the
 * frame to the peer (__dev_forward_skb sets skb->dev to the peer and pulls
 * the Ethernet header) and queues it on the CPU's backlog, whose
 * enqueue_to_backlog drops it with CPU_BACKLOG when the backlog is full and
 * DEV_READY when the end is not running (so does flush_backlog when it goes
 * away). skb_iif is not the end's yet. Set by the loader like the bitmaps
 * above. On the pod's end such a frame is one pm_egress counted: it is a
 * receive drop, taken back out of the counters; on the host end it is one
 * the pod transmitted, before pm_ingress saw it.
 */
const volatile __u64 pm_arrival_reasons[PM_REASON_WORDS] = {};

/* Drop reasons of a packet socket (PACKET_SOCK_ERROR): see copy_of_sent(). */
const volatile __u64 pm_packet_socket_reasons[PM_REASON_WORDS] = {};

/* NOT_SPECIFIED, set by the loader like the bitmaps above: the reason the
 * kernel gives a multicast packet for a group the receiving stack has not
 * joined (see not_joined()). */
const volatile __u64 pm_unjoined_mcast_reasons[PM_REASON_WORDS] = {};

static __always_inline int reason_in(const volatile __u64 *bitmap, unsigned int reason)
{
	unsigned int word = reason / 64;

	if (word >= PM_REASON_WORDS)
		return 0;
	/* clang may share one bound check between several calls; the verifier
	 * needs the bound on each path. The barrier hides the check from clang,
	 * so the mask (a no-op here: PM_REASON_WORDS is a power of two) stays. */
	barrier_var(word);
	return (bitmap[word & (PM_REASON_WORDS - 1)] >> (reason % 64)) & 1;
}

/*
 * The host veth of the packet a tc program just denied on this CPU (0:
 * none). The kernel frees a TC_ACT_SHOT packet on the same CPU right after
 * the program returns, so the drop tracer, seeing this mark, knows the drop
 * was counted with podmeter's own reason already and does not count it again.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} pm_denied SEC(".maps");

/*
 * Just the kernel fields the drop tracer reads; CO-RE relocates each access
 * against the running kernel's BTF, so no vmlinux.h is needed.
 */
struct net {
	__u64 net_cookie;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	unsigned int len;
	int skb_iif;
	__u8 pkt_type : 3;
	__u16 mac_header;
	__u16 network_header;
	__be16 protocol;
	unsigned char *head;
	unsigned char *data;
	char cb[48];
} __attribute__((preserve_access_index));

/* linux/if_packet.h: skb->pkt_type of the copies of a sent packet, see
 * copy_of_sent(). */
#define PACKET_OUTGOING 4
#define PACKET_LOOPBACK 5

/*
 * Whether a packet the pod received and the kernel freed with one of
 * pm_unjoined_mcast_reasons is multicast: MLD reports (to ff02::16), other
 * hosts' DAD and neighbour solicitations, IGMP reports, which the bridge
 * floods to every port and the pod's stack, not a member of those groups,
 * frees without a reason (ip6_mc_input, ip_rcv_finish_core). Not a drop in
 * an operator's sense (the kernel counts it nowhere), only noise after
 * every ADD: not counted.
 */
static __always_inline int not_joined(struct sk_buff *skb, unsigned int reason)
{
	__be16 protocol = BPF_CORE_READ(skb, protocol);
	unsigned char *head;
	unsigned int offset;
	__u8 first = 0;

	if (!reason_in(pm_unjoined_mcast_reasons, reason))
		return 0;
	/* The destination address's offset in the IP header. */
	if (protocol == bpf_htons(0x86DD /* ETH_P_IPV6 */))
		offset = 24;
	else if (protocol == bpf_htons(0x0800 /* ETH_P_IP */))
		offset = 16;
	else
		return 0;
	head = BPF_CORE_READ(skb, head);
	if (bpf_probe_read_kernel(&first, 1, head + BPF_CORE_READ(skb, network_header) + offset))
		return 0;
	/* ff00::/8, 224.0.0.0/4 */
	return offset == 24 ? first == 0xff : (first & 0xf0) == 0xe0;
}

/* The pod's drop counter for key, created at the first drop. */
static __always_inline struct pm_counter *drop_counter(const struct pm_drop_key *key)
{
	struct pm_counter *c = bpf_map_lookup_elem(&pm_drops, key);

	if (!c) {
		struct pm_counter zero = {};

		bpf_map_update_elem(&pm_drops, key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&pm_drops, key);
	}
	return c;
}

/* Adds one packet of len bytes to c. */
static __always_inline void count(struct pm_counter *c, __u32 len)
{
	c->packets += 1;
	c->bytes += len;
}

/* Counts a packet podmeter drops (len bytes, reason one of podmeter's
 * own) and drops it. */
static __always_inline int deny(struct __sk_buff *skb, __u32 direction, __u32 reason, __u32 len)
{
	struct pm_drop_key key = {
		.ifindex = skb->ifindex,
		.direction = direction,
		.reason = reason,
	};
	struct pm_counter *c = drop_counter(&key);
	__u32 zero = 0;
	__u32 *mark;

	if (c)
		count(c, len);
	mark = bpf_map_lookup_elem(&pm_denied, &zero);
	if (mark)
		*mark = skb->ifindex;
	return TC_ACT_SHOT;
}

/*
 * 0 if the pod behind this host veth may pass the packet (parsed into p
 * with parse()'s result), else the drop reason: none without policy;
 * with policy, what the rules say, and a packet that could not be parsed
 * to its end is never allowed.
 */
static __always_inline __u32 policy_verdict(struct __sk_buff *skb, __u32 direction,
					    const struct pm_policy *pol, struct pm_packet *p,
					    int parsed)
{
	__u32 ifindex = skb->ifindex;

	if (parsed == PM_PARSE_BAD)
		return PM_DROP_UNPARSABLE;
	if (parsed == PM_PARSE_NOT_IP)
		return skb->protocol == bpf_htons(ETH_P_ARP) ||
				       pol->default_action[direction & 1] == PM_ACTION_ALLOW ?
			       0 :
			       PM_DROP_POLICY_DENIED;
	if (frag_follows(ifindex, direction, p))
		return 0;
	if (!policy_allows(ifindex, direction, pol, p))
		return PM_DROP_POLICY_DENIED;
	frag_allowed(ifindex, direction, p);
	return 0;
}

static __always_inline struct pm_counter *pod_counter(struct __sk_buff *skb, __u32 direction)
{
	struct pm_counter_key key = {
		.ifindex = skb->ifindex,
		.direction = direction,
	};

	return bpf_map_lookup_elem(&pm_counters, &key);
}

/*
 * Host veth ingress: the pod transmitted this packet. The veth counted it
 * as sent whatever happens to it next, and so do we, with the bytes the
 * veth counted: a VLAN tag the kernel popped on the way in (vlan_present)
 * was in the frame the pod sent. Then the source is checked (validate.h),
 * then the pod's policy, if any.
 */
SEC("classifier")
int pm_ingress(struct __sk_buff *skb)
{
	struct pm_counter *c = pod_counter(skb, PM_DIR_TRANSMIT);
	__u32 len = skb->len + (skb->vlan_present ? 4 : 0);
	__u32 ifindex = skb->ifindex;
	const struct pm_source *s;
	struct pm_policy *pol;
	__u32 reason;

	if (!c)
		return TC_ACT_UNSPEC;
	count(c, len);
	s = pod_source(ifindex);
	pol = bpf_map_lookup_elem(&pm_policy, &ifindex);
	reason = source_frame(skb, s);
	if (!reason)
		reason = source_quick(skb, s);
	/* The full parse only where validation or policy needs it. */
	if (reason == PM_CHECK_PARSE || (!reason && pol)) {
		struct pm_packet p = {};
		int parsed = parse(skb, &p);

		if (reason == PM_CHECK_PARSE)
			reason = source_check(skb, s, &p, parsed);
		if (!reason && pol)
			reason = policy_verdict(skb, PM_DIR_TRANSMIT, pol, &p, parsed);
	}
	return reason ? deny(skb, PM_DIR_TRANSMIT, reason, len) : TC_ACT_UNSPEC;
}

/* Host veth egress: the pod will receive this packet, unless its policy
 * denies it, in which case it never reaches the pod and is not counted. */
SEC("classifier")
int pm_egress(struct __sk_buff *skb)
{
	struct pm_counter *c = pod_counter(skb, PM_DIR_RECEIVE);
	__u32 ifindex = skb->ifindex;
	struct pm_policy *pol;

	if (!c)
		return TC_ACT_UNSPEC;
	pol = bpf_map_lookup_elem(&pm_policy, &ifindex);
	if (pol) {
		struct pm_packet p = {};
		int parsed = parse(skb, &p);
		__u32 reason = policy_verdict(skb, PM_DIR_RECEIVE, pol, &p, parsed);

		if (reason)
			return deny(skb, PM_DIR_RECEIVE, reason, skb->len);
	}
	count(c, skb->len);
	return TC_ACT_UNSPEC;
}

/*
 * For a frame arriving on skb->dev, the bytes of its Ethernet header, which
 * __dev_forward_skb's eth_type_trans pulled and the veth counted; 0 for any
 * other. Arriving: dropped for one of the arrival reasons with that header
 * pulled. A frame the device itself was transmitting has its data at the
 * MAC header (__dev_queue_xmit resets it there), and so has the pod's own
 * broadcast or multicast looped back to it (dev_loopback_xmit), which the
 * backlog may drop too.
 */
static __always_inline unsigned int arrival_pulled(struct sk_buff *skb, unsigned int reason)
{
	unsigned char *head, *data;
	__u16 mac;
	long pulled;

	if (!reason_in(pm_arrival_reasons, reason))
		return 0;
	head = BPF_CORE_READ(skb, head);
	data = BPF_CORE_READ(skb, data);
	mac = BPF_CORE_READ(skb, mac_header);
	pulled = data - (head + mac);
	/* (__u16)~0: no MAC header set (skb_mac_header_was_set). A link header
	 * is a few bytes; anything else is not a pulled one. */
	return mac != (__u16)~0 && pulled > 0 && pulled <= 64 ? pulled : 0;
}

/*
 * Whether the packet is a copy of one the device sent, dropped while the
 * original went on, so not a drop of the pod's traffic:
 * - a tap's copy: dev_queue_xmit_nit gives every packet socket (a tcpdump)
 *   a clone of each transmitted frame, marked PACKET_OUTGOING, while the
 *   frame goes to the driver. A socket that cannot keep up (a full receive
 *   buffer or ring) drops it with PACKET_SOCK_ERROR. A packet socket
 *   reports a drop only when it held the last reference: a received frame
 *   the stack took as well is only unreferenced there, unseen here.
 * - the pod's own broadcast or multicast looped back to its own stack
 *   (dev_loopback_xmit, PACKET_LOOPBACK): it never crosses the veth, and
 *   a full backlog drops it like anything else.
 */
static __always_inline int copy_of_sent(struct sk_buff *skb, unsigned int reason)
{
	__u8 type = BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type);

	return type == PACKET_LOOPBACK ||
	       (type == PACKET_OUTGOING && reason_in(pm_packet_socket_reasons, reason));
}

/*
 * Every packet the kernel drops (not the ones it consumes) passes here. Only
 * drops on a registered pod device are counted. The direction comes from
 * where the packet entered: skb_iif is the device it was received on (0 if
 * it was generated locally), so on the pod's interface a received packet
 * is the pod receiving, and on the host veth a received one came from the
 * pod; a frame still arriving (see arrival_pulled()) counts as received.
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(pm_kfree_skb, struct sk_buff *skb, void *location, unsigned int reason)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	struct pm_dev_key dev_key = {};
	struct pm_drop_key key = {};
	struct pm_counter *c;
	struct pm_dev *d;
	unsigned int len;
	unsigned int pulled;
	int received;

	if (!dev)
		return 0;
	dev_key.netns_cookie = BPF_CORE_READ(dev, nd_net.net, net_cookie);
	dev_key.ifindex = BPF_CORE_READ(dev, ifindex);
	d = bpf_map_lookup_elem(&pm_devices, &dev_key);
	if (!d)
		return 0;

	if (d->side == PM_SIDE_HOST && reason_in(pm_tc_drop_reasons, reason)) {
		__u32 zero = 0;
		__u32 *mark = bpf_map_lookup_elem(&pm_denied, &zero);

		if (mark && *mark == dev_key.ifindex) {
			*mark = 0; /* counted by deny() with podmeter's own reason */
			return 0;
		}
	}

	if (copy_of_sent(skb, reason))
		return 0;
	pulled = arrival_pulled(skb, reason);
	received = pulled || BPF_CORE_READ(skb, skb_iif) == (int)dev_key.ifindex;
	if (d->side == PM_SIDE_POD && received && not_joined(skb, reason))
		return 0;
	key.ifindex = d->host_ifindex;
	key.direction = (received == (d->side == PM_SIDE_POD)) ? PM_DIR_RECEIVE : PM_DIR_TRANSMIT;
	key.reason = reason;
	c = drop_counter(&key);
	if (!c)
		return 0;
	/* An arriving frame as the veth counted it, with its link header. */
	len = BPF_CORE_READ(skb, len) + pulled;
	count(c, len);

	/* What pm_egress counted and the pod never got: dropped by the host
	 * veth's qdisc, or on the pod's end on its way in. */
	if (key.direction == PM_DIR_RECEIVE &&
	    (d->side == PM_SIDE_HOST ? reason_in(pm_after_egress_reasons, reason) : pulled)) {
		struct pm_counter_key counted = {
			.ifindex = d->host_ifindex,
			.direction = PM_DIR_RECEIVE,
		};

		/* Per-CPU: this CPU's share may wrap below zero; the sum over
		 * all CPUs, which is what userspace reads, does not. */
		c = bpf_map_lookup_elem(&pm_counters, &counted);
		if (c) {
			c->packets -= 1;
			c->bytes -= len;
		}
	}
	return 0;
}

/* The TCP statistics per pod, by the same devices map and kernel structs. */
#include "tcp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
