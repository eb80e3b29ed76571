// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Load-time knobs and tiny helpers shared by every kldnet program. */
#ifndef KLDNET_COMMON_H
#define KLDNET_COMMON_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "maps.h"

/*
 * Knobs: `volatile const` so they land in .rodata, userspace overrides them
 * before load (aya EbpfLoader::override_global) and the verifier then sees
 * constants and prunes dead branches. Names are mirrored in src/abi.rs.
 */
volatile const __u32 KLD_NODE_IDENTITY = KLD_ID_HOST;   /* identity of this node */
volatile const __u32 KLD_EVENTS_ENABLED = 1;            /* 0: no flow events */
volatile const __u32 KLD_EVENT_INTERVAL_SEC = 5;        /* re-report a flow at most this often */
volatile const __u32 KLD_CT_LIFETIME_TCP_SEC = 21600;   /* idle TCP flow lifetime */
volatile const __u32 KLD_CT_LIFETIME_NONTCP_SEC = 60;   /* idle UDP/ICMP/other lifetime */
volatile const __u32 KLD_CT_CLOSE_TIMEOUT_SEC = 10;     /* after FIN/RST */
/* Maglev table size M (prime): every inner array of kld_lb4_maglev has M
 * entries and flows index it with hash % M. */
volatile const __u32 KLD_MAGLEV_M = KLD_MAGLEV_M_DEFAULT;
/* Network order: source address given to hairpinned flows (the backend is
 * the client) so the workload accepts the packet; default 169.254.42.1. */
volatile const __u32 KLD_HAIRPIN_IP = __bpf_constant_htonl(0xa9fe2a01);
/* 1: socket LB refuses a service without backends with ECONNREFUSED via
 * bpf_set_retval() (Linux >= 5.18); 0: plain reject, the syscall sees EPERM. */
volatile const __u32 KLD_SOCK_ECONNREFUSED = 1;
/* 1: established flows keep their policy verdict in conntrack until the
 * endpoint's policy set or the peer's identity changes; 0: look the policy
 * up on every packet (benchmarks of the lookup itself). */
volatile const __u32 KLD_POLICY_VERDICT_CACHE = 1;

#define KLD_NSEC_PER_SEC 1000000000ULL

/* Bump one kld_counters slot (per-CPU, so a plain add is race free). */
static __always_inline void kld_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&kld_counters, &idx);

	if (v)
		*v += 1;
}

#endif /* KLDNET_COMMON_H */
