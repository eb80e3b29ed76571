// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kldnet BPF <-> userspace ABI: every map key/value and event record.
 *
 * Rules (checked by bpf/tests/layout.rs against bpf/src/abi.rs):
 *  - explicit padding only (no implicit holes, no __attribute__((packed))),
 *  - no bools, every field says its byte order ("host" or "network") and unit,
 *  - pad fields are zero when written by either side (hash/LPM keys compare
 *    all bytes, so a non-zero pad byte is a different key).
 *
 * Changing any struct here is an ABI break: bump KLD_ABI_VERSION (pin dir
 * <bpf-root>/v<N>/), because aya 0.14 reuses a pinned map without checking
 * its key/value layout.
 */
#ifndef KLDNET_ABI_H
#define KLDNET_ABI_H

#include <linux/types.h>

#define KLD_ABI_VERSION 1

/* ---- capacities (max_entries); override with -D at build time ---------- */
#ifndef KLD_MAX_LB4_SVC
#define KLD_MAX_LB4_SVC 262144
#endif
#ifndef KLD_MAX_LB4_BE
#define KLD_MAX_LB4_BE 131072
#endif
#ifndef KLD_MAX_LB4_RNAT
#define KLD_MAX_LB4_RNAT 65536
#endif
#ifndef KLD_MAX_SOCK_RNAT
#define KLD_MAX_SOCK_RNAT 262144
#endif
#ifndef KLD_MAX_IPCACHE
#define KLD_MAX_IPCACHE 65536
#endif
#ifndef KLD_MAX_ENDPOINTS
#define KLD_MAX_ENDPOINTS 65536
#endif
#ifndef KLD_MAX_POLICY
#define KLD_MAX_POLICY 131072
#endif
#ifndef KLD_MAX_CT4
#define KLD_MAX_CT4 262144
#endif
#ifndef KLD_EVENTS_BYTES /* ring buffer size in bytes: power of 2, >= page */
#define KLD_EVENTS_BYTES (1 << 20)
#endif
#ifndef KLD_MAX_METRICS
#define KLD_MAX_METRICS 1024
#endif
#ifndef KLD_MAX_COUNTERS
#define KLD_MAX_COUNTERS 16
#endif
#ifndef KLD_MAX_POLICY_HITS
#define KLD_MAX_POLICY_HITS 16384
#endif
#ifndef KLD_MAX_LB4_AFFIN
#define KLD_MAX_LB4_AFFIN 262144
#endif
#ifndef KLD_MAX_LB4_MAGLEV /* outer kld_lb4_maglev: one inner table per service */
#define KLD_MAX_LB4_MAGLEV 65536
#endif
/* Size of the kld_lb4_maglev inner template (prime). Only a default: the
 * template carries BPF_F_INNER_MAP, so inner arrays of any size are accepted;
 * the datapath indexes them modulo the KLD_MAGLEV_M knob. */
#define KLD_MAGLEV_M_DEFAULT 16381

/* ---- well-known identities (host order) ---------------------------------- */
#define KLD_ID_UNKNOWN 0
#define KLD_ID_HOST 1
#define KLD_ID_WORLD 2
#define KLD_ID_UNMANAGED 3
#define KLD_ID_REMOTE_NODE 6
/* Identities of policy CIDRs (local scope, as Cilium): KLD_ID_CIDR_BASE plus
 * 24 bits derived from the prefix; never sent to other nodes. */
#define KLD_ID_CIDR_BASE (1u << 24)

/* ---- address families used in keys/events (not AF_*) -------------------- */
#define KLD_FAMILY_V4 4
#define KLD_FAMILY_V6 6

/* ---- directions (policy_key, metrics_key, flow_event) -------------------- */
#define KLD_DIR_INGRESS 0 /* towards the endpoint / node */
#define KLD_DIR_EGRESS 1  /* away from the endpoint / node */

/* ---- services ------------------------------------------------------------ */
#define KLD_SCOPE_EXTERNAL 0
#define KLD_SCOPE_INTERNAL 1

#define KLD_SVC_F_NODEPORT (1 << 0)
#define KLD_SVC_F_EXTERNAL_IP (1 << 1)
#define KLD_SVC_F_LOADBALANCER (1 << 2)
#define KLD_SVC_F_LOCAL_ONLY (1 << 3) /* externalTrafficPolicy=Local */
#define KLD_SVC_F_AFFINITY (1 << 4)   /* client-IP session affinity */
#define KLD_SVC_F_HOSTPORT (1 << 5)

