/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Parsing a packet on a pod's host veth into what source validation
 * (validate.h) and policy (policy.h) decide on. It fails closed: a packet
 * that looks like IP but cannot be walked to its end (truncated, a bad
 * header, an IPv6 extension header chain longer than PM_MAX_EXT_HEADERS,
 * VLAN tags the kernel left in the frame) is PM_PARSE_BAD, which never
 * gets a more permissive verdict than a fully parsed packet would.
 */
#ifndef PODMETER_PARSE_H
#define PODMETER_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>

#include "podmeter.h"

#define AF_INET 2
#define AF_INET6 10
/* The fragment offset and more-fragments bits of iphdr.frag_off (include/net/ip.h). */
#define PM_IP_OFFSET 0x1fff
#define PM_IP_MF 0x2000

/*
 * IPv6 extension headers walked before the transport header. Real traffic
 * carries at most three or four (hop-by-hop, routing, fragment, dstopts);
 * a longer chain cannot be classified and is PM_PARSE_BAD.
 */
#define PM_MAX_EXT_HEADERS 16

enum pm_parse {
	PM_PARSE_OK = 0, /* IP, walked to its transport header (or a later fragment) */
	PM_PARSE_NOT_IP = 1, /* ARP or another non-IP, untagged ethertype */
	PM_PARSE_BAD = 2, /* IP or VLAN-tagged that cannot be fully classified */
};

/* Where a packet stands among its datagram's fragments. */
enum pm_frag {
	PM_FRAG_NONE = 0,
	PM_FRAG_FIRST = 1, /* offset 0, more to come: carries the ports */
	PM_FRAG_LATER = 2, /* offset > 0: no transport header */
};

