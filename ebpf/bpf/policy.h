/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Per-pod policy, for the tc programs in podmeter.bpf.c: the longest-prefix
 * rule walk, and flow tracking, so that replies to connections a pod's
 * rules let through are never dropped by the other direction's rules.
 * Packets come parsed (parse.h).
 *
 * Semantics (the README's "Policy" section says the same to operators):
 * - A packet is allowed if it belongs to a live flow opened in the other
 *   direction, or is an ICMP error quoting a packet of a live flow and sent
 *   by that flow's remote end or (received) by one of the pod's gateways;
 *   otherwise the pod's policy for its direction decides (policy_action()):
 *   the admin rules first (the longest CIDR holding the remote address whose
 *   rules match the packet's protocol and destination port wins); else, if
 *   NetworkPolicy isolates the pod in that direction, the kubernetes tier
 *   (k8s_policy.h); else the direction's default. A flow the policy allowed
 *   keeps that verdict until the pod's policy changes (generation).
 * - ARP, IPv6 neighbour discovery and MLD always pass; other non-IP frames
 *   get the direction's default; IP (or VLAN-tagged) packets that cannot be
 *   parsed to their end are denied (podmeter.bpf.c, as UNPARSABLE).
 * - A non-first fragment has no ports: it passes if its datagram's first
 *   fragment did (fragments.h), else only rules without ports match it.
 * - Flows live in the pod's own table, within a budget per opening
 *   direction (podmeter.h); a new flow over budget is not recorded
 *   (refused): its packet keeps the rules' verdict, its replies get no
 *   flow exception. No flow ever displaces another.
 * - Each decision of the policy is counted in the pod's pm_flow_state, by
 *   direction and verdict: once per allowed new flow (its later packets and
 *   replies pass by the flow), once per denied packet (a denied flow opens
 *   nothing: each retransmitted SYN is decided, and counted, again).
 */
#ifndef PODMETER_POLICY_H
#define PODMETER_POLICY_H

#include "k8s_policy.h"
#include "parse.h"
#include "podmeter.h"
#include "validate.h"

/* How long a flow stays open without packets, by protocol. Long enough
 * for TCP keepalives (2 h by default) and for conntrack-like UDP streams. */
#define PM_FLOW_TCP_TIMEOUT_NS (7200ULL * 1000000000ULL)
#define PM_FLOW_UDP_TIMEOUT_NS (180ULL * 1000000000ULL)
#define PM_FLOW_OTHER_TIMEOUT_NS (30ULL * 1000000000ULL)
/* A flow's last_seen is rewritten at most this often: fewer shared writes.
 * Times come from the coarse clock (a tick's precision is plenty here, and
 * it costs a fraction of a full clock read). */
#define PM_FLOW_TOUCH_NS 1000000000ULL
/* A pod's table is swept for expired flows at most this often, when a new
 * flow finds its direction's budget spent (a sweep walks the whole table). */
#define PM_FLOW_SWEEP_NS 1000000000ULL

/* CIDR lengths a rule walk can visit: /128 down to /0. */
#define PM_MAX_PREFIX_WALK 129

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PM_MAX_PODS);
	__type(key, __u32);
	__type(value, struct pm_policy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PM_MAX_RULE_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pm_rule_key);
	__type(value, struct pm_rule_set);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_rules SEC(".maps");

/* A pod's flow table. Allocated as it fills: an idle pod's table costs
 * its bucket array only. */
struct pm_flow_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PM_FLOWS_PER_POD);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pm_flow_key);
	__type(value, struct pm_flow);
};

/* The flow table of each pod with policy, by host ifindex; userspace adds
 * a pod's table before its pm_policy entry and removes it after. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, PM_MAX_PODS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct pm_flow_table);
} pm_flow_tables SEC(".maps");

/* The occupancy of each pod's flow table, by host ifindex; written by
 * userspace when the table is made, then only by the programs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PM_MAX_PODS);
	__type(key, __u32);
	__type(value, struct pm_flow_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_flow_state SEC(".maps");

/* The flow of a packet that travelled in direction dir, from the pod's side. */
static __always_inline void flow_key(struct pm_flow_key *k, __u32 ifindex, __u32 dir,
				     const struct pm_tuple *t)
{
	int received = dir == PM_DIR_RECEIVE;

	k->ifindex = ifindex;
	k->family = t->family;
	k->proto = t->proto;
	k->pod_port = received ? t->dport : t->sport;
	k->remote_port = received ? t->sport : t->dport;
	__builtin_memcpy(k->remote, received ? t->saddr : t->daddr, 16);
}

