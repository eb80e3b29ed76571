// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Backend selection, shared by socket LB (sock_lb.h) and per-packet LB at tc
 * (lb_xlate.h): service master entry -> one active backend.
 *
 *   count == 0                      no backend (caller refuses or drops);
 *   SVC_F_AFFINITY + timeout > 0    the client's remembered backend while it
 *                                   is within the timeout and still active;
 *   LB_ALG_MAGLEV                   kld_lb4_maglev[rev_nat_index][hash % M]
 *                                   (random when the table is missing);
 *   LB_ALG_ROUND_ROBIN              slot kld_lb4_rr[rev_nat_index]++ % count + 1;
 *   LB_ALG_RANDOM (and unknown)     slot prandom % count + 1.
 *
 * Only slots 1..count (active) are ever picked; slots count+1..total hold
 * terminating backends, which keep existing flows (conntrack) but get no
 * new ones. The daemon repeats a backend id in several slots to weight it.
 *
 * Affinity trusts kld_lb4_be: a remembered backend that left the service
 * but is still in kld_lb4_be and active (its id shared with another
 * service) keeps getting this client until the timeout. The daemon should
 * delete the service's kld_lb4_affin entries when it removes a backend from
 * it (or a {backend, service} match map must be added, as Cilium has).
 */
#ifndef KLDNET_LB_H
#define KLDNET_LB_H

#include "common.h"
#include "hash.h"

enum kld_lb_result {
	KLD_LB_OK = 0,
	KLD_LB_NO_BACKEND = 1, /* service has no active backend */
	KLD_LB_MISS = 2,       /* slot or backend missing (daemon mid-update) */
};

/* Master entry of the service behind {addr, port, proto}, scope external. */
static __always_inline struct lb4_service *kld_lb4_service(struct lb4_key *key, __be32 addr,
							    __be16 port, __u8 proto)
{
	key->address = addr;
	key->dport = port;
	key->proto = proto;
	key->scope = KLD_SCOPE_EXTERNAL;
	key->backend_slot = 0;
	key->pad[0] = 0;
	key->pad[1] = 0;
	return bpf_map_lookup_elem(&kld_lb4_svc, key);
}

static __always_inline struct lb4_backend *kld_lb4_backend(__u32 backend_id)
{
	return bpf_map_lookup_elem(&kld_lb4_be, &backend_id);
}

/* Backend id in one slot of the service (0 when the slot is missing). */
static __always_inline __u32 kld_lb4_slot_backend(const struct lb4_key *master, __u16 slot)
{
	struct lb4_key key = *master;
	struct lb4_service *s;

	key.backend_slot = slot;
	s = bpf_map_lookup_elem(&kld_lb4_svc, &key);
	return s ? s->backend_id : 0;
}

/* Active slot 1..count for a new flow (count > 0). */
static __always_inline __u16 kld_lb4_pick_slot(const struct lb4_service *svc)
{
	__u32 count = svc->count;

	if (svc->algorithm == KLD_LB_ALG_ROUND_ROBIN) {
		__u32 idx = svc->rev_nat_index;
		__u32 *ctr = bpf_map_lookup_elem(&kld_lb4_rr, &idx);

		if (ctr)
			return (__u16)(__sync_fetch_and_add(ctr, 1) % count) + 1;
	}
	return (__u16)(bpf_get_prandom_u32() % count) + 1;
}

/* Backend id from the service's Maglev table, 0 when there is none. */
static __always_inline __u32 kld_lb4_maglev_pick(const struct lb4_service *svc, __u32 hash)
{
	__u32 outer = svc->rev_nat_index;
	__u32 m = KLD_MAGLEV_M;
	__u32 idx, *id;
	void *table;

	if (m == 0)
		return 0;
	table = bpf_map_lookup_elem(&kld_lb4_maglev, &outer);
	if (!table)
		return 0;
	idx = hash % m;
	id = bpf_map_lookup_elem(table, &idx);
	return id ? *id : 0;
}

/*
 * Choose a backend for a new flow (or new socket) of the service whose
 * master entry is svc (key: its master key). client keys affinity; hash
 * feeds Maglev. On KLD_LB_OK, *backend_id and *be are set.
 */
static __always_inline enum kld_lb_result kld_lb4_select(const struct lb4_key *key,
							 const struct lb4_service *svc,
							 __be32 client, __u32 hash, __u64 now,
							 __u32 *backend_id, struct lb4_backend **be)
{
	struct lb4_affinity_key akey = {
		.client = client,
		.rev_nat_index = svc->rev_nat_index,
	};
	__u64 timeout_ns = (__u64)svc->affinity_timeout_sec * KLD_NSEC_PER_SEC;
	int affinity = (svc->flags & KLD_SVC_F_AFFINITY) && timeout_ns;
	struct lb4_backend *b = NULL;
	__u32 id = 0;

	if (svc->count == 0)
		return KLD_LB_NO_BACKEND;

	if (affinity) {
		struct lb4_affinity_value *av = bpf_map_lookup_elem(&kld_lb4_affin, &akey);

		if (av && now - av->last_used_ns <= timeout_ns) {
			id = av->backend_id;
			b = kld_lb4_backend(id);
			if (b && b->state == KLD_BE_ACTIVE) {
				av->last_used_ns = now;
				*backend_id = id;
				*be = b;
				return KLD_LB_OK;
			}
			b = NULL;
		}
	}

	if (svc->algorithm == KLD_LB_ALG_MAGLEV) {
		id = kld_lb4_maglev_pick(svc, hash);
		if (id) {
			b = kld_lb4_backend(id);
			if (b && b->state != KLD_BE_ACTIVE)
				b = NULL; /* table not rebuilt yet: fall back */
		}
	}
	if (!b) {
		id = kld_lb4_slot_backend(key, kld_lb4_pick_slot(svc));
		if (!id)
			return KLD_LB_MISS;
		b = kld_lb4_backend(id);
		if (!b)
			return KLD_LB_MISS;
	}

	if (affinity) {
		struct lb4_affinity_value nv = { .last_used_ns = now, .backend_id = id };

		bpf_map_update_elem(&kld_lb4_affin, &akey, &nv, BPF_ANY);
	}
	*backend_id = id;
	*be = b;
	return KLD_LB_OK;
}

#endif /* KLDNET_LB_H */
