// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc entry points (aya 0.14 with C objects needs SEC("classifier")).
 *
 *  kld_from_ep     ingress of an endpoint's host-side veth/tap: packets the
 *                  workload sends (endpoint egress). Per-packet service LB
 *                  (DNAT, hairpin), hairpin replies, and the reverse NAT of
 *                  north-south replies from a local backend.
 *  kld_to_ep       egress of that interface: packets to the workload
 *                  (endpoint ingress). Reverse NAT of east-west replies.
 *  kld_from_netdev ingress of an uplink: NodePort / LoadBalancer / external
 *                  IP frontends DNATed to a backend (north-south).
 *  kld_to_netdev   egress of an uplink: reverse NAT of north-south replies
 *                  that did not pass kld_from_ep (remote backends).
 *
 * Programs observe (conntrack, events, metrics) and pass (TC_ACT_OK) unless
 * they translate a packet or policy drops it: the endpoint hooks enforce
 * policy between tracking and the verdict (policy.h), after service
 * translation so that egress policy sees the backend.
 * See lb_xlate.h for the LB model and what it does not handle.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "kldnet/common.h"
#include "kldnet/conntrack.h"
#include "kldnet/events.h"
#include "kldnet/identity.h"
#include "kldnet/lb.h"
#include "kldnet/lb_xlate.h"
#include "kldnet/metrics.h"
#include "kldnet/parse.h"
#include "kldnet/policy.h"
#include "kldnet/reject.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Trace event for a tracked packet (rate limited per conntrack entry). */
static __always_inline void kld_trace4(struct __sk_buff *skb, const struct kld_pkt4 *p,
				       const struct kld_ct_result *ct, __u32 src_identity,
				       __u32 dst_identity, __u8 point, __u8 direction,
				       __u16 rev_nat_index, __u64 now)
{
	struct kld_event_meta m = {
		.src_identity = src_identity,
		.dst_identity = dst_identity,
		.type = KLD_EVENT_TRACE,
		.reason = point,
		.direction = direction,
		.rev_nat_index = rev_nat_index,
	};

	if (!kld_should_report(ct, now))
		return;
	if (ct->reply)
		m.flags |= KLD_EVF_REPLY;
	if (ct->new_flow)
		m.flags |= KLD_EVF_NEW_FLOW;
	if (p->fragment)
		m.flags |= KLD_EVF_FRAGMENT;
	kld_emit4(skb, p, &m, now);
}

/* Drop: counted in kld_metrics and always reported. */
static __always_inline int kld_drop4(struct __sk_buff *skb, const struct kld_pkt4 *p, __u8 reason,
				     __u8 direction, __u32 src_identity, __u16 rev_nat_index,
				     __u64 now)
{
	struct kld_event_meta m = {
		.src_identity = src_identity,
		.type = KLD_EVENT_DROP,
		.reason = reason,
		.direction = direction,
		.rev_nat_index = rev_nat_index,
	};

	kld_metrics_add(reason, direction, p->len);
	if (KLD_EVENTS_ENABLED)
		kld_emit4(skb, p, &m, now);
	return TC_ACT_SHOT;
}

/* Policy drop: counted, always reported with the deciding rule. */
static __always_inline int kld_policy_drop4(struct __sk_buff *skb, const struct kld_pkt4 *p,
					    const struct kld_policy_result *pol, __u8 direction,
					    __u32 src_identity, __u32 dst_identity, __u64 now)
{
	struct kld_event_meta m = {
		.src_identity = src_identity,
		.dst_identity = dst_identity,
		.rule_id = pol->rule_id,
		.type = KLD_EVENT_DROP,
		.reason = pol->reason,
		.direction = direction,
	};

	kld_metrics_add(pol->reason, direction, p->len);
	if (KLD_EVENTS_ENABLED)
		kld_emit4(skb, p, &m, now);
	return TC_ACT_SHOT;
}

/* Policy verdict event for the first packet of a flow the policy allowed. */
static __always_inline void kld_policy_verdict4(struct __sk_buff *skb, const struct kld_pkt4 *p,
						const struct kld_policy_result *pol,
						const struct kld_ct_result *ct, __u8 direction,
						__u32 src_identity, __u32 dst_identity, __u64 now)
{
	struct kld_event_meta m = {
		.src_identity = src_identity,
		.dst_identity = dst_identity,
		.rule_id = pol->rule_id,
		.type = KLD_EVENT_POLICY_VERDICT,
		.reason = KLD_REASON_FORWARDED,
		.direction = direction,
		.flags = KLD_EVF_NEW_FLOW,
	};

	if (KLD_EVENTS_ENABLED && pol->looked_up && (ct->new_flow || !ct->entry))
		kld_emit4(skb, p, &m, now);
}

