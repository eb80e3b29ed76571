// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Packet parsing for tc programs: Ethernet + IPv4 + TCP/UDP/ICMP ports. */
#ifndef KLDNET_PARSE_H
#define KLDNET_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/icmp.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "abi.h"

/* Parsed view of one IPv4 packet; addresses and ports in network order. */
struct kld_pkt4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;  /* ICMP echo reply: echo id; other ICMP: 0 */
	__be16 dport;  /* ICMP echo request: echo id; other ICMP: 0 */
	__u8 proto;
	__u8 tcp_flags;
	__u8 fragment; /* 1: non-first fragment, ports unknown (0) */
	__u8 pad;
	__u32 len;     /* skb->len */
	__u32 l4_off;  /* offset of the L4 header from skb->data */
};

enum kld_parse_result {
	KLD_PARSE_IPV4 = 0,
	KLD_PARSE_IPV6 = 1,  /* passed through for now */
	KLD_PARSE_OTHER = 2, /* ARP and other non-IP: not ours */
	KLD_PARSE_ERROR = 3, /* truncated or malformed header */
};

#define KLD_IP_OFFSET_MASK 0x1fff

/*
 * Parse an Ethernet frame. Only the IPv4 path fills *p. Echo ids are put
 * in dport for requests and sport for replies so that a reply's reversed
 * tuple equals the request's tuple (conntrack relies on it).
 */
static __always_inline enum kld_parse_result kld_parse(struct __sk_buff *skb, struct kld_pkt4 *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	void *l4;
	__u32 ihl;

	if ((void *)(eth + 1) > data_end)
		return KLD_PARSE_ERROR;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return KLD_PARSE_IPV6;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return KLD_PARSE_OTHER;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return KLD_PARSE_ERROR;
	ihl = (__u32)ip->ihl * 4;
	if (ip->version != 4 || ihl < sizeof(*ip))
		return KLD_PARSE_ERROR;

	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->len = skb->len;
	p->sport = 0;
	p->dport = 0;
	p->tcp_flags = 0;
	p->fragment = 0;
	p->pad = 0;
	p->l4_off = 0;

	if (ip->frag_off & bpf_htons(KLD_IP_OFFSET_MASK)) {
		p->fragment = 1;
		return KLD_PARSE_IPV4;
	}

	l4 = (void *)ip + ihl;
	p->l4_off = sizeof(*eth) + ihl;
	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return KLD_PARSE_ERROR;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		/* byte 13 of the TCP header: CWR ECE URG ACK PSH RST SYN FIN */
		p->tcp_flags = ((__u8 *)tcp)[13];
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return KLD_PARSE_ERROR;
		p->sport = udp->source;
		p->dport = udp->dest;
		break;
	}
	case IPPROTO_SCTP: {
		/* common header: source port, destination port, tag, checksum */
		__be16 *ports = l4;

		if ((void *)(ports + 2) > data_end)
			return KLD_PARSE_ERROR;
		p->sport = ports[0];
		p->dport = ports[1];
		break;
	}
	case IPPROTO_ICMP: {
		struct icmphdr *icmp = l4;

		if ((void *)(icmp + 1) > data_end)
			return KLD_PARSE_ERROR;
		if (icmp->type == ICMP_ECHO)
			p->dport = icmp->un.echo.id;
		else if (icmp->type == ICMP_ECHOREPLY)
			p->sport = icmp->un.echo.id;
		break;
	}
	default:
		break;
	}
	return KLD_PARSE_IPV4;
}

#endif /* KLDNET_PARSE_H */