static __always_inline int flow_live(const struct pm_flow *f, __u8 proto, __u64 now)
{
	__u64 timeout = proto == IPPROTO_TCP ? PM_FLOW_TCP_TIMEOUT_NS :
			proto == IPPROTO_UDP ? PM_FLOW_UDP_TIMEOUT_NS :
					       PM_FLOW_OTHER_TIMEOUT_NS;

	return now - f->last_seen_ns < timeout;
}

static __always_inline void flow_touch(struct pm_flow *f, __u64 now)
{
	if (now - f->last_seen_ns > PM_FLOW_TOUCH_NS)
		f->last_seen_ns = now;
}

/*
 * The flow this CPU last let through, as the flow table had it: a stream's
 * packets come one after another on one CPU, and skip the table's lookup (a
 * hash of the 28-byte key) while the pod's policy generation stands and the
 * table's entry was refreshed less than PM_FLOW_TOUCH_NS ago (so the table
 * still sees the flow as used). Not pinned: a cache of the programs' own.
 * It never writes back to a table: a flow deleted from one (its pod's
 * policy removed) passes by the cache for at most that 1 s; a sweep deletes
 * only flows idle for 30 s or more, which no cache entry younger than 1 s
 * can hold.
 */
struct pm_flow_cache {
	struct pm_flow_key key;
	__u32 opened_by;
	__u32 generation;
	__u32 pad;
	__u64 checked_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pm_flow_cache);
} pm_flow_cache SEC(".maps");

static __always_inline int flow_key_eq(const struct pm_flow_key *a, const struct pm_flow_key *b)
{
	const __u32 *x = (const void *)a, *y = (const void *)b;
	__u32 diff = 0;

	for (int i = 0; i < sizeof(*a) / sizeof(__u32); i++)
		diff |= x[i] ^ y[i];
	return !diff;
}

/* A packet of a known flow passes without the rules if it is a reply, or
 * if the rules allowed the flow under the pod's current generation. */
static __always_inline int flow_allows(__u32 opened_by, __u32 flow_generation, __u32 dir,
				       __u32 generation)
{
	return opened_by != dir || flow_generation == generation;
}

static __always_inline void flow_remember(struct pm_flow_cache *c, const struct pm_flow_key *k,
					  __u32 opened_by, __u32 generation, __u64 now)
{
	if (!c)
		return;
	c->key = *k;
	c->opened_by = opened_by;
	c->generation = generation;
	c->checked_ns = now;
}

/* The flow k in the pod's table (NULL: the pod has none, or not this flow). */
static __always_inline struct pm_flow *flow_lookup(void *table, const struct pm_flow_key *k)
{
	return table ? bpf_map_lookup_elem(table, k) : NULL;
}

/* Takes one of the pod's flows opened in direction dir; 0 if its budget is
 * spent. The count is reserved before the insert, so it never passes the
 * budget, however many CPUs open flows at once. */
static __always_inline int flow_reserve(struct pm_flow_state *s, __u32 dir)
{
	if (__sync_fetch_and_add(&s->flows[dir & 1], 1) < PM_FLOW_BUDGET)
		return 1;
	__sync_fetch_and_add(&s->flows[dir & 1], -1);
	return 0;
}

/* Gives back n flows opened in direction dir that the pod's table lost. */
static __always_inline void flow_release(struct pm_flow_state *s, __u32 dir, __u32 n,
					 int reclaimed)
{
	__sync_fetch_and_add(&s->flows[dir & 1], -(__s64)n);
	if (reclaimed)
		__sync_fetch_and_add(&s->reclaimed[dir & 1], n);
}

struct pm_flow_sweep {
	__u64 now;
	__u32 deleted[2]; /* by opened_by */
};

/* One entry of a sweep (a bpf_for_each_map_elem callback): deletes it if
 * it expired. Only the CPU whose delete succeeds counts it. */
static long flow_sweep_step(void *table, struct pm_flow_key *k, struct pm_flow *f,
			    struct pm_flow_sweep *sweep)
{
	__u32 dir = f->opened_by & 1;