/*
 * The packet's source was rewritten to a frontend that may be a node
 * address (NodePort): the stack would drop it as a martian source
 * (fib_validate_source(), unless accept_local). Route it ourselves and
 * redirect to the egress device, filling L2 from the neighbour table;
 * fall back to the stack when the FIB has no usable answer. The TTL is not
 * decremented (as with any redirect).
 */
static __always_inline int kld_route_out(struct __sk_buff *skb, const struct kld_pkt4 *p)
{
	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.l4_protocol = p->proto,
		.sport = p->sport,
		.dport = p->dport,
		.ipv4_src = p->saddr,
		.ipv4_dst = p->daddr,
		.ifindex = skb->ifindex,
	};
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);

	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	return TC_ACT_OK;
}

/* Send a hairpin packet back out of the interface it came in on. */
static __always_inline int kld_hairpin_out(struct __sk_buff *skb)
{
	if (kld_swap_macs(skb)) {
		kld_count(KLD_CTR_NAT_FAIL);
		return TC_ACT_SHOT;
	}
	skb->mark = KLD_MARK_HAIRPIN;
	return bpf_redirect(skb->ifindex, 0);
}

/*
 * A packet to a frontend without backends: counted and reported as a drop
 * (Hubble's SERVICE_BACKEND_NOT_FOUND), and answered with an ICMP port
 * unreachable sent back out of the interface it came in on, so the client
 * fails at once. `mark` (if any) tells that interface's egress hook to let
 * the reply through.
 */
static __always_inline int kld_no_backend4(struct __sk_buff *skb, struct kld_pkt4 *p,
					   __u8 direction, __u32 src_identity,
					   __u16 rev_nat_index, __u32 mark, __u64 now)
{
	kld_count(KLD_CTR_LB_NO_BE);
	kld_drop4(skb, p, KLD_DROP_NO_SERVICE, direction, src_identity, rev_nat_index, now);
	if (kld_reject4(skb, p))
		return TC_ACT_SHOT;
	if (mark)
		skb->mark = mark;
	return bpf_redirect(skb->ifindex, 0);
}

/*
 * kld_from_ep, packet to a service frontend: DNAT (+ hairpin SNAT), track
 * the translated tuple, report the new flow with its rev_nat_index.
 */
static __always_inline int kld_from_ep_service(struct __sk_buff *skb, struct kld_pkt4 *p,
					       const struct lb4_key *key,
					       const struct lb4_service *svc, __u32 src_identity,
					       __u64 now)
{
	struct kld_policy_result pol = {};
	struct kld_ct_result ct;
	struct kld_xlate x;
	__u32 dst_identity;

	switch (kld_lb4_xlate(skb, p, key, svc, 0, 1, now, &x)) {
	case KLD_XLATE_DONE:
		break;
	case KLD_XLATE_NO_BACKEND:
		return kld_no_backend4(skb, p, KLD_DIR_EGRESS, src_identity, svc->rev_nat_index,
				       KLD_MARK_HAIRPIN, now);
	case KLD_XLATE_NAT_FAIL:
		kld_count(KLD_CTR_NAT_FAIL);
		return kld_drop4(skb, p, KLD_DROP_INVALID, KLD_DIR_EGRESS, src_identity,
				 svc->rev_nat_index, now);
	default:
		return -1; /* mid-update: caller handles it as plain traffic */
	}

	kld_ct4_track(p, KLD_CT_DIR_EGRESS, src_identity, now, &ct);
	kld_lb4_stamp(ct.entry, &x, 0);
	dst_identity = kld_identity4(p->daddr);
	/* Egress policy sees the backend. A hairpin flow stays inside the
	 * workload (its source is KLD_HAIRPIN_IP now): nothing to enforce. */
	if (!x.hairpin) {
		kld_policy_enforce(kld_endpoint4(p->saddr), KLD_DIR_EGRESS, dst_identity, p, &ct,
				   KLD_CT_DIR_EGRESS, &pol);
		if (pol.reason)
			return kld_policy_drop4(skb, p, &pol, KLD_DIR_EGRESS, src_identity,
						dst_identity, now);
		kld_policy_verdict4(skb, p, &pol, &ct, KLD_DIR_EGRESS, src_identity, dst_identity,
				    now);
	}
	kld_metrics_add(KLD_REASON_FORWARDED, KLD_DIR_EGRESS, p->len);
	kld_trace4(skb, p, &ct, src_identity, dst_identity, KLD_TRACE_FROM_EP, KLD_DIR_EGRESS,
		   x.rev_nat_index, now);
	if (x.hairpin)
		return kld_hairpin_out(skb);
	return TC_ACT_OK;
}

