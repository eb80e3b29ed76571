// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Address -> security identity: local endpoints first, then the ipcache. */
#ifndef KLDNET_IDENTITY_H
#define KLDNET_IDENTITY_H

#include "common.h"

/* Local endpoint for an IPv4 address, or NULL. */
static __always_inline struct endpoint_info *kld_endpoint4(__be32 addr)
{
	struct endpoint_key key = {};

	__builtin_memcpy(key.addr, &addr, sizeof(addr));
	key.family = KLD_FAMILY_V4;
	return bpf_map_lookup_elem(&kld_endpoints, &key);
}

/* Identity of an IPv4 address in the ipcache; KLD_ID_WORLD when nothing matches. */
static __always_inline __u32 kld_ipcache_identity4(__be32 addr)
{
	struct ipcache_key key = {};
	struct ipcache_value *v;

	key.prefixlen = KLD_IPCACHE_PREFIX_BASE + 32;
	key.family = KLD_FAMILY_V4;
	__builtin_memcpy(key.addr, &addr, sizeof(addr));
	v = bpf_map_lookup_elem(&kld_ipcache, &key);
	if (v)
		return v->identity;
	return KLD_ID_WORLD;
}

/* Identity of an IPv4 address: local endpoints first, then the ipcache. */
static __always_inline __u32 kld_identity4(__be32 addr)
{
	struct endpoint_info *ep = kld_endpoint4(addr);

	return ep ? ep->identity : kld_ipcache_identity4(addr);
}

/*
 * Source address verification at an endpoint interface (ifindex): identity
 * comes from the source address, so an endpoint must not send from an
 * address that carries another identity: another local endpoint's (or one
 * of its own endpoints' on another interface), the node's, a remote
 * endpoint's or node's. Addresses kldnet knows nothing of (world, CIDR
 * identities, unmanaged) and 0.0.0.0 (DHCP) pass: they grant nothing.
 */
static __always_inline int kld_source_spoofed(__be32 saddr, const struct endpoint_info *src_ep,
					      __u32 src_identity, __u32 ifindex)
{
	if (src_ep)
		return src_ep->ifindex != ifindex;
	if (saddr == 0)
		return 0;
	return src_identity != KLD_ID_WORLD && src_identity != KLD_ID_UNMANAGED &&
	       src_identity < KLD_ID_CIDR_BASE;
}

#endif /* KLDNET_IDENTITY_H */
