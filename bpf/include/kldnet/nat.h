// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * IPv4 address/port rewrites for tc programs, with incremental IP and L4
 * checksum updates (bpf_l3_csum_replace / bpf_l4_csum_replace). The L4
 * checksum covers the pseudo header, hence BPF_F_PSEUDO_HDR for addresses;
 * a UDP checksum of 0 means "none" and stays 0 (BPF_F_MARK_MANGLED_0, which
 * also turns a computed 0 into 0xffff). Both helpers cope with
 * CHECKSUM_PARTIAL/COMPLETE skbs (inet_proto_csum_replace4()).
 *
 * Helpers may move the packet: callers must not use packet pointers taken
 * before a rewrite.
 */
#ifndef KLDNET_NAT_H
#define KLDNET_NAT_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "common.h"
#include "parse.h"

#define KLD_IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define KLD_IP_SRC_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))
#define KLD_IP_DST_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, daddr))

#define KLD_NAT_SRC 0
#define KLD_NAT_DST 1

/*
 * Rewrite the source (KLD_NAT_SRC) or destination (KLD_NAT_DST) address and
 * port of a TCP/UDP packet from (old_addr, old_port) to (addr, port).
 * Returns 0 or a negative error (the packet may then be half rewritten:
 * drop it).
 */
static __always_inline int kld_nat4(struct __sk_buff *skb, const struct kld_pkt4 *p, int which,
				    __be32 old_addr, __be32 addr, __be16 old_port, __be16 port)
{
	__u32 addr_off = which == KLD_NAT_SRC ? KLD_IP_SRC_OFF : KLD_IP_DST_OFF;
	__u32 port_off = p->l4_off + (which == KLD_NAT_SRC ? 0 : 2);
	__u32 csum_off;
	__u64 mangled = 0;

	if (p->proto == IPPROTO_TCP) {
		csum_off = p->l4_off + __builtin_offsetof(struct tcphdr, check);
	} else {
		csum_off = p->l4_off + __builtin_offsetof(struct udphdr, check);
		mangled = BPF_F_MARK_MANGLED_0;
	}

	if (old_addr != addr) {
		if (bpf_l4_csum_replace(skb, csum_off, old_addr, addr,
					BPF_F_PSEUDO_HDR | mangled | sizeof(addr)))
			return -1;
		if (bpf_l3_csum_replace(skb, KLD_IP_CSUM_OFF, old_addr, addr, sizeof(addr)))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &addr, sizeof(addr), 0))
			return -1;
	}
	if (old_port != port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, port, mangled | sizeof(port)))
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &port, sizeof(port), 0))
			return -1;
	}
	return 0;
}

/* Swap Ethernet source and destination: send a frame back where it came from. */
static __always_inline int kld_swap_macs(struct __sk_buff *skb)
{
	__u8 macs[2 * ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)))
		return -1;
	if (bpf_skb_store_bytes(skb, 0, &macs[ETH_ALEN], ETH_ALEN, 0))
		return -1;
	return bpf_skb_store_bytes(skb, ETH_ALEN, macs, ETH_ALEN, 0);
}

#endif /* KLDNET_NAT_H */
