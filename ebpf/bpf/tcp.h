/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * TCP statistics per pod: BTF tracepoints attached once per node that count
 * at the points where the kernel counts its own per-namespace TCP MIB, so a
 * pod's counters equal `nstat` in the pod's netns. A socket belongs to the
 * pod whose network namespace it lives in: pm_devices' {netns cookie,
 * ifindex 0} entry, written by ADD, names the pod.
 *
 * Included by podmeter.bpf.c after the devices map and the CO-RE kernel
 * structs (struct net, possible_net_t, sk_buff) it defines.
 */
#ifndef PODMETER_TCP_H
#define PODMETER_TCP_H

/* include/net/tcp_states.h */
enum {
	PM_TCP_ESTABLISHED = 1,
	PM_TCP_SYN_SENT = 2,
	PM_TCP_SYN_RECV = 3,
	PM_TCP_FIN_WAIT1 = 4,
	PM_TCP_FIN_WAIT2 = 5,
	PM_TCP_CLOSE = 7,
	PM_TCP_CLOSE_WAIT = 8,
	PM_TCP_LAST_ACK = 9,
	PM_TCP_LISTEN = 10,
	PM_TCP_CLOSING = 11,
};

#define PM_IPPROTO_TCP 6
/* The errors __tcp_retransmit_skb returns before it counts the segments
 * (the tracepoint fires on every return): a clone still in a host queue,
 * nothing to send in the window, out of memory, no route. */
#define PM_EINVAL 22
#define PM_EBUSY 16
#define PM_EAGAIN 11
#define PM_ENOMEM 12
#define PM_EHOSTUNREACH 113

/* Just the fields read here; CO-RE relocates them. sock_common heads
 * every kind of socket (full, request, timewait). */
struct sock_common {
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
} __attribute__((preserve_access_index));

struct tcp_sock {
	__u32 srtt_us; /* smoothed RTT << 3, microseconds */
} __attribute__((preserve_access_index));

/* skb->cb of a TCP segment being sent: tcp_skb_pcount() is tcp_gso_segs. */
struct tcp_skb_cb {
	__u32 seq;
	__u32 end_seq;
	union {
		struct {
			__u16 tcp_gso_segs;
			__u16 tcp_gso_size;
		};
		__u32 tcp_tw_isn;
	};
} __attribute__((preserve_access_index));

/* Per pod, by host veth ifindex; see struct pm_tcp. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, PM_MAX_PODS);
	/* 200 bytes per possible CPU: allocated per registered pod, not
	 * for every possible one. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct pm_tcp);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pm_tcp SEC(".maps");

/* The TCP counters of the pod living in the netns with this cookie. */
static __always_inline struct pm_tcp *tcp_of_netns(__u64 netns_cookie)
{
	struct pm_dev_key key = { .netns_cookie = netns_cookie };
	struct pm_dev *d = bpf_map_lookup_elem(&pm_devices, &key);

	if (!d || d->side != PM_SIDE_NETNS)
		return 0;
	return bpf_map_lookup_elem(&pm_tcp, &d->host_ifindex);
}

static __always_inline struct pm_tcp *tcp_of_sock(const struct sock *sk)
{
	return tcp_of_netns(BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie));
}

