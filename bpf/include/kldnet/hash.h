// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Bob Jenkins' lookup3 final mix, as jhash_3words() in <linux/jhash.h>:
 * flow hashing for Maglev. Identical on every node, so a flow hashes to the
 * same table index wherever it lands. */
#ifndef KLDNET_HASH_H
#define KLDNET_HASH_H

#include <linux/types.h>

#define KLD_JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 kld_rol32(__u32 w, __u32 s)
{
	return (w << s) | (w >> (32 - s));
}

static __always_inline __u32 kld_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += KLD_JHASH_INITVAL + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	c ^= b; c -= kld_rol32(b, 14);
	a ^= c; a -= kld_rol32(c, 11);
	b ^= a; b -= kld_rol32(a, 25);
	c ^= b; c -= kld_rol32(b, 16);
	a ^= c; a -= kld_rol32(c, 4);
	b ^= a; b -= kld_rol32(a, 14);
	c ^= b; c -= kld_rol32(b, 24);
	return c;
}

#endif /* KLDNET_HASH_H */