#define KLD_LB_ALG_RANDOM 1
#define KLD_LB_ALG_ROUND_ROBIN 2
#define KLD_LB_ALG_MAGLEV 3

#define KLD_BE_ACTIVE 0
#define KLD_BE_TERMINATING 1
#define KLD_BE_MAINTENANCE 2

/*
 * kld_lb4_svc key. A service is one master entry (backend_slot 0) plus one
 * entry per backend slot 1..total; slots 1..count are active, count+1..total
 * terminating (kept so existing flows can finish, never picked for new ones).
 */
struct lb4_key {
	__be32 address;     /* network order: service VIP */
	__be16 dport;       /* network order: service port */
	__u8 proto;         /* IPPROTO_TCP / IPPROTO_UDP / IPPROTO_SCTP */
	__u8 scope;         /* KLD_SCOPE_EXTERNAL (0) or KLD_SCOPE_INTERNAL (1) */
	__u16 backend_slot; /* host order: 0 = service master entry, else slot */
	__u8 pad[2];        /* zero */
};

/* kld_lb4_svc value (master entry or backend slot, see lb4_key). */
struct lb4_service {
	__u32 backend_id;    /* host order: slot > 0: id in kld_lb4_be; master: 0 */
	__u16 count;         /* host order: master: number of active backends */
	__u16 rev_nat_index; /* host order: key into kld_lb4_rnat (0 = none) */
	__u8 flags;          /* KLD_SVC_F_* bit set */
	__u8 algorithm;      /* KLD_LB_ALG_* (master only) */
	__u16 total;         /* host order: master: active + terminating slots */
	__u32 affinity_timeout_sec; /* host order: seconds, 0 = no affinity */
};

/* kld_lb4_be value; key is __u32 backend_id (host order). */
struct lb4_backend {
	__be32 address; /* network order: backend IPv4 address */
	__be16 port;    /* network order: backend port */
	__u8 proto;     /* IPPROTO_* */
	__u8 state;     /* KLD_BE_* */
};

/*
 * kld_lb4_affin key: client-IP session affinity, one entry per {client,
 * service}. Socket LB has no source address before connect(), so it uses
 * client 0 ("this node").
 */
struct lb4_affinity_key {
	__be32 client;       /* network order: client IPv4 address (0: socket LB) */
	__u16 rev_nat_index; /* host order: the service's rev_nat_index */
	__u8 pad[2];         /* zero */
};

/* kld_lb4_affin value. */
struct lb4_affinity_value {
	__u64 last_used_ns; /* host order: bpf_ktime_get_ns() of the last selection */
	__u32 backend_id;   /* host order: id in kld_lb4_be */
	__u8 pad[4];        /* zero */
};

/* kld_lb4_rnat value; key is __u16 rev_nat_index (host order). */
struct lb4_reverse_nat {
	__be32 address; /* network order: service VIP replies appear to come from */
	__be16 port;    /* network order: service port */
	__u8 pad[2];    /* zero */
};

/* kld_sock_rnat key: one socket talking to one backend after socket LB. */
struct sock_rnat_key {
	__u64 cookie;   /* host order: bpf_get_socket_cookie() */
	__be32 address; /* network order: backend address the socket talks to */
	__be16 port;    /* network order: backend port */
	__u8 pad[2];    /* zero */
};

/* kld_sock_rnat value: what recvmsg/getpeername report instead. */
struct sock_rnat_value {
	__be32 address;      /* network order: service VIP */
	__be16 port;         /* network order: service port */
	__u16 rev_nat_index; /* host order: service's rev_nat_index */
};

/* ---- ipcache: IP/CIDR -> identity --------------------------------------- */
#define KLD_IPCACHE_PREFIX_BASE 32 /* family + pad bits preceding addr */

struct ipcache_key {
	__u32 prefixlen; /* host order: bits after this field: 32 + address prefix */
	__u8 family;     /* KLD_FAMILY_V4 or KLD_FAMILY_V6 */
	__u8 pad[3];     /* zero */
	__u8 addr[16];   /* network order; IPv4 in the first 4 bytes, rest zero */
};