	if (!flow_live(f, k->proto, sweep->now) && !bpf_map_delete_elem(table, k))
		sweep->deleted[dir]++;
	return 0;
}

/* Deletes the expired flows of the pod's table, unless it was swept less
 * than PM_FLOW_SWEEP_NS ago: the CPU that moves swept_ns forward sweeps,
 * the others go on without. */
static __always_inline void flow_sweep(void *table, struct pm_flow_state *s, __u64 now)
{
	struct pm_flow_sweep sweep = { .now = now };
	__u64 last = s->swept_ns;

	if (now - last < PM_FLOW_SWEEP_NS ||
	    __sync_val_compare_and_swap(&s->swept_ns, last, now) != last)
		return;
	bpf_for_each_map_elem(table, flow_sweep_step, &sweep, 0);
	for (int d = 0; d < 2; d++)
		if (sweep.deleted[d])
			flow_release(s, d, sweep.deleted[d], 1);
}

/*
 * Records flow k, opened by a packet in direction dir that the rules let
 * through, within the pod's budget for that direction (s: the pod's
 * pm_flow_state); expired, an entry of the same key left in the table.
 * Returns 0 if it was not recorded: the pod has no table, or the budget is
 * spent even after a sweep (counted as refused; the packet still passes,
 * its replies meet the rules).
 */
static __always_inline int flow_open(void *table, struct pm_flow_state *s,
				     const struct pm_flow_key *k, __u32 dir, __u32 generation,
				     const struct pm_flow *expired, __u64 now)
{
	struct pm_flow opened = {
		.last_seen_ns = now,
		.opened_by = dir,
		.generation = generation,
	};

	if (!table || !s)
		return 0;
	if (expired) {
		__u32 was = expired->opened_by;

		if (!bpf_map_delete_elem(table, k))
			flow_release(s, was, 1, 1);
	}
	if (!flow_reserve(s, dir)) {
		flow_sweep(table, s, now);
		if (!flow_reserve(s, dir)) {
			__sync_fetch_and_add(&s->refused[dir & 1], 1);
			return 0;
		}
	}
	if (bpf_map_update_elem(table, k, &opened, BPF_NOEXIST)) {
		/* Another CPU recorded it first, or the table is full. */
		flow_release(s, dir, 1, 0);
		return 0;
	}
	return 1;
}

/* What the rule walk needs of the packet, and what it found. */
struct pm_rule_walk {
	struct pm_rule_key key;
	__u8 proto;
	__u8 has_ports;
	__u16 dport;
	__u8 decided;
	__u8 action;
};

static __always_inline int rule_matches(const struct pm_rule *r, const struct pm_rule_walk *w)
{
	if (r->proto != PM_PROTO_ANY && r->proto != w->proto)
		return 0;
	if (r->flags & PM_RULE_PORTS)
		return w->has_ports && w->dport >= r->port_lo && w->dport <= r->port_hi;
	return 1;
}

/* One step of the walk (a bpf_loop callback, so the verifier checks it
 * once): the longest CIDR at or below key.prefixlen; 1 ends the walk. */
static long rule_walk_step(__u64 index, void *ctx)
{
	struct pm_rule_walk *w = ctx;
	struct pm_rule_set *set = bpf_map_lookup_elem(&pm_rules, &w->key);

	if (!set)
		return 1;
	for (int i = 0; i < PM_RULES_PER_PREFIX; i++) {
		if (i >= set->n_rules)
			break;
		if (rule_matches(&set->rules[i], w)) {
			w->decided = 1;
			w->action = set->rules[i].action;
			return 1;
		}
	}
	if (set->prefix_len == 0)
		return 1;
	w->key.prefixlen = PM_RULE_KEY_FIXED_BITS + set->prefix_len - 1;
	return 0;
}

/*
 * The pod's policy for this packet, in the owners' order: the admin rules
 * (the config's and the operator's, pm_rules) decide if one matches; else,
 * for a pod NetworkPolicy isolates in this direction, only the kubernetes
 * tier can allow; else the direction's default.
 */
