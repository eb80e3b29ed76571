// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Every kldnet map, defined once. All are pinned by name so that every
 * object (and every restart of kldnetd) shares them through the versioned
 * pin directory <bpf-root>/v<KLD_ABI_VERSION>/. Names are <= 15 chars
 * (BPF_OBJ_NAME_LEN - 1) so the kernel keeps them whole.
 */
#ifndef KLDNET_MAPS_H
#define KLDNET_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

/* Services: {VIP, port, proto, scope, slot} -> master entry or backend slot;
 * read by socket LB (sock.bpf.c) and per-packet LB (datapath.bpf.c). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, KLD_MAX_LB4_SVC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_lb4_svc SEC(".maps");

/* Backends by id, so a backend shared by many services is stored once and
 * its state (terminating, maintenance) flips in one place. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, KLD_MAX_LB4_BE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_lb4_be SEC(".maps");

/* rev_nat_index -> service VIP:port, to make replies look like they come
 * from the service after per-packet LB. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct lb4_reverse_nat);
	__uint(max_entries, KLD_MAX_LB4_RNAT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_lb4_rnat SEC(".maps");

/* {client, service} -> last backend and when it was used: client-IP session
 * affinity (SVC_F_AFFINITY). LRU: clients come and go, nobody deletes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity_value);
	__uint(max_entries, KLD_MAX_LB4_AFFIN);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_lb4_affin SEC(".maps");

/* rev_nat_index -> round-robin counter (LB_ALG_ROUND_ROBIN). An array so
 * the datapath never creates entries; shared by all CPUs (atomic add). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, KLD_MAX_LB4_RNAT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_lb4_rr SEC(".maps");

/* Maglev inner table template: index -> backend id. BPF_F_INNER_MAP lets
 * the daemon insert arrays of another size (the KLD_MAGLEV_M knob); they
 * must carry the same flag and key/value sizes. */
struct kld_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, KLD_MAGLEV_M_DEFAULT);
	__uint(map_flags, BPF_F_INNER_MAP);
};

/* rev_nat_index (widened to __u32) -> that service's Maglev table. One
 * outer slot per service so a new table is swapped in atomically. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, KLD_MAX_LB4_MAGLEV);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct kld_maglev_inner);
} kld_lb4_maglev SEC(".maps");

/* {socket cookie, backend} -> VIP: filled by connect4/sendmsg4 so that
 * recvmsg4/getpeername4 show applications the address they asked for.
 * LRU because sockets die without telling us. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sock_rnat_key);
	__type(value, struct sock_rnat_value);
	__uint(max_entries, KLD_MAX_SOCK_RNAT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_sock_rnat SEC(".maps");

/* IP/CIDR -> security identity (+ tunnel endpoint) for every address that
 * is not a local endpoint; longest prefix wins. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, KLD_MAX_IPCACHE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_ipcache SEC(".maps");

/* Local endpoints by address: exact match, checked before kld_ipcache, and
 * the source of the endpoint's policy set and enforcement flags. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, KLD_MAX_ENDPOINTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_endpoints SEC(".maps");

/* Compiled policy: {policy set, peer identity, direction, proto, port
 * prefix} -> verdict; LPM so one entry can cover a port range. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_entry);
	__uint(max_entries, KLD_MAX_POLICY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_policy SEC(".maps");

/* IPv4 connection tracking: verdict caching, reply detection, per-flow
 * event rate limiting. LRU so a flood evicts old flows instead of failing. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct ct_entry);
	__uint(max_entries, KLD_MAX_CT4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_ct4 SEC(".maps");

/* Flow events (struct flow_event) to the userspace decoder; losses are
 * counted in kld_counters[KLD_CTR_EVENTS_LOST]. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, KLD_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_events SEC(".maps");

/* Packet/byte counts per {reason, direction}; per-CPU to avoid atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
	__uint(max_entries, KLD_MAX_METRICS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_metrics SEC(".maps");

/* Policy verdicts per deciding rule and direction (kld_policy_hits, key
 * struct policy_hits_key): which rule allowed or dropped how much. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct policy_hits_key);
	__type(value, struct metrics_value);
	__uint(max_entries, KLD_MAX_POLICY_HITS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_policy_hits SEC(".maps");

/* Datapath health counters (KLD_CTR_*): things that went wrong inside BPF
 * and would otherwise be invisible. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, KLD_MAX_COUNTERS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kld_counters SEC(".maps");

#endif /* KLDNET_MAPS_H */
