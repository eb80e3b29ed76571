// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Per-packet service load balancing at tc (VMs and other workloads outside
 * the socket-LB cgroup; north-south traffic at uplinks).
 *
 * Forward (kld_lb4_xlate): a TCP/UDP packet to a frontend {addr, port,
 * proto} is DNATed to a backend. Stickiness lives in kld_ct4 under the
 * ORIGINAL tuple {client, frontend, cport, fport, proto, KLD_CT_DIR_SERVICE}
 * -> {backend_id, rev_nat_index}: later packets of the flow go to the same
 * backend even when it is terminating now (existing flows finish); a new
 * backend is chosen only when the entry is missing/expired, its backend is
 * gone from kld_lb4_be, the frontend now has another rev_nat_index, or a
 * SYN reopens the tuple of a closed flow.
 * The caller then tracks the TRANSLATED tuple as usual and stamps
 * rev_nat_index (+ KLD_CT_F_* flags) on that entry, so the reply
 * (backend -> client) is recognised by the normal reply lookup and
 * kld_lb4_rev_nat() rewrites its source back to the frontend.
 *
 * Hairpin: when the backend is the client itself, the source is also
 * rewritten to KLD_HAIRPIN_IP (a workload drops packets from its own
 * address) and the caller sends the packet straight back out of the
 * interface it came from; the reply, addressed to KLD_HAIRPIN_IP, is undone
 * by kld_lb4_hairpin_reply().
 *
 * Not handled: ICMP errors about translated flows (they reach the client
 * with the backend's inner addresses), IP fragments (only first fragments
 * carry ports; fragments of a translated flow are passed untranslated),
 * SCTP.
 */
#ifndef KLDNET_LB_XLATE_H
#define KLDNET_LB_XLATE_H

#include "common.h"
#include "conntrack.h"
#include "hash.h"
#include "lb.h"
#include "nat.h"
#include "parse.h"

enum kld_xlate_verdict {
	KLD_XLATE_DONE = 0,       /* translated: p holds the new tuple */
	KLD_XLATE_NO_BACKEND = 1, /* drop with KLD_DROP_NO_SERVICE */
	KLD_XLATE_MISS = 2,       /* mid-update: pass untranslated */
	KLD_XLATE_NAT_FAIL = 3,   /* rewrite failed: drop */
};

struct kld_xlate {
	__u32 backend_id;
	__u16 rev_nat_index;
	__u8 new_flow; /* backend chosen by this packet */
	__u8 hairpin;  /* source rewritten to KLD_HAIRPIN_IP */
};

/* Can per-packet LB handle this packet at all? */
static __always_inline int kld_lb4_eligible(const struct kld_pkt4 *p)
{
	return (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) && !p->fragment;
}

/*
 * DNAT p (whose destination is the frontend of svc, master key *key) to a
 * backend. ct_flags (KLD_CT_F_*) are stored on a new service entry;
 * allow_hairpin is 0 where the client cannot be a backend (uplinks).
 */
static __always_inline enum kld_xlate_verdict
kld_lb4_xlate(struct __sk_buff *skb, struct kld_pkt4 *p, const struct lb4_key *key,
	      const struct lb4_service *svc, __u8 ct_flags, int allow_hairpin, __u64 now,
	      struct kld_xlate *x)
{
	struct ct4_key skey = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.flags = KLD_CT_DIR_SERVICE,
	};
	struct lb4_backend *be = NULL;
	struct ct_entry *se;
	__be32 client = p->saddr;
	__u32 id = 0;

	x->new_flow = 0;
	x->hairpin = 0;
	x->rev_nat_index = svc->rev_nat_index;

	se = kld_ct4_find(&skey, now);
	/* A new connection on a closed flow's tuple chooses again (a terminating
	 * backend gets no new connection through a reused source port). */
	if (se && se->rev_nat_index == svc->rev_nat_index && !kld_ct_reopens(p, se)) {
		id = se->backend_id;
		be = kld_lb4_backend(id);
	}
	if (!be) {
		__u32 ports = ((__u32)p->sport << 16) | p->dport;
		__u32 hash = kld_jhash_3words(p->saddr, p->daddr, ports ^ p->proto, 0);
		struct ct_entry fresh = {
			.rev_nat_index = svc->rev_nat_index,
			.flags = ct_flags,
		};

		switch (kld_lb4_select(key, svc, client, hash, now, &id, &be)) {
		case KLD_LB_OK:
			break;
		case KLD_LB_NO_BACKEND:
			return KLD_XLATE_NO_BACKEND;
		default:
			kld_count(KLD_CTR_LB_MISS);
			return KLD_XLATE_MISS;
		}
		fresh.backend_id = id;
		/* Without the entry the flow still works, it just may not stick. */
		if (bpf_map_update_elem(&kld_ct4, &skey, &fresh, BPF_ANY))
			kld_count(KLD_CTR_CT_CREATE_FAIL);
		se = bpf_map_lookup_elem(&kld_ct4, &skey);
		x->new_flow = 1;
		kld_count(KLD_CTR_LB_NEW_FLOW);
	}
	if (se) {
		se->tx_tcp_flags |= p->tcp_flags;
		if (p->tcp_flags & (KLD_TCP_FIN | KLD_TCP_RST))
			se->flags |= KLD_CT_F_CLOSING;
		se->expires_ns = now + kld_ct_lifetime_ns(p, se);
	}

	x->backend_id = id;
	if (allow_hairpin && be->address == client) {
		x->hairpin = 1;
		if (kld_nat4(skb, p, KLD_NAT_SRC, client, KLD_HAIRPIN_IP, p->sport, p->sport))
			return KLD_XLATE_NAT_FAIL;
		p->saddr = KLD_HAIRPIN_IP;
	}
	if (kld_nat4(skb, p, KLD_NAT_DST, p->daddr, be->address, p->dport, be->port))
		return KLD_XLATE_NAT_FAIL;
	p->daddr = be->address;
	p->dport = be->port;
	kld_count(KLD_CTR_LB_XLATE);
	return KLD_XLATE_DONE;
}