/* A packet's addresses and ports, as it travels. */
struct pm_tuple {
	__u8 family; /* 0: not parsed */
	__u8 proto;
	__u8 has_ports; /* TCP, UDP or SCTP with its header at hand */
	__u8 pad;
	__u16 sport; /* host byte order; ICMP echo: the identifier, both */
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct pm_packet {
	struct pm_tuple t;
	struct pm_tuple quoted; /* the packet an ICMP error is about */
	__u8 always_allowed; /* neighbour discovery, MLD */
	__u8 frag; /* enum pm_frag */
	__s16 icmp_type; /* ICMP or ICMPv6 of the packet's family; -1: none */
	__u32 frag_id; /* IPv4 identification or IPv6 fragment header id */
	__u32 l4_off; /* the transport header's offset (when frag != LATER) */
};

/* Headers deeper than this are read with the helper only. */
#define PM_MAX_DIRECT_OFFSET 512

/* Copies len bytes at off: straight from the packet's linear data where
 * they are (no helper call), else with bpf_skb_load_bytes. */
static __always_inline int load(struct __sk_buff *skb, __u32 off, void *to, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (off <= PM_MAX_DIRECT_OFFSET && data + off + len <= end) {
		__builtin_memcpy(to, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

static __always_inline int is_vlan_proto(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* A frame that carried a VLAN tag: the kernel pops the outer one before
 * tc (vlan_present), any further one stays in the frame. */
static __always_inline int vlan_tagged(struct __sk_buff *skb)
{
	return skb->vlan_present || is_vlan_proto(skb->protocol);
}

/* State of the IPv6 extension header walk (a bpf_loop callback's context). */
struct pm_ext_walk {
	struct __sk_buff *skb;
	struct pm_packet *p;
	__u32 off;
	__u8 next;
	__u8 done; /* 1: at the transport header or a later fragment */
	__u8 bad;
};

static __always_inline int is_ext_header(__u8 h)
{
	return h == IPPROTO_HOPOPTS || h == IPPROTO_ROUTING || h == IPPROTO_DSTOPTS ||
	       h == IPPROTO_AH || h == IPPROTO_FRAGMENT;
}

/* One extension header; 1 ends the walk. */
static long ext_walk_step(__u64 index, void *ctx)
{
	struct pm_ext_walk *w = ctx;
	__u8 h[8];

	if (!is_ext_header(w->next)) {
		w->done = 1;
		return 1;
	}
	if (load(w->skb, w->off, h, sizeof(h))) {
		w->bad = 1;
		return 1;
	}
	if (w->next == IPPROTO_FRAGMENT) {
		__u16 off_flags = (h[2] << 8) | h[3];

		w->p->frag_id = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | (h[6] << 8) | h[7];
		w->next = h[0];
		w->off += 8;
		if (off_flags & ~7) {
			w->p->frag = PM_FRAG_LATER;
			w->done = 1;
			return 1;
		}
		if (off_flags & 1)
			w->p->frag = PM_FRAG_FIRST;
	} else if (w->next == IPPROTO_AH) {
		w->next = h[0];
		w->off += (h[1] + 2) * 4;
	} else {
		w->next = h[0];
		w->off += (h[1] + 1) * 8;
	}
	return 0;
}

/* Reads the IP header at off into t. Returns the transport header's
 * offset, 0 if there is none (a later fragment), < 0 if it cannot be
 * classified. The outer packet's IPv6 extension headers are walked (p
 * records its fragment); a quoted packet's (p NULL) are not. */
static __always_inline int parse_ip(struct __sk_buff *skb, __u32 off, __u16 eth_proto,
				    struct pm_tuple *t, struct pm_packet *p)
{
	if (eth_proto == ETH_P_IP) {
		struct iphdr ip;
		__u16 frag_off;

		if (load(skb, off, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5)
			return -1;
		t->family = AF_INET;
		t->proto = ip.protocol;
		__builtin_memcpy(t->saddr, &ip.saddr, 4);
		__builtin_memcpy(t->daddr, &ip.daddr, 4);
		frag_off = bpf_ntohs(ip.frag_off);
		if (p && (frag_off & (PM_IP_OFFSET | PM_IP_MF))) {
			p->frag_id = bpf_ntohs(ip.id);
			p->frag = frag_off & PM_IP_OFFSET ? PM_FRAG_LATER : PM_FRAG_FIRST;
		}
		if (frag_off & PM_IP_OFFSET)
			return 0;
		return off + ip.ihl * 4;
	}
	if (eth_proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;
		struct pm_ext_walk w = { .skb = skb, .p = p };

		if (load(skb, off, &ip6, sizeof(ip6)) || ip6.version != 6)
			return -1;
		t->family = AF_INET6;
		__builtin_memcpy(t->saddr, &ip6.saddr, 16);
		__builtin_memcpy(t->daddr, &ip6.daddr, 16);
		w.next = ip6.nexthdr;
		w.off = off + sizeof(ip6);
		if (p && is_ext_header(w.next)) {
			/* One more step than headers: it sees the end of the chain. */
			bpf_loop(PM_MAX_EXT_HEADERS + 1, ext_walk_step, &w, 0);
			if (w.bad || !w.done)
				return -1;
		}
		t->proto = w.next;
		return p && p->frag == PM_FRAG_LATER ? 0 : w.off;
	}
	return -1;
}

static __always_inline int is_icmp_error(__u8 family, __u8 type)
{
	if (family == AF_INET)
		return type == 3 || type == 11 || type == 12; /* unreachable, time exceeded, parameter */
	return type >= 1 && type <= 4; /* same, and packet too big */
}

/* The ICMP protocol of a family: ICMP for IPv4, ICMPv6 for IPv6. */
static __always_inline __u8 icmp_proto(__u8 family)
{
	return family == AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6;
}

/* Reads ports (or the ICMP echo identifier) at off into t; returns the
 * ICMP type, -1 for other protocols, -2 if the header is not there. */
static __always_inline int parse_transport(struct __sk_buff *skb, __u32 off, struct pm_tuple *t)
{
	__u8 h[6];

	switch (t->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (load(skb, off, h, 4))
			return -2;
		t->sport = (h[0] << 8) | h[1];
		t->dport = (h[2] << 8) | h[3];
		t->has_ports = 1;
		return -1;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (t->proto != icmp_proto(t->family))
			return -1; /* ICMPv6 in IPv4 (or ICMP in IPv6): an opaque protocol */
		if (load(skb, off, h, sizeof(h)))
			return -2;
		/* Echo request/reply (ICMP 8/0, ICMPv6 128/129): the identifier
		 * on both sides, so request and reply share a flow. */
		if (h[0] == 8 || h[0] == 0 || h[0] == 128 || h[0] == 129)
			t->sport = t->dport = (h[4] << 8) | h[5];
		return h[0];
	}
	return -1;
}

/* Parses the packet in skb into p: enum pm_parse. */
static __always_inline int parse(struct __sk_buff *skb, struct pm_packet *p)
{
	__u16 eth_proto = bpf_ntohs(skb->protocol);
	int off, type;

	p->icmp_type = -1;
	if (vlan_tagged(skb))
		return PM_PARSE_BAD;
	if (eth_proto != ETH_P_IP && eth_proto != ETH_P_IPV6)
		return PM_PARSE_NOT_IP;
	off = parse_ip(skb, ETH_HLEN, eth_proto, &p->t, p);
	if (off < 0)
		return PM_PARSE_BAD;
	if (off == 0)
		return PM_PARSE_OK; /* a later fragment: no transport header */
	p->l4_off = off;
	type = parse_transport(skb, off, &p->t);
	if (type == -2)
		return PM_PARSE_BAD;
	if (type < 0)
		return PM_PARSE_OK;
	p->icmp_type = type;
	if (p->t.family == AF_INET6 && ((type >= 130 && type <= 137) || type == 143)) {
		p->always_allowed = 1;
	} else if (is_icmp_error(p->t.family, type)) {
		/* The quoted header follows the 8 bytes of the ICMP header; a
		 * quote that cannot be read makes the error an ordinary packet. */
		off = parse_ip(skb, off + 8, eth_proto, &p->quoted, 0);
		if (off > 0 && parse_transport(skb, off, &p->quoted) == -2)
			off = -1;
		if (off < 0)
			p->quoted.family = 0;
	}
	return PM_PARSE_OK;
}

#endif /* PODMETER_PARSE_H */