#define KLD_IPC_F_REMOTE_NODE (1 << 0) /* address is another node */

struct ipcache_value {
	__u32 identity;         /* host order: security identity */
	__be32 tunnel_endpoint; /* network order: node to tunnel to, 0 = none */
	__u8 flags;             /* KLD_IPC_F_* */
	__u8 pad[3];            /* zero */
};

/* ---- local endpoints ----------------------------------------------------- */
struct endpoint_key {
	__u8 addr[16]; /* network order; IPv4 in the first 4 bytes, rest zero */
	__u8 family;   /* KLD_FAMILY_V4 or KLD_FAMILY_V6 */
	__u8 pad[3];   /* zero */
};

#define KLD_EP_F_INGRESS_ENFORCE (1 << 0) /* policy applies to traffic in */
#define KLD_EP_F_EGRESS_ENFORCE (1 << 1)  /* policy applies to traffic out */
#define KLD_EP_F_HOST (1 << 2)            /* the node itself */

struct endpoint_info {
	__u32 ifindex;    /* host order: host-side interface of the endpoint */
	__u32 identity;   /* host order: security identity */
	__u32 policy_set; /* host order: compiled policy set id, 0 = none */
	__u32 flags;      /* host order: KLD_EP_F_* */
};

/* ---- policy -------------------------------------------------------------- */
/* prefixlen counts bits after the field: policy_set+identity+direction = 72,
 * + proto = 80, + dport = 96 (a dport prefix gives port ranges). */
#define KLD_POLICY_PREFIX_MIN 72
#define KLD_POLICY_PREFIX_PROTO 80
#define KLD_POLICY_PREFIX_FULL 96

struct policy_key {
	__u32 prefixlen;  /* host order: 72..96, see above */
	__u32 policy_set; /* host order: endpoint_info.policy_set */
	__u32 identity;   /* host order: peer identity, 0 = any (second lookup) */
	__u8 direction;   /* KLD_DIR_* */
	__u8 proto;       /* IPPROTO_*, 0 = any */
	__be16 dport;     /* network order: destination port */
};

#define KLD_POLICY_ALLOW 1
#define KLD_POLICY_DENY 2

#define KLD_POLICY_F_AUDIT (1 << 0) /* report, do not enforce */

/*
 * Lookup (policy.h): one LPM lookup with the peer's identity; on a miss a
 * second with identity 0 (rules for any peer). The compiler resolves deny
 * precedence and overlaps itself: an identity's entries already include the
 * any-peer rules, and port ranges are split so that the longest prefix
 * always carries the final verdict (a longer allow never hides a deny).
 * policy_set ids are derived from the set's compiled content, so a changed
 * set gets a new id: conntrack entries remember the set (and peer identity)
 * their verdict was made against and re-check when either changed.
 */
struct policy_entry {
	__u32 rule_id;    /* host order: id of the rule, reported in events */
	__u8 action;      /* KLD_POLICY_ALLOW / KLD_POLICY_DENY */
	__u8 flags;       /* KLD_POLICY_F_* */
	__u16 proxy_port; /* host order: L7 proxy port, 0 = none */
};

/* ---- conntrack ----------------------------------------------------------- */
/* ct4_key.flags: which hook owns the entry (the original direction). */
#define KLD_CT_DIR_INGRESS 0 /* flow opened towards the endpoint (to_ep) */
#define KLD_CT_DIR_EGRESS 1  /* flow opened by the endpoint (from_ep) */
#define KLD_CT_DIR_SERVICE 2 /* per-packet LB: original tuple -> backend */

struct ct4_key {
	__be32 saddr; /* network order: original-direction source */
	__be32 daddr; /* network order: original-direction destination */
	__be16 sport; /* network order (ICMP echo: 0) */
	__be16 dport; /* network order (ICMP echo: echo id) */
	__u8 proto;   /* IPPROTO_* */
	__u8 flags;   /* KLD_CT_DIR_* */
	__u8 pad[2];  /* zero */
};