/* Stamp the translated flow's conntrack entry so its replies are reverse-NATed. */
static __always_inline void kld_lb4_stamp(struct ct_entry *e, const struct kld_xlate *x, __u8 ct_flags)
{
	if (!e)
		return;
	e->backend_id = x->backend_id;
	e->rev_nat_index = x->rev_nat_index;
	e->flags |= ct_flags | (x->hairpin ? KLD_CT_F_HAIRPIN : 0);
}

/*
 * Reply of a translated flow (e: its entry, found by the reply lookup):
 * rewrite the source back to the frontend. Returns 0 when rewritten, 1 when
 * there is nothing to do, negative when the rewrite failed (drop).
 */
static __always_inline int kld_lb4_rev_nat(struct __sk_buff *skb, struct kld_pkt4 *p,
					   const struct ct_entry *e)
{
	struct lb4_reverse_nat *rn;
	__u16 idx;

	if (!e || !e->rev_nat_index)
		return 1;
	idx = e->rev_nat_index;
	rn = bpf_map_lookup_elem(&kld_lb4_rnat, &idx);
	if (!rn) {
		kld_count(KLD_CTR_LB_RNAT_MISS);
		return 1;
	}
	if (kld_nat4(skb, p, KLD_NAT_SRC, p->saddr, rn->address, p->sport, rn->port))
		return -1;
	p->saddr = rn->address;
	p->sport = rn->port;
	kld_count(KLD_CTR_LB_RNAT);
	return 0;
}

/*
 * A packet from a workload to KLD_HAIRPIN_IP: the reply of a hairpin flow
 * (client == backend == this workload). Its entry is the translated
 * tuple {HAIRPIN_IP:cport -> client:bport} created at kld_from_ep. Rewrite
 * {client:bport -> HAIRPIN_IP:cport} to {frontend -> client:cport}.
 * Returns 0 when rewritten (caller redirects), 1 when not a hairpin reply,
 * negative on rewrite failure.
 */
static __always_inline int kld_lb4_hairpin_reply(struct __sk_buff *skb, struct kld_pkt4 *p,
						 __u64 now, struct ct_entry **entry)
{
	struct ct4_key key = {
		.saddr = p->daddr,
		.daddr = p->saddr,
		.sport = p->dport,
		.dport = p->sport,
		.proto = p->proto,
		.flags = KLD_CT_DIR_EGRESS,
	};
	__be32 client = p->saddr;
	struct ct_entry *e;
	int rc;

	e = kld_ct4_find(&key, now);
	if (!e || !(e->flags & KLD_CT_F_HAIRPIN))
		return 1;
	e->rx_tcp_flags |= p->tcp_flags;
	e->flags |= KLD_CT_F_SEEN_REPLY;
	if (p->tcp_flags & (KLD_TCP_FIN | KLD_TCP_RST))
		e->flags |= KLD_CT_F_CLOSING;
	e->expires_ns = now + kld_ct_lifetime_ns(p, e);
	*entry = e;

	rc = kld_lb4_rev_nat(skb, p, e);
	if (rc)
		return rc;
	if (kld_nat4(skb, p, KLD_NAT_DST, p->daddr, client, p->dport, p->dport))
		return -1;
	p->daddr = client;
	return 0;
}

#endif /* KLDNET_LB_XLATE_H */
