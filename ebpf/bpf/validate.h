/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Source validation of what a pod transmits, policy or not: a pod may send
 * only as itself, as ADD configured it (its MAC, its addresses: pm_sources),
 * and may not act as a router. Without it a pod could send with another
 * pod's address past that pod's peers' rules, take another pod's MAC on the
 * bridge, poison neighbour caches, or hand out routes with RAs.
 *
 * Dropped as PM_DROP_SPOOFED_SOURCE:
 * - every frame of a pod without a pm_sources entry (fail closed: the
 *   plugin writes the entry before the pod's links come up, so only a pod
 *   being removed, or a bug, has none);
 * - VLAN-tagged frames in any form (pods have no business tagging);
 * - an Ethernet source that is not the pod's MAC;
 * - ARP whose sender is not (the pod's MAC, one of its IPv4 addresses or
 *   0.0.0.0 for an RFC 5227 probe);
 * - IPv4 from another source; 0.0.0.0 only for DHCP (UDP 68 -> 67);
 * - IPv6 from another source than the pod's addresses and the EUI-64
 *   link-local of its MAC (the plugin sets addr_gen_mode=0 so the kernel
 *   derives exactly that one); :: only for a neighbour solicitation (DAD)
 *   and MLD reports;
 * - a neighbour advertisement for a target that is not the pod's;
 * - router advertisements and redirects (ICMPv6 134, 137; ICMP 5).
 * An IP packet that cannot be parsed to its end (parse.h) is dropped as
 * PM_DROP_UNPARSABLE: its source, or what it carries, cannot be vouched for.
 */
#ifndef PODMETER_VALIDATE_H
#define PODMETER_VALIDATE_H

#include "parse.h"
#include "podmeter.h"

/* Each pod's identity by host veth ifindex; written by userspace only. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PM_MAX_PODS);
	__type(key, __u32);
	__type(value, struct pm_source);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_sources SEC(".maps");

/*
 * A per-CPU copy of the entries of the pods this CPU last saw transmit,
 * direct-mapped by ifindex: a hit costs an array lookup the verifier
 * inlines instead of a hash lookup, on every packet a pod sends. An entry
 * never changes while its pod lives (ADD writes it once before the pod's
 * links come up; DEL removes it with the veth), and the kernel allocates
 * ifindexes cyclically, so a copy cannot outlive its pod into another pod
 * with the same ifindex. Not pinned: the programs' own.
 */
#define PM_SOURCE_SLOTS 64
struct pm_source_slot {
	__u32 ifindex; /* 0: empty (no device has ifindex 0) */
	__u32 pad;
	struct pm_source source;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PM_SOURCE_SLOTS);
	__type(key, __u32);
	__type(value, struct pm_source_slot);
} pm_source_cache SEC(".maps");

/* The pod's pm_sources entry (NULL: none), from this CPU's copy if it has one. */
static __always_inline const struct pm_source *pod_source(__u32 ifindex)
{
	__u32 slot = ifindex % PM_SOURCE_SLOTS;
	struct pm_source_slot *c = bpf_map_lookup_elem(&pm_source_cache, &slot);
	const struct pm_source *s;

	if (c && c->ifindex == ifindex)
		return &c->source;
	s = bpf_map_lookup_elem(&pm_sources, &ifindex);
	if (s && c) {
		c->ifindex = ifindex;
		c->source = *s;
	}
	return s;
}

/* Whether a (16 bytes, IPv4 in the first 4) equals b of family. */
static __always_inline int addr_eq(const __u8 *a, const __u8 *b, __u8 family)
{
	const __u32 *x = (const void *)a, *y = (const void *)b;

	if (family == AF_INET)
		return x[0] == y[0];
	return !((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]));
}

/* Whether addr of family is one of the n entries of ips. */
static __always_inline int addr_in(const struct pm_ip *ips, const int n, __u8 family,
				   const __u8 *addr)
{
	for (int i = 0; i < n; i++)
		if (ips[i].family == family && addr_eq(ips[i].addr, addr, family))
			return 1;
	return 0;
}

/* One of the pod's own addresses, link-local included. */
static __always_inline int pod_addr(const struct pm_source *s, __u8 family, const __u8 *addr)
{
	return addr_in(s->ips, PM_MAX_IPS, family, addr) ||
	       (family == AF_INET6 && addr_eq(s->link_local, addr, AF_INET6));
}

