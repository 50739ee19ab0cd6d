/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Fragments of datagrams a pod's policy let through. A non-first fragment
 * carries no ports, so it cannot be matched to its flow; without this a
 * default-deny pod never received a UDP reply larger than its path's MTU
 * (large DNS answers, say). The first fragment, which has the ports, is
 * decided as any packet; if it passes, its datagram's id is remembered for
 * PM_FRAG_TIMEOUT_NS (the kernel's own reassembly timeout is 30 s too), and
 * the later fragments of that datagram pass. Unrelated later fragments meet
 * the rules as before (only rules without ports match them).
 *
 * An LRU of PM_MAX_FRAG_DATAGRAMS datagrams for the node, not pinned (the
 * programs' own): a node with more fragmented datagrams in flight at once
 * loses the oldest, whose later fragments then meet the rules.
 */
#ifndef PODMETER_FRAGMENTS_H
#define PODMETER_FRAGMENTS_H

#include "parse.h"
#include "podmeter.h"

#define PM_MAX_FRAG_DATAGRAMS 16384
#define PM_FRAG_TIMEOUT_NS (30ULL * 1000000000ULL)

struct pm_frag_key {
	__u32 ifindex; /* host veth of the pod */
	__u32 id; /* IPv4 identification or IPv6 fragment id */
	__u8 direction; /* enum pm_direction */
	__u8 family;
	__u8 proto;
	__u8 pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PM_MAX_FRAG_DATAGRAMS);
	__type(key, struct pm_frag_key);
	__type(value, __u64); /* when its first fragment passed (coarse clock) */
} pm_frags SEC(".maps");

static __always_inline void frag_key(struct pm_frag_key *k, __u32 ifindex, __u32 dir,
				     const struct pm_packet *p)
{
	k->ifindex = ifindex;
	k->id = p->frag_id;
	k->direction = dir;
	k->family = p->t.family;
	/* What reassembly keys a datagram by: IPv6 leaves out the protocol
	 * (a later fragment's next header need not be the transport's). */
	k->proto = p->t.family == AF_INET ? p->t.proto : 0;
	__builtin_memcpy(k->saddr, p->t.saddr, 16);
	__builtin_memcpy(k->daddr, p->t.daddr, 16);
}

/* Remembers the datagram of an allowed first fragment. */
static __always_inline void frag_allowed(__u32 ifindex, __u32 dir, const struct pm_packet *p)
{
	struct pm_frag_key k = {};
	__u64 now;

	if (p->frag != PM_FRAG_FIRST)
		return;
	frag_key(&k, ifindex, dir, p);
	now = bpf_ktime_get_coarse_ns();
	bpf_map_update_elem(&pm_frags, &k, &now, BPF_ANY);
}

/* Whether p is a later fragment of a datagram whose first fragment passed. */
static __always_inline int frag_follows(__u32 ifindex, __u32 dir, const struct pm_packet *p)
{
	struct pm_frag_key k = {};
	__u64 *first;

	if (p->frag != PM_FRAG_LATER)
		return 0;
	frag_key(&k, ifindex, dir, p);
	first = bpf_map_lookup_elem(&pm_frags, &k);
	return first && bpf_ktime_get_coarse_ns() - *first < PM_FRAG_TIMEOUT_NS;
}

#endif /* PODMETER_FRAGMENTS_H */
