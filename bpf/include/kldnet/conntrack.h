// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * IPv4 connection tracking in kld_ct4.
 *
 * An entry is keyed by the tuple of the flow's first packet plus the hook
 * that saw it (KLD_CT_DIR_*), so the two ends of a node-local flow (from_ep
 * of the client, to_ep of the server) keep separate entries. A packet is a
 * reply when its reversed tuple matches an entry owned by the opposite hook.
 */
#ifndef KLDNET_CONNTRACK_H
#define KLDNET_CONNTRACK_H

#include "common.h"
#include "parse.h"

#define KLD_TCP_FIN 0x01
#define KLD_TCP_SYN 0x02
#define KLD_TCP_RST 0x04
#define KLD_TCP_ACK 0x10

struct kld_ct_result {
	struct ct_entry *entry; /* NULL when the map refused a new entry */
	__u8 reply;             /* packet matched in the reply direction */
	__u8 new_flow;          /* entry created by this packet */
};

static __always_inline __u64 kld_ct_lifetime_ns(const struct kld_pkt4 *p, const struct ct_entry *e)
{
	if (e->flags & KLD_CT_F_CLOSING)
		return (__u64)KLD_CT_CLOSE_TIMEOUT_SEC * KLD_NSEC_PER_SEC;
	if (p->proto == IPPROTO_TCP)
		return (__u64)KLD_CT_LIFETIME_TCP_SEC * KLD_NSEC_PER_SEC;
	return (__u64)KLD_CT_LIFETIME_NONTCP_SEC * KLD_NSEC_PER_SEC;
}

/*
 * A TCP SYN (no ACK) on an entry that saw FIN or RST opens a new connection
 * on a reused tuple (the client picked the same source port again): what
 * the old connection left (backend, reverse NAT, policy verdict) must not
 * carry over, or a direct connection inherits a service flow's reverse NAT.
 */
static __always_inline int kld_ct_reopens(const struct kld_pkt4 *p, const struct ct_entry *e)
{
	return p->proto == IPPROTO_TCP && (e->flags & KLD_CT_F_CLOSING) &&
	       (p->tcp_flags & (KLD_TCP_SYN | KLD_TCP_ACK)) == KLD_TCP_SYN;
}

/* Find the packet's entry, expired entries counting as absent. */
static __always_inline struct ct_entry *kld_ct4_find(struct ct4_key *key, __u64 now)
{
	struct ct_entry *e = bpf_map_lookup_elem(&kld_ct4, key);

	if (e && e->expires_ns < now) {
		bpf_map_delete_elem(&kld_ct4, key);
		return NULL;
	}
	return e;
}

/*
 * Look the packet up (original, then reply direction); create an entry in
 * the original direction when neither exists; refresh flags and lifetime.
 * ct_dir is the hook's KLD_CT_DIR_INGRESS / KLD_CT_DIR_EGRESS.
 */
static __always_inline void kld_ct4_track(const struct kld_pkt4 *p, __u8 ct_dir, __u32 src_identity,
					  __u64 now, struct kld_ct_result *res)
{
	struct ct4_key key = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.flags = ct_dir,
	};
	struct ct_entry *e;

	res->reply = 0;
	res->new_flow = 0;

	e = kld_ct4_find(&key, now);
	if (!e) {
		struct ct4_key rkey = {
			.saddr = p->daddr,
			.daddr = p->saddr,
			.sport = p->dport,
			.dport = p->sport,
			.proto = p->proto,
			.flags = ct_dir == KLD_CT_DIR_EGRESS ? KLD_CT_DIR_INGRESS : KLD_CT_DIR_EGRESS,
		};

		e = kld_ct4_find(&rkey, now);
		if (e)
			res->reply = 1;
	}
	if (e && !res->reply && kld_ct_reopens(p, e)) {
		struct ct_entry fresh = { .src_identity = src_identity };

		*e = fresh;
		res->new_flow = 1;
	}
	if (!e) {
		struct ct_entry fresh = { .src_identity = src_identity };

		/* A TCP flow seen first mid-stream (no SYN) may be the leftover of a
		 * flow policy cut: it must not make the other side's packets replies. */
		if (p->proto == IPPROTO_TCP && !(p->tcp_flags & KLD_TCP_SYN))
			fresh.flags = KLD_CT_F_MIDSTREAM;

		if (bpf_map_update_elem(&kld_ct4, &key, &fresh, BPF_ANY)) {
			kld_count(KLD_CTR_CT_CREATE_FAIL);
			res->entry = NULL;
			return;
		}
		e = bpf_map_lookup_elem(&kld_ct4, &key);
		if (!e) {
			kld_count(KLD_CTR_CT_CREATE_FAIL);
			res->entry = NULL;
			return;
		}
		res->new_flow = 1;
	}

	if (res->reply) {
		e->rx_tcp_flags |= p->tcp_flags;
		e->flags |= KLD_CT_F_SEEN_REPLY;
	} else {
		e->tx_tcp_flags |= p->tcp_flags;
	}
	if (p->tcp_flags & (KLD_TCP_FIN | KLD_TCP_RST))
		e->flags |= KLD_CT_F_CLOSING;
	e->expires_ns = now + kld_ct_lifetime_ns(p, e);
	res->entry = e;
}

#endif /* KLDNET_CONNTRACK_H */