SEC("classifier")
int kld_from_ep(struct __sk_buff *skb)
{
	struct kld_policy_result pol = {};
	struct kld_ct_result ct = {};
	struct endpoint_info *src_ep;
	struct kld_pkt4 p;
	struct lb4_key key;
	struct lb4_service *svc;
	__u32 src_identity, dst_identity, ifindex;
	__u64 now;

	switch (kld_parse(skb, &p)) {
	case KLD_PARSE_IPV4:
		break;
	case KLD_PARSE_ERROR:
		kld_count(KLD_CTR_PARSE_ERROR);
		return TC_ACT_OK;
	default:
		return TC_ACT_OK;
	}
	now = bpf_ktime_get_ns();

	/* The sender's identity, looked up once for every path below. */
	src_ep = kld_endpoint4(p.saddr);
	src_identity = src_ep ? src_ep->identity : kld_ipcache_identity4(p.saddr);
	ifindex = skb->ifindex;
	/* Keep clang from reusing the address ctx+ifindex later on: the verifier
	 * refuses loads through a modified ctx pointer. */
	asm volatile("" : "+r"(skb));
	if (kld_source_spoofed(p.saddr, src_ep, src_identity, ifindex))
		return kld_drop4(skb, &p, KLD_DROP_INVALID_SOURCE, KLD_DIR_EGRESS, src_identity,
				 0, now);

	if (kld_lb4_eligible(&p)) {
		if (p.daddr == KLD_HAIRPIN_IP) {
			int rc = kld_lb4_hairpin_reply(skb, &p, now, &ct.entry);

			if (rc < 0) {
				kld_count(KLD_CTR_NAT_FAIL);
				return kld_drop4(skb, &p, KLD_DROP_INVALID, KLD_DIR_EGRESS,
						 kld_identity4(p.saddr), 0, now);
			}
			if (rc == 0) {
				/* Both ends are this workload. */
				__u32 id = kld_identity4(p.daddr);

				ct.reply = 1;
				kld_metrics_add(KLD_REASON_FORWARDED, KLD_DIR_EGRESS, p.len);
				kld_trace4(skb, &p, &ct, id, id, KLD_TRACE_FROM_EP, KLD_DIR_EGRESS,
					   ct.entry ? ct.entry->rev_nat_index : 0, now);
				return kld_hairpin_out(skb);
			}
		}
		svc = kld_lb4_service(&key, p.daddr, p.dport, p.proto);
		if (svc) {
			int rc = kld_from_ep_service(skb, &p, &key, svc, src_identity, now);

			if (rc >= 0)
				return rc;
		}
	}

	dst_identity = kld_identity4(p.daddr);
	kld_ct4_track(&p, KLD_CT_DIR_EGRESS, src_identity, now, &ct);
	/* The tuple of a translated flow, now sent to the backend directly (a
	 * reused UDP source port; TCP reopens the entry on SYN): its replies
	 * must not be reverse-NATed to the frontend any more. */
	if (ct.entry && !ct.reply && ct.entry->rev_nat_index) {
		ct.entry->rev_nat_index = 0;
		ct.entry->backend_id = 0;
	}
	kld_policy_enforce(src_ep, KLD_DIR_EGRESS, dst_identity, &p, &ct, KLD_CT_DIR_EGRESS, &pol);
	if (pol.reason)
		return kld_policy_drop4(skb, &p, &pol, KLD_DIR_EGRESS, src_identity, dst_identity,
					now);
	kld_policy_verdict4(skb, &p, &pol, &ct, KLD_DIR_EGRESS, src_identity, dst_identity, now);
	kld_metrics_add(KLD_REASON_FORWARDED, KLD_DIR_EGRESS, p.len);
	if (ct.reply && ct.entry && (ct.entry->flags & KLD_CT_F_NORTH_SOUTH) &&
	    kld_lb4_eligible(&p)) {
		/* Reply of a north-south flow from a local backend: it enters the
		 * node here, so undo the DNAT here and route it out ourselves. */
		__u16 rev_nat_index = ct.entry->rev_nat_index;
		int rc = kld_lb4_rev_nat(skb, &p, ct.entry);

		if (rc < 0) {
			kld_count(KLD_CTR_NAT_FAIL);
			return kld_drop4(skb, &p, KLD_DROP_INVALID, KLD_DIR_EGRESS, src_identity,
					 rev_nat_index, now);
		}
		kld_trace4(skb, &p, &ct, src_identity, kld_identity4(p.daddr), KLD_TRACE_FROM_EP,
			   KLD_DIR_EGRESS, rev_nat_index, now);
		if (rc == 0)
			return kld_route_out(skb, &p);
		return TC_ACT_OK;
	}
	kld_trace4(skb, &p, &ct, src_identity, dst_identity, KLD_TRACE_FROM_EP, KLD_DIR_EGRESS, 0,
		   now);
	return TC_ACT_OK;
}

