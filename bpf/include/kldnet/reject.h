// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Reject a packet sent to a service frontend without backends: the packet
 * is turned in place into an ICMP destination unreachable (port
 * unreachable) from the frontend to the client, quoting the original IP
 * header and the first 8 bytes of its L4 header (RFC 792), and sent back
 * out of the interface it came in on. The client's connect() (TCP) or its
 * next send/recv on a connected UDP socket fails with ECONNREFUSED at once,
 * as socket LB does for host processes, instead of retrying SYNs into a
 * drop for minutes.
 *
 * Only packets with a 20-byte IP header are rejected (the quote has a fixed
 * size), at most KLD_REJECT_PER_SEC a second; the caller drops the rest.
 */
#ifndef KLDNET_REJECT_H
#define KLDNET_REJECT_H

#include <linux/if_ether.h>
#include <linux/icmp.h>
#include <linux/in.h>
#include <linux/ip.h>

#include "common.h"
#include "parse.h"

#define KLD_REJECT_QUOTE (sizeof(struct iphdr) + 8)

struct kld_icmp4_reject {
	struct iphdr ip;
	struct icmphdr icmp;
	__u8 quote[KLD_REJECT_QUOTE];
};
_Static_assert(sizeof(struct kld_icmp4_reject) == 20 + 8 + 28, "no padding in the reply");

#define KLD_REJECT_LEN (ETH_HLEN + sizeof(struct kld_icmp4_reject))

/*
 * At most KLD_REJECT_PER_SEC replies a second per node (Linux's own default
 * for ICMP errors is 1000/s); past that the packets are only dropped, so a
 * flood at a frontend without backends never makes the node a reflector.
 * The window lives in .bss and is shared by all CPUs without atomics: an
 * approximate bound, which is all a rate limit needs.
 */
#define KLD_REJECT_PER_SEC 1000
static __u64 kld_reject_window_ns;
static __u32 kld_reject_sent;

static __always_inline int kld_reject_allowed(void)
{
	__u64 now = bpf_ktime_get_ns();

	if (now - kld_reject_window_ns >= KLD_NSEC_PER_SEC) {
		kld_reject_window_ns = now;
		kld_reject_sent = 0;
	}
	if (kld_reject_sent >= KLD_REJECT_PER_SEC)
		return 0;
	kld_reject_sent++;
	return 1;
}

static __always_inline __sum16 kld_csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__sum16)~s;
}

/* Rewrite the packet in skb (parsed as p) into the reply. 0 or negative. */
static __always_inline int kld_reject4(struct __sk_buff *skb, const struct kld_pkt4 *p)
{
	struct kld_icmp4_reject r = {};
	__u8 macs[2 * ETH_ALEN];

	if (p->l4_off != ETH_HLEN + sizeof(struct iphdr) || p->fragment || !kld_reject_allowed())
		return -1;
	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, r.quote, sizeof(r.quote)))
		return -1;
	if (bpf_skb_change_tail(skb, KLD_REJECT_LEN, 0))
		return -1;

	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.tot_len = bpf_htons(sizeof(r));
	r.ip.saddr = p->daddr;
	r.ip.daddr = p->saddr;
	r.ip.check = kld_csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r, sizeof(r.ip), 0));
	r.icmp.type = ICMP_DEST_UNREACH;
	r.icmp.code = ICMP_PORT_UNREACH;
	r.icmp.checksum = kld_csum_fold(
		bpf_csum_diff(0, 0, (__be32 *)((__u8 *)&r + sizeof(r.ip)), sizeof(r) - sizeof(r.ip), 0));

	/* Back to where it came from: destination MAC = its source MAC. */
	if (bpf_skb_store_bytes(skb, 0, macs + ETH_ALEN, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, macs, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &r, sizeof(r), 0))
		return -1;
	return 0;
}

#endif /* KLDNET_REJECT_H */