/*
 * tcp_set_state(), and inet_csk_clone_lock() for a new passive child:
 * every TCP state change passes here (inet_sk_state_store and
 * inet_sk_set_state fire the tracepoint). Mirrors the kernel's own
 * accounting in tcp_set_state() and where it counts opens.
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(pm_tcp_state, const struct sock *sk, int oldstate, int newstate)
{
	struct pm_tcp *t;

	if (BPF_CORE_READ(sk, sk_protocol) != PM_IPPROTO_TCP)
		return 0;
	t = tcp_of_sock(sk);
	if (!t)
		return 0;
	/* tcp_v4_connect/tcp_v6_connect enter SYN_SENT right before
	 * tcp_connect() sends the SYN and counts TCP_MIB_ACTIVEOPENS. */
	if (newstate == PM_TCP_SYN_SENT)
		t->active_opens += 1;
	/* inet_csk_clone_lock() turns a clone of the listener into the
	 * SYN_RECV child that tcp_create_openreq_child() counts in
	 * TCP_MIB_PASSIVEOPENS. */
	else if (oldstate == PM_TCP_LISTEN && newstate == PM_TCP_SYN_RECV)
		t->passive_opens += 1;

	/* TCP_MIB_CURRESTAB, as tcp_set_state() keeps it. */
	if ((newstate == PM_TCP_ESTABLISHED && oldstate != PM_TCP_ESTABLISHED) ||
	    (newstate == PM_TCP_CLOSE_WAIT && oldstate == PM_TCP_SYN_RECV))
		t->established += 1;
	else if (newstate != PM_TCP_ESTABLISHED && newstate != PM_TCP_CLOSE_WAIT &&
		 (oldstate == PM_TCP_ESTABLISHED || oldstate == PM_TCP_CLOSE_WAIT))
		t->established -= 1;

	/* A connection that got past the handshake ends: its smoothed RTT,
	 * once. (A full socket leaves every state for CLOSE through
	 * tcp_done() or tcp_close(), TIME_WAIT included.) */
	if (newstate == PM_TCP_CLOSE &&
	    (oldstate == PM_TCP_ESTABLISHED || oldstate == PM_TCP_FIN_WAIT1 ||
	     oldstate == PM_TCP_FIN_WAIT2 || oldstate == PM_TCP_CLOSE_WAIT ||
	     oldstate == PM_TCP_LAST_ACK || oldstate == PM_TCP_CLOSING)) {
		__u64 us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
		__u32 i;

		for (i = 0; i < PM_TCP_RTT_BOUNDS; i++)
			if (us <= ((__u64)PM_TCP_RTT_FIRST_US << i))
				break;
		if (i > PM_TCP_RTT_BOUNDS) /* for the verifier: it is not */
			i = PM_TCP_RTT_BOUNDS;
		t->rtt_buckets[i] += 1;
		t->rtt_count += 1;
		t->rtt_sum_us += us;
	}
	return 0;
}

/*
 * Whether the kernel's tcp_retransmit_skb tracepoint passes `err` (set by
 * the loader from the kernel's BTF). With it, the tracepoint fires on every
 * return of __tcp_retransmit_skb, the early ones with their error; without
 * it (older kernels), only after a retransmission was sent.
 */
const volatile __u32 pm_retransmit_err_arg = 0;

/*
 * __tcp_retransmit_skb(): TCP_MIB_RETRANSSEGS grows by tcp_skb_pcount(skb)
 * (GSO segments, after any split) once the segment is past its checks.
 * Written out rather than with BPF_PROG: the third argument is read only
 * where the kernel passes it (the verifier prunes the other branch, the
 * global being read-only).
 */
SEC("tp_btf/tcp_retransmit_skb")
int pm_tcp_retransmit(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];
	struct sk_buff *skb = (struct sk_buff *)ctx[1];
	struct tcp_skb_cb *cb;
	struct pm_tcp *t;

	if (pm_retransmit_err_arg) {
		int err = (int)ctx[2];

		if (err == -PM_EBUSY || err == -PM_EINVAL || err == -PM_EAGAIN ||
		    err == -PM_ENOMEM || err == -PM_EHOSTUNREACH)
			return 0;
	}
	t = tcp_of_sock(sk);
	if (!t)
		return 0;
	cb = (struct tcp_skb_cb *)&skb->cb[0];
	t->retransmits += BPF_CORE_READ(cb, tcp_gso_segs);
	return 0;
}

/* tcp_rtx_synack(): one SYN-ACK counted in TCP_MIB_RETRANSSEGS; sk is the
 * listener. */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(pm_tcp_retransmit_synack, const struct sock *sk, const void *req)
{
	struct pm_tcp *t = tcp_of_sock(sk);

	if (t)
		t->retransmits += 1;
	return 0;
}

/*
 * TCP_MIB_OUTRSTS: tcp_v4/v6_send_reset() (sk may be NULL: a segment for
 * no socket; the netns is then the receiving device's) and
 * tcp_send_active_reset() (skb NULL).
 */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(pm_tcp_send_reset, const struct sock *sk, struct sk_buff *skb)
{
	struct pm_tcp *t;

	if (sk)
		t = tcp_of_sock(sk);
	else if (skb)
		t = tcp_of_netns(BPF_CORE_READ(skb, dev, nd_net.net, net_cookie));
	else
		return 0;
	if (t)
		t->resets_sent += 1;
	return 0;
}

#endif /* PODMETER_TCP_H */
