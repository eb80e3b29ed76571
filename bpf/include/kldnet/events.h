// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Flow events into the kld_events ring buffer, rate limited per flow. */
#ifndef KLDNET_EVENTS_H
#define KLDNET_EVENTS_H

#include "common.h"
#include "conntrack.h"
#include "parse.h"

/*
 * Report a flow when its conntrack entry is new or was last reported at
 * least KLD_EVENT_INTERVAL_SEC ago. Without an entry (map refused it) we
 * report every packet rather than go blind.
 */
static __always_inline int kld_should_report(const struct kld_ct_result *ct, __u64 now)
{
	struct ct_entry *e = ct->entry;

	if (!KLD_EVENTS_ENABLED)
		return 0;
	if (!e)
		return 1;
	if (ct->new_flow || now - e->last_report_ns >= (__u64)KLD_EVENT_INTERVAL_SEC * KLD_NSEC_PER_SEC) {
		e->last_report_ns = now;
		return 1;
	}
	return 0;
}

struct kld_event_meta {
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule_id;
	__u32 flags; /* KLD_EVF_* */
	__u8 type;   /* KLD_EVENT_* */
	__u8 reason; /* trace point or drop reason */
	__u8 direction;
	__u8 pad;
	__u16 rev_nat_index;
};

/*
 * The reader is woken only once this much is waiting; otherwise it finds the
 * records on its next poll (every 50 ms). A wakeup per record would cost the
 * forwarding CPU far more than the record itself (measured: a third of the
 * TCP connections/s of a busy two-core node).
 */
#define KLD_EVENTS_WAKEUP_BYTES (64 * 1024)

/* Emit one IPv4 flow_event; a full ring buffer is counted, never fatal. */
static __always_inline void kld_emit4(struct __sk_buff *skb, const struct kld_pkt4 *p,
				      const struct kld_event_meta *m, __u64 now)
{
	struct flow_event *ev = bpf_ringbuf_reserve(&kld_events, sizeof(*ev), 0);

	if (!ev) {
		kld_count(KLD_CTR_EVENTS_LOST);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->timestamp_ns = now;
	ev->ifindex = skb->ifindex;
	ev->src_identity = m->src_identity;
	ev->dst_identity = m->dst_identity;
	ev->rule_id = m->rule_id;
	ev->type = m->type;
	ev->reason = m->reason;
	ev->direction = m->direction;
	ev->family = KLD_FAMILY_V4;
	ev->proto = p->proto;
	ev->tcp_flags = p->tcp_flags;
	ev->rev_nat_index = m->rev_nat_index;
	__builtin_memcpy(ev->src_addr, &p->saddr, sizeof(p->saddr));
	__builtin_memcpy(ev->dst_addr, &p->daddr, sizeof(p->daddr));
	ev->src_port = p->sport;
	ev->dst_port = p->dport;
	ev->pkt_len = p->len;
	ev->flags = m->flags;
	bpf_ringbuf_submit(ev, bpf_ringbuf_query(&kld_events, BPF_RB_AVAIL_DATA) >=
				       KLD_EVENTS_WAKEUP_BYTES
			       ? BPF_RB_FORCE_WAKEUP
			       : BPF_RB_NO_WAKEUP);
}

#endif /* KLDNET_EVENTS_H */