/* One of the pod's gateways: routers on the pod's path. */
static __always_inline int pod_gateway(__u32 ifindex, __u8 family, const __u8 *addr)
{
	const struct pm_source *s = bpf_map_lookup_elem(&pm_sources, &ifindex);

	return s && addr_in(s->gateways, PM_MAX_GATEWAYS, family, addr);
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

/* The unspecified address of family (0.0.0.0, ::). */
static __always_inline int all_zero(const __u8 *a, __u8 family)
{
	const __u32 *x = (const void *)a;

	if (family == AF_INET)
		return !x[0];
	return !(x[0] | x[1] | x[2] | x[3]);
}

/* ARP for IPv4 over Ethernet, as RFC 826 lays it out (<linux/if_arp.h>
 * pulls in libc headers a BPF build does not have). */
#define PM_ARPHRD_ETHER 1
struct pm_arp {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
} __attribute__((packed));

static __always_inline int arp_ok(struct __sk_buff *skb, const struct pm_source *s)
{
	struct pm_arp a;
	__u8 spa[16] = {};

	if (load(skb, ETH_HLEN, &a, sizeof(a)) || a.ar_hrd != bpf_htons(PM_ARPHRD_ETHER) ||
	    a.ar_pro != bpf_htons(ETH_P_IP) || a.ar_hln != ETH_ALEN || a.ar_pln != 4)
		return 0;
	__builtin_memcpy(spa, a.spa, 4);
	return mac_eq(a.sha, s->mac) && (all_zero(spa, AF_INET) || pod_addr(s, AF_INET, spa));
}

/* Whether an IPv6 packet from :: is one that must come from there. */
static __always_inline int unspecified_ok6(const struct pm_packet *p)
{
	return p->t.proto == IPPROTO_ICMPV6 &&
	       (p->icmp_type == 135 || p->icmp_type == 131 || p->icmp_type == 143);
}

static __always_inline int unspecified_ok4(const struct pm_packet *p)
{
	return p->t.proto == IPPROTO_UDP && p->t.has_ports && p->t.sport == 68 && p->t.dport == 67;
}

/* A router's message: pods are not routers. */
static __always_inline int router_message(const struct pm_packet *p)
{
	if (p->t.family == AF_INET)
		return p->icmp_type == 5;
	return p->icmp_type == 134 || p->icmp_type == 137;
}

/* A neighbour advertisement must be about one of the pod's addresses. */
static __always_inline int na_ok(struct __sk_buff *skb, const struct pm_packet *p,
				 const struct pm_source *s)
{
	__u8 target[16];

	if (p->t.family != AF_INET6 || p->icmp_type != 136)
		return 1;
	return !load(skb, p->l4_off + 8, target, sizeof(target)) &&
	       pod_addr(s, AF_INET6, target);
}

static __always_inline int ip_ok(struct __sk_buff *skb, const struct pm_packet *p,
				 const struct pm_source *s)
{
	__u8 family = p->t.family;

	if (!pod_addr(s, family, p->t.saddr) &&
	    !(all_zero(p->t.saddr, family) &&
	      (family == AF_INET ? unspecified_ok4(p) : unspecified_ok6(p))))
		return 0;
	return !router_message(p) && na_ok(skb, p, s);
}

/*
 * The frame's own check, first for every frame: 0 if it comes from the pod
 * with entry s (NULL: none) untagged and from the pod's MAC, else the drop
 * reason.
 */
static __always_inline __u32 source_frame(struct __sk_buff *skb, const struct pm_source *s)
{
	__u8 src[ETH_ALEN];

	if (!s || vlan_tagged(skb))
		return PM_DROP_SPOOFED_SOURCE;
	if (load(skb, ETH_ALEN, src, sizeof(src)) || !mac_eq(src, s->mac))
		return PM_DROP_SPOOFED_SOURCE;
	return 0;
}

/* source_quick()'s answer for a packet it leaves to source_check(). */
#define PM_CHECK_PARSE 1

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/*
 * Most of what pods send, checked without the full parse (the per-packet
 * cost of validation for a pod without policy): TCP, UDP or SCTP from a
 * specified source, without IPv6 extension headers, with its ports in the
 * packet. 0 if the source is the pod's, SPOOFED_SOURCE if not,
 * PM_CHECK_PARSE for anything else (ARP, ICMP, extension headers, the
 * unspecified source, a short packet), which source_check() decides.
 * Called after source_frame() passed the frame.
 */
static __always_inline __u32 source_quick(struct __sk_buff *skb, const struct pm_source *s)
{
	__u32 min_len;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (load(skb, ETH_HLEN, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5 ||
		    !has_ports(ip.protocol) || !ip.saddr)
			return PM_CHECK_PARSE;
		min_len = ETH_HLEN + ip.ihl * 4 + 4;
		if (!(ip.frag_off & bpf_htons(PM_IP_OFFSET)) && skb->len < min_len)
			return PM_CHECK_PARSE;
		return pod_addr(s, AF_INET, (const __u8 *)&ip.saddr) ? 0 : PM_DROP_SPOOFED_SOURCE;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (load(skb, ETH_HLEN, &ip6, sizeof(ip6)) || ip6.version != 6 ||
		    !has_ports(ip6.nexthdr) || all_zero((const __u8 *)&ip6.saddr, AF_INET6) ||
		    skb->len < ETH_HLEN + sizeof(ip6) + 4)
			return PM_CHECK_PARSE;
		return pod_addr(s, AF_INET6, (const __u8 *)&ip6.saddr) ? 0 : PM_DROP_SPOOFED_SOURCE;
	}
	return PM_CHECK_PARSE;
}

/*
 * 0 if the pod with entry s may transmit the packet (parsed into p, with
 * parse()'s result), else the drop reason. Called after source_frame()
 * passed the frame.
 */
static __always_inline __u32 source_check(struct __sk_buff *skb, const struct pm_source *s,
					  const struct pm_packet *p, int parsed)
{
	if (!s)
		return PM_DROP_SPOOFED_SOURCE;
	if (parsed == PM_PARSE_BAD)
		return PM_DROP_UNPARSABLE;
	if (parsed == PM_PARSE_NOT_IP)
		return skb->protocol != bpf_htons(ETH_P_ARP) || arp_ok(skb, s) ?
			       0 :
			       PM_DROP_SPOOFED_SOURCE;
	return ip_ok(skb, p, s) ? 0 : PM_DROP_SPOOFED_SOURCE;
}

#endif /* PODMETER_VALIDATE_H */