static __always_inline __u8 policy_action(__u32 ifindex, __u32 dir, const struct pm_tuple *t,
					  const struct pm_policy *pol)
{
	struct pm_rule_walk w = {
		.key.prefixlen = PM_RULE_KEY_FIXED_BITS + (t->family == AF_INET ? 32 : 128),
		.key.ifindex = ifindex,
		.key.direction = dir,
		.key.family = t->family,
		.proto = t->proto,
		.has_ports = t->has_ports,
		.dport = t->dport,
	};

	__builtin_memcpy(w.key.addr, dir == PM_DIR_RECEIVE ? t->saddr : t->daddr, 16);
	bpf_loop(PM_MAX_PREFIX_WALK, rule_walk_step, &w, 0);
	if (w.decided)
		return w.action;
	if (pol->k8s_isolated[dir & 1])
		return k8s_allows(ifindex, dir, t) ? PM_ACTION_ALLOW : PM_ACTION_DENY;
	return pol->default_action[dir & 1];
}

/*
 * Whether an ICMP error may count as related to the flow it quotes: it
 * comes from (received) or goes to (transmitted) the quoted flow's remote
 * end, or a pod receives it from one of its gateways (a router on the
 * path). Anyone else's error about the flow meets the rules.
 */
static __always_inline int error_from_path(__u32 ifindex, __u32 dir, const struct pm_packet *p)
{
	int received = dir == PM_DIR_RECEIVE;
	const __u8 *outer_remote = received ? p->t.saddr : p->t.daddr;
	/* The quoted packet went the other way: its destination is the
	 * remote end if the pod sent it. */
	const __u8 *flow_remote = received ? p->quoted.daddr : p->quoted.saddr;

	if (p->quoted.family != p->t.family)
		return 0;
	return addr_eq(outer_remote, flow_remote, p->t.family) ||
	       (received && pod_gateway(ifindex, p->t.family, outer_remote));
}

/* Whether a pod with policy pol may send (dir transmit) or receive this
 * packet. Tracks the flows its rules let through. */
static __always_inline int policy_allows(__u32 ifindex, __u32 dir, const struct pm_policy *pol,
					 const struct pm_packet *p)
{
	/* Read once: a verdict is stored with the generation it was made under. */
	__u32 generation = pol->generation;
	struct pm_flow_key k = {};
	struct pm_flow_cache *cache;
	struct pm_flow_state *s;
	struct pm_flow *f;
	__u32 zero = 0;
	void *table;
	int live, allowed;
	__u64 now;

	if (p->always_allowed)
		return 1;
	now = bpf_ktime_get_coarse_ns();
	table = bpf_map_lookup_elem(&pm_flow_tables, &ifindex);
	if (p->quoted.family && error_from_path(ifindex, dir, p)) {
		/* The quoted packet went the other way. */
		flow_key(&k, ifindex, dir ^ 1, &p->quoted);
		f = flow_lookup(table, &k);
		if (f && flow_live(f, k.proto, now))
			return 1;
	}
	flow_key(&k, ifindex, dir, &p->t);
	cache = bpf_map_lookup_elem(&pm_flow_cache, &zero);
	if (cache && now - cache->checked_ns < PM_FLOW_TOUCH_NS && flow_key_eq(&cache->key, &k) &&
	    flow_allows(cache->opened_by, cache->generation, dir, generation))
		return 1;
	f = flow_lookup(table, &k);
	live = f && flow_live(f, k.proto, now);
	/* A reply, or a flow the current rules already let through. */
	if (live && flow_allows(f->opened_by, f->generation, dir, generation)) {
		flow_touch(f, now);
		flow_remember(cache, &k, f->opened_by, f->generation, now);
		return 1;
	}
	/* No live flow let it through: the policy decides on a new flow (or
	 * on a flow again, under a new generation), counted per verdict in
	 * the pod's state, which exists whenever its policy does, with or
	 * without its flow table. */
	allowed = policy_action(ifindex, dir, &p->t, pol) == PM_ACTION_ALLOW;
	s = bpf_map_lookup_elem(&pm_flow_state, &ifindex);
	if (s)
		__sync_fetch_and_add(allowed ? &s->allowed[dir & 1] : &s->denied[dir & 1], 1);
	if (!allowed)
		return 0;
	if (live) {
		f->generation = generation;
		flow_touch(f, now);
		flow_remember(cache, &k, f->opened_by, generation, now);
	} else if (flow_open(table, s, &k, dir, generation, f, now)) {
		flow_remember(cache, &k, dir, generation, now);
	}
	return 1;
}

#endif /* PODMETER_POLICY_H */
