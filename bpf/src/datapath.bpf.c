// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc entry points (aya 0.14 with C objects needs SEC("classifier")).
 *
 *  kld_from_ep     ingress of an endpoint's host-side veth/tap: packets the
 *                  workload sends (endpoint egress).
 *  kld_to_ep       egress of that interface: packets to the workload
 *                  (endpoint ingress).
 *  kld_from_netdev ingress of an uplink: north-south placeholder.
 *
 * For now all of them observe and pass (TC_ACT_OK); policy and per-packet
 * LB plug in between tracking and the verdict.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "kldnet/common.h"
#include "kldnet/conntrack.h"
#include "kldnet/events.h"
#include "kldnet/identity.h"
#include "kldnet/metrics.h"
#include "kldnet/parse.h"

/*
 * Endpoint path. direction is from the endpoint's point of view:
 * KLD_DIR_EGRESS for from_ep, KLD_DIR_INGRESS for to_ep.
 */
static __always_inline int kld_handle_ep(struct __sk_buff *skb, __u8 direction)
{
	struct kld_pkt4 p;
	struct kld_ct_result ct;
	struct kld_event_meta m = {};
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
	m.src_identity = kld_identity4(p.saddr);
	m.dst_identity = kld_identity4(p.daddr);
	kld_metrics_add(KLD_REASON_FORWARDED, direction, p.len);

	kld_ct4_track(&p, direction == KLD_DIR_EGRESS ? KLD_CT_DIR_EGRESS : KLD_CT_DIR_INGRESS,
		      m.src_identity, now, &ct);
	if (!kld_should_report(&ct, now))
		return TC_ACT_OK;

	m.type = KLD_EVENT_TRACE;
	m.reason = direction == KLD_DIR_EGRESS ? KLD_TRACE_FROM_EP : KLD_TRACE_TO_EP;
	m.direction = direction;
	if (ct.reply)
		m.flags |= KLD_EVF_REPLY;
	if (ct.new_flow)
		m.flags |= KLD_EVF_NEW_FLOW;
	if (p.fragment)
		m.flags |= KLD_EVF_FRAGMENT;
	kld_emit4(skb, &p, &m, now);
	return TC_ACT_OK;
}

SEC("classifier")
int kld_from_ep(struct __sk_buff *skb)
{
	return kld_handle_ep(skb, KLD_DIR_EGRESS);
}

SEC("classifier")
int kld_to_ep(struct __sk_buff *skb)
{
	return kld_handle_ep(skb, KLD_DIR_INGRESS);
}

SEC("classifier")
int kld_from_netdev(struct __sk_buff *skb)
{
	struct kld_pkt4 p;

	switch (kld_parse(skb, &p)) {
	case KLD_PARSE_IPV4:
		kld_metrics_add(KLD_REASON_FORWARDED, KLD_DIR_INGRESS, p.len);
		break;
	case KLD_PARSE_ERROR:
		kld_count(KLD_CTR_PARSE_ERROR);
		break;
	default:
		break;
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
