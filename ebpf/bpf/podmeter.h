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

#define PODMETER_ABI_VERSION 1

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
};

/*
 * pm_devices key: a network device anywhere on the node. ifindex alone is
 * only unique within one netns, so the netns cookie comes with it.
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

#endif /* PODMETER_H */