SEC("classifier")
int kld_to_ep(struct __sk_buff *skb)
{
	struct kld_policy_result pol = {};
	struct endpoint_info *dst_ep;
	struct kld_ct_result ct;
	struct kld_pkt4 p;
	__u16 rev_nat_index = 0;
	__u32 src_identity, dst_identity;
	__u64 now;

	/* Hairpin packet redirected back by kld_from_ep: already handled. */
	if (skb->mark == KLD_MARK_HAIRPIN) {
		skb->mark = 0;
		return TC_ACT_OK;
	}
	switch (kld_parse(skb, &p)) {
	case KLD_PARSE_IPV4:
		break;
	case KLD_PARSE_ERROR:
		kld_count(KLD_CTR_PARSE_ERROR);
		return TC_ACT_OK;
	default:
		return TC_ACT_OK;
	}
	now = bpf_ktime_get_ns();
	src_identity = kld_identity4(p.saddr);
	dst_ep = kld_endpoint4(p.daddr);
	dst_identity = dst_ep ? dst_ep->identity : kld_identity4(p.daddr);
	kld_ct4_track(&p, KLD_CT_DIR_INGRESS, src_identity, now, &ct);
	kld_policy_enforce(dst_ep, KLD_DIR_INGRESS, src_identity, &p, &ct, KLD_CT_DIR_INGRESS, &pol);
	if (pol.reason)
		return kld_policy_drop4(skb, &p, &pol, KLD_DIR_INGRESS, src_identity, dst_identity,
					now);
	kld_policy_verdict4(skb, &p, &pol, &ct, KLD_DIR_INGRESS, src_identity, dst_identity, now);
	kld_metrics_add(KLD_REASON_FORWARDED, KLD_DIR_INGRESS, p.len);

	/* Reply of an east-west flow this endpoint sent to a frontend: make it
	 * come from the frontend again (north-south replies never get here). */
	if (ct.reply && ct.entry && ct.entry->rev_nat_index &&
	    !(ct.entry->flags & KLD_CT_F_NORTH_SOUTH) && kld_lb4_eligible(&p)) {
		rev_nat_index = ct.entry->rev_nat_index;
		if (kld_lb4_rev_nat(skb, &p, ct.entry) < 0) {
			kld_count(KLD_CTR_NAT_FAIL);
			return kld_drop4(skb, &p, KLD_DROP_INVALID, KLD_DIR_INGRESS, src_identity,
					 rev_nat_index, now);
		}
	}
	kld_trace4(skb, &p, &ct, src_identity, dst_identity, KLD_TRACE_TO_EP, KLD_DIR_INGRESS,
		   rev_nat_index, now);
	return TC_ACT_OK;
}

/* Frontend kinds reachable from outside the node. */
#define KLD_SVC_F_NORTH_SOUTH (KLD_SVC_F_NODEPORT | KLD_SVC_F_LOADBALANCER | KLD_SVC_F_EXTERNAL_IP)