#define KLD_CT_F_SEEN_REPLY (1 << 0)
#define KLD_CT_F_CLOSING (1 << 1) /* FIN or RST seen */
#define KLD_CT_F_NORTH_SOUTH (1 << 2) /* translated at an uplink (from_netdev) */
#define KLD_CT_F_HAIRPIN (1 << 3)     /* backend is the client: source NATed too */
#define KLD_CT_F_MIDSTREAM (1 << 4)   /* TCP entry opened by a non-SYN packet: its
				       * reverse direction is not a trusted reply */

struct ct_entry {
	__u64 expires_ns;     /* host order: bpf_ktime_get_ns() deadline */
	__u64 last_report_ns; /* host order: bpf_ktime_get_ns() of last event */
	__u32 backend_id;     /* host order: chosen backend, 0 = no LB */
	__u32 src_identity;   /* host order: identity of the original source */
	__u16 rev_nat_index;  /* host order: 0 = no reverse NAT */
	__u8 tx_tcp_flags;    /* OR of TCP flags seen in the original direction */
	__u8 rx_tcp_flags;    /* OR of TCP flags seen in the reply direction */
	__u8 flags;           /* KLD_CT_F_* */
	__u8 pad[3];          /* zero */
	__u32 policy_set;     /* host order: policy set the verdict was made with, 0 = none */
	__u32 policy_peer;    /* host order: peer identity the verdict was made for */
};

/* skb->mark of a hairpin packet bpf_redirect()ed back out of the interface
 * it came from: kld_to_ep passes (and clears) it without tracking it again. */
#define KLD_MARK_HAIRPIN 0x6b6c0001

/* ---- events -------------------------------------------------------------- */
#define KLD_EVENT_TRACE 1
#define KLD_EVENT_DROP 2
#define KLD_EVENT_POLICY_VERDICT 3
#define KLD_EVENT_SOCK_LB 4

/* flow_event.reason for KLD_EVENT_TRACE: observation point (Hubble numbering) */
#define KLD_TRACE_TO_EP 0        /* TRACE_TO_LXC */
#define KLD_TRACE_TO_STACK 3     /* TRACE_TO_STACK */
#define KLD_TRACE_FROM_EP 5      /* TRACE_FROM_LXC */
#define KLD_TRACE_FROM_NETWORK 10 /* TRACE_FROM_NETWORK */

/* flow_event.reason for KLD_EVENT_DROP and metrics_key.reason: drop reason
 * (Hubble numbering); 0 = forwarded. */
#define KLD_REASON_FORWARDED 0
#define KLD_DROP_INVALID_SOURCE 132 /* an endpoint sent from an address it does not own */
#define KLD_DROP_POLICY_DENIED 133
#define KLD_DROP_INVALID 134
#define KLD_DROP_NO_SERVICE 158
#define KLD_DROP_POLICY_DENY 181

#define KLD_EVF_REPLY (1 << 0)   /* packet is in the reply direction */
#define KLD_EVF_NEW_FLOW (1 << 1) /* first packet of a conntrack entry */
#define KLD_EVF_FRAGMENT (1 << 2) /* non-first IPv4 fragment: no ports */

struct flow_event {
	__u64 timestamp_ns;  /* host order: bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u32 ifindex;       /* host order: interface the program runs on */
	__u32 src_identity;  /* host order */
	__u32 dst_identity;  /* host order */
	__u32 rule_id;       /* host order: policy rule, 0 = none */
	__u8 type;           /* KLD_EVENT_* */
	__u8 reason;         /* drop reason or trace point (KLD_TRACE_*) */
	__u8 direction;      /* KLD_DIR_* */
	__u8 family;         /* KLD_FAMILY_V4 / KLD_FAMILY_V6 */
	__u8 proto;          /* IPPROTO_* */
	__u8 tcp_flags;      /* TCP flags of this packet (FIN=0x01 ... CWR=0x80) */
	__u16 rev_nat_index; /* host order: 0 = none */
	__u8 src_addr[16];   /* network order; IPv4 in the first 4 bytes */
	__u8 dst_addr[16];   /* network order; IPv4 in the first 4 bytes */
	__be16 src_port;     /* network order */
	__be16 dst_port;     /* network order */
	__u32 pkt_len;       /* host order: bytes, skb->len */
	__u32 flags;         /* host order: KLD_EVF_* */
	__u8 pad[4];         /* zero: keeps the size a multiple of 8 */
};

