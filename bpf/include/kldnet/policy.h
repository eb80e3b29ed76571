// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Identity-based L3/L4 policy enforcement (kld_policy, see abi.h).
 *
 * Each hook enforces its own direction for the local endpoint it serves:
 * kld_from_ep the egress policy of the source endpoint, kld_to_ep the
 * ingress policy of the destination endpoint. Replies of tracked flows pass
 * (stateful). A packet in the original direction is checked when its
 * conntrack entry holds no verdict for the endpoint's current policy set and
 * the peer's current identity; the daemon gives a changed set a new id, so
 * established flows are re-checked after every policy change and cut (their
 * entry removed) when no longer allowed.
 */
#ifndef KLDNET_POLICY_H
#define KLDNET_POLICY_H

#include "common.h"
#include "conntrack.h"
#include "parse.h"

#define KLD_POLICY_NONE 0 /* no entry: default deny */

struct kld_policy_result {
	__u32 rule_id; /* deciding rule, 0 = none (default deny) */
	__u8 reason;   /* 0 = pass, else KLD_DROP_POLICY_DENIED / _DENY */
	__u8 looked_up; /* the maps were consulted (not cached, enforced) */
};

/* One verdict: the peer's entries first, then the any-peer entries. */
static __always_inline __u8 kld_policy_lookup(__u32 set, __u32 identity, __u8 direction,
					      const struct kld_pkt4 *p, __u32 *rule_id)
{
	struct policy_key key = {
		.prefixlen = KLD_POLICY_PREFIX_FULL,
		.policy_set = set,
		.identity = identity,
		.direction = direction,
		.proto = p->proto,
		.dport = p->dport,
	};
	struct policy_entry *e;

	/* ICMP and other port-less protocols: parse.h fills dport with the
	 * echo id; the compiler writes them at KLD_POLICY_PREFIX_PROTO. */
	e = bpf_map_lookup_elem(&kld_policy, &key);
	if (!e && identity != KLD_ID_UNKNOWN) {
		key.identity = KLD_ID_UNKNOWN;
		e = bpf_map_lookup_elem(&kld_policy, &key);
	}
	if (!e) {
		*rule_id = 0;
		return KLD_POLICY_NONE;
	}
	*rule_id = e->rule_id;
	return e->action;
}

static __always_inline void kld_policy_hit(__u32 rule_id, __u8 direction, __u8 reason, __u32 len)
{
	struct policy_hits_key key = { .rule_id = rule_id, .direction = direction, .reason = reason };
	struct metrics_value init = { .packets = 1, .bytes = len };
	struct metrics_value *v = bpf_map_lookup_elem(&kld_policy_hits, &key);

	if (v) {
		v->packets += 1;
		v->bytes += len;
		return;
	}
	if (bpf_map_update_elem(&kld_policy_hits, &key, &init, BPF_NOEXIST)) {
		v = bpf_map_lookup_elem(&kld_policy_hits, &key);
		if (v) {
			v->packets += 1;
			v->bytes += len;
		}
	}
}

/* Forget a denied flow: nothing may pass as its reply. */
static __always_inline void kld_ct4_forget(const struct kld_pkt4 *p, __u8 ct_dir)
{
	struct ct4_key key = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.flags = ct_dir,
	};

	bpf_map_delete_elem(&kld_ct4, &key);
}

/*
 * Enforce ep's policy for one direction on a tracked packet. ep may be NULL
 * (not a local endpoint: nothing to enforce). peer is the identity of the
 * other end. res->reason is 0 when the packet may pass.
 */
static __always_inline void kld_policy_enforce(const struct endpoint_info *ep, __u8 direction,
					       __u32 peer, const struct kld_pkt4 *p,
					       const struct kld_ct_result *ct, __u8 ct_dir,
					       struct kld_policy_result *res)
{
	__u32 enforce = direction == KLD_DIR_INGRESS ? KLD_EP_F_INGRESS_ENFORCE
						     : KLD_EP_F_EGRESS_ENFORCE;
	struct ct_entry *e = ct->entry;
	__u8 action;

	res->rule_id = 0;
	res->reason = 0;
	res->looked_up = 0;
	if (!ep || !(ep->flags & enforce))
		return;
	if (ct->reply) {
		/* Replies pass, unless the flow was opened mid-stream: then the
		 * "reply" is checked like a new packet (nothing cached, nothing
		 * forgotten: the entry belongs to the other direction). */
		if (!e || !(e->flags & KLD_CT_F_MIDSTREAM))
			return;
		res->looked_up = 1;
		action = kld_policy_lookup(ep->policy_set, peer, direction, p, &res->rule_id);
		if (action == KLD_POLICY_ALLOW)
			return;
		res->reason = action == KLD_POLICY_DENY ? KLD_DROP_POLICY_DENY
							: KLD_DROP_POLICY_DENIED;
		kld_policy_hit(res->rule_id, direction, res->reason, p->len);
		return;
	}
	if (KLD_POLICY_VERDICT_CACHE && e && e->policy_set == ep->policy_set &&
	    e->policy_peer == peer)
		return; /* allowed before under the same set and identity */

	res->looked_up = 1;
	action = kld_policy_lookup(ep->policy_set, peer, direction, p, &res->rule_id);
	if (action == KLD_POLICY_ALLOW) {
		kld_policy_hit(res->rule_id, direction, KLD_REASON_FORWARDED, p->len);
		if (e) {
			e->policy_set = ep->policy_set;
			e->policy_peer = peer;
		}
		return;
	}
	res->reason = action == KLD_POLICY_DENY ? KLD_DROP_POLICY_DENY : KLD_DROP_POLICY_DENIED;
	kld_policy_hit(res->rule_id, direction, res->reason, p->len);
	if (e)
		kld_ct4_forget(p, ct_dir);
}

#endif /* KLDNET_POLICY_H */