SEC("classifier")
int kld_from_netdev(struct __sk_buff *skb)
{
	struct kld_ct_result ct;
	struct kld_pkt4 p;
	struct kld_xlate x;
	struct lb4_key key;
	struct lb4_service *svc;
	__u32 src_identity;
	__u64 now;

	switch (kld_parse(skb, &p)) {
	case KLD_PARSE_IPV4:
		break;
	case KLD_PARSE_ERROR:
		kld_count(KLD_CTR_PARSE_ERROR);
		return TC_ACT_OK;
	default:
		return TC_ACT_OK;
	}
	if (!kld_lb4_eligible(&p))
		goto pass;
	svc = kld_lb4_service(&key, p.daddr, p.dport, p.proto);
	if (!svc || !(svc->flags & KLD_SVC_F_NORTH_SOUTH))
		goto pass;

	/*
	 * NodePort / LoadBalancer / external IP. With external_traffic_policy
	 * "local" the daemon programs local backends only and this is complete.
	 * With "cluster" it may list remote backends: the DNATed packet is
	 * forwarded out of the uplink, but the remote backend answers the
	 * client directly with its own address, which the client drops. That
	 * needs SNAT to a node address (or DSR), not implemented yet.
	 */
	now = bpf_ktime_get_ns();
	src_identity = kld_identity4(p.saddr);
	switch (kld_lb4_xlate(skb, &p, &key, svc, KLD_CT_F_NORTH_SOUTH, 0, now, &x)) {
	case KLD_XLATE_DONE:
		break;
	case KLD_XLATE_NO_BACKEND:
		/* The uplink's egress hook has nothing to undo on an ICMP reply. */
		return kld_no_backend4(skb, &p, KLD_DIR_INGRESS, src_identity,
				       svc->rev_nat_index, 0, now);
	case KLD_XLATE_NAT_FAIL:
		kld_count(KLD_CTR_NAT_FAIL);
		return kld_drop4(skb, &p, KLD_DROP_INVALID, KLD_DIR_INGRESS, src_identity,
				 svc->rev_nat_index, now);
	default:
		goto pass;
	}
	kld_metrics_add(KLD_REASON_FORWARDED, KLD_DIR_INGRESS, p.len);
	kld_ct4_track(&p, KLD_CT_DIR_INGRESS, src_identity, now, &ct);
	kld_lb4_stamp(ct.entry, &x, KLD_CT_F_NORTH_SOUTH);
	kld_trace4(skb, &p, &ct, src_identity, kld_identity4(p.daddr), KLD_TRACE_FROM_NETWORK,
		   KLD_DIR_INGRESS, x.rev_nat_index, now);
	return TC_ACT_OK;
pass:
	kld_metrics_add(KLD_REASON_FORWARDED, KLD_DIR_INGRESS, p.len);
	return TC_ACT_OK;
}

/*
 * Egress of an uplink. A north-south reply from a local backend was already
 * rewritten at kld_from_ep and finds no entry here (its tuple now carries
 * the frontend). A reply from a remote backend that is routed back through
 * this node (only then) is rewritten here. Lookup only: no entries are
 * created for the node's own traffic.
 */
SEC("classifier")
int kld_to_netdev(struct __sk_buff *skb)
{
	struct kld_pkt4 p;
	struct ct4_key key = {};
	struct ct_entry *e;
	__u64 now;

	switch (kld_parse(skb, &p)) {
	case KLD_PARSE_IPV4:
		break;
	case KLD_PARSE_ERROR:
		kld_count(KLD_CTR_PARSE_ERROR);
		return TC_ACT_OK;
	default:
		return TC_ACT_OK;
	}
	kld_metrics_add(KLD_REASON_FORWARDED, KLD_DIR_EGRESS, p.len);
	if (!kld_lb4_eligible(&p))
		return TC_ACT_OK;

	key.saddr = p.daddr;
	key.daddr = p.saddr;
	key.sport = p.dport;
	key.dport = p.sport;
	key.proto = p.proto;
	key.flags = KLD_CT_DIR_INGRESS;
	now = bpf_ktime_get_ns();
	e = kld_ct4_find(&key, now);
	if (!e || !(e->flags & KLD_CT_F_NORTH_SOUTH))
		return TC_ACT_OK;
	e->rx_tcp_flags |= p.tcp_flags;
	e->flags |= KLD_CT_F_SEEN_REPLY;
	if (p.tcp_flags & (KLD_TCP_FIN | KLD_TCP_RST))
		e->flags |= KLD_CT_F_CLOSING;
	e->expires_ns = now + kld_ct_lifetime_ns(&p, e);
	if (kld_lb4_rev_nat(skb, &p, e) < 0) {
		kld_count(KLD_CTR_NAT_FAIL);
		return kld_drop4(skb, &p, KLD_DROP_INVALID, KLD_DIR_EGRESS, KLD_NODE_IDENTITY,
				 e->rev_nat_index, now);
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