/* ---- metrics and counters ------------------------------------------------ */
/* kld_policy_hits key: policy verdicts per deciding rule (values are
 * struct metrics_value). rule_id 0 with a drop reason = default deny. */
struct policy_hits_key {
	__u32 rule_id;  /* host order: policy_entry.rule_id, 0 = no rule */
	__u8 direction; /* KLD_DIR_* */
	__u8 reason;    /* KLD_REASON_FORWARDED (allowed) or KLD_DROP_POLICY_* */
	__u8 pad[2];    /* zero */
};

struct metrics_key {
	__u8 reason;    /* KLD_REASON_FORWARDED or KLD_DROP_* */
	__u8 direction; /* KLD_DIR_* */
	__u8 pad[2];    /* zero */
};

struct metrics_value {
	__u64 packets; /* host order: packet count (per CPU) */
	__u64 bytes;   /* host order: bytes, skb->len (per CPU) */
};

/* kld_counters indexes; values are __u64 per-CPU counts (host order). */
#define KLD_CTR_EVENTS_LOST 0     /* ringbuf reserve failed */
#define KLD_CTR_CT_CREATE_FAIL 1  /* kld_ct4 update failed */
#define KLD_CTR_SOCK_LB_MISS 2    /* service slot/backend missing (mid-update) */
#define KLD_CTR_SOCK_LB_NO_BE 3   /* no active backend: refused (ECONNREFUSED) */
#define KLD_CTR_SOCK_RNAT_FAIL 4  /* kld_sock_rnat update failed */
#define KLD_CTR_PARSE_ERROR 5     /* truncated header */
#define KLD_CTR_METRICS_FAIL 6    /* kld_metrics full */
#define KLD_CTR_LB_NEW_FLOW 7     /* tc: new flow translated to a backend */
#define KLD_CTR_LB_XLATE 8        /* tc: packets DNATed to a backend */
#define KLD_CTR_LB_RNAT 9         /* tc: packets reverse-NATed to the frontend */
#define KLD_CTR_LB_NO_BE 10       /* tc: dropped, service without active backend */
#define KLD_CTR_LB_MISS 11        /* tc: slot/backend missing (mid-update): passed as is */
#define KLD_CTR_NAT_FAIL 12       /* tc: rewrite helper failed: dropped */
#define KLD_CTR_LB_RNAT_MISS 13   /* tc: reply of a translated flow, kld_lb4_rnat entry gone */
#define KLD_CTR_COUNT 14

_Static_assert(sizeof(struct lb4_key) == 12, "lb4_key");
_Static_assert(sizeof(struct lb4_service) == 16, "lb4_service");
_Static_assert(sizeof(struct lb4_backend) == 8, "lb4_backend");
_Static_assert(sizeof(struct lb4_affinity_key) == 8, "lb4_affinity_key");
_Static_assert(sizeof(struct lb4_affinity_value) == 16, "lb4_affinity_value");
_Static_assert(sizeof(struct lb4_reverse_nat) == 8, "lb4_reverse_nat");
_Static_assert(sizeof(struct sock_rnat_key) == 16, "sock_rnat_key");
_Static_assert(sizeof(struct sock_rnat_value) == 8, "sock_rnat_value");
_Static_assert(sizeof(struct ipcache_key) == 24, "ipcache_key");
_Static_assert(sizeof(struct ipcache_value) == 12, "ipcache_value");
_Static_assert(sizeof(struct endpoint_key) == 20, "endpoint_key");
_Static_assert(sizeof(struct endpoint_info) == 16, "endpoint_info");
_Static_assert(sizeof(struct policy_key) == 16, "policy_key");
_Static_assert(sizeof(struct policy_entry) == 8, "policy_entry");
_Static_assert(sizeof(struct ct4_key) == 16, "ct4_key");
_Static_assert(sizeof(struct ct_entry) == 40, "ct_entry");
_Static_assert(sizeof(struct policy_hits_key) == 8, "policy_hits_key");
_Static_assert(sizeof(struct flow_event) == 80, "flow_event");
_Static_assert(sizeof(struct metrics_key) == 4, "metrics_key");
_Static_assert(sizeof(struct metrics_value) == 16, "metrics_value");
_Static_assert(KLD_CTR_COUNT <= KLD_MAX_COUNTERS, "counters");

#endif /* KLDNET_ABI_H */
