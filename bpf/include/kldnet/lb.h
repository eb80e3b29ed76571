// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level IPv4 service load balancing (cgroup sock_addr hooks):
 * connect()/sendmsg() to a service VIP are rewritten to one backend before
 * the kernel routes anything, so no per-packet NAT is needed for host
 * processes; recvmsg()/getpeername() translate the backend back to the VIP.
 */
#ifndef KLDNET_LB_H
#define KLDNET_LB_H

#include <linux/in.h>

#include "common.h"

#define KLD_SOCK_PASS 1   /* let the syscall proceed */
#define KLD_SOCK_REJECT 0 /* connect()/sendmsg() fail with EPERM */

/*
 * Forward translation for connect4/sendmsg4.
 *  - not a service: untouched;
 *  - service without active backends: rejected (the syscall returns EPERM,
 *    the closest a cgroup hook can get to Cilium's "no backend" drop);
 *  - otherwise a random active slot 1..count is picked and the socket's
 *    destination becomes that backend; the VIP is remembered per socket
 *    cookie in kld_sock_rnat for the reverse hooks.
 * A slot or backend missing mid-update leaves the address untouched.
 */
static __always_inline int kld_sock4_fwd(struct bpf_sock_addr *ctx)
{
	struct lb4_key key = {
		.address = ctx->user_ip4,
		.dport = (__be16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
		.scope = KLD_SCOPE_EXTERNAL,
		.backend_slot = 0,
	};
	struct sock_rnat_key rkey = {};
	struct sock_rnat_value rval = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	__u32 backend_id;
	__u16 count;

	svc = bpf_map_lookup_elem(&kld_lb4_svc, &key);
	if (!svc)
		return KLD_SOCK_PASS;
	count = svc->count;
	if (count == 0) {
		kld_count(KLD_CTR_SOCK_LB_NO_BE);
		return KLD_SOCK_REJECT;
	}
	rval.address = key.address;
	rval.port = key.dport;
	rval.rev_nat_index = svc->rev_nat_index;

	key.backend_slot = (__u16)(bpf_get_prandom_u32() % count) + 1;
	svc = bpf_map_lookup_elem(&kld_lb4_svc, &key);
	if (!svc) {
		kld_count(KLD_CTR_SOCK_LB_MISS);
		return KLD_SOCK_PASS;
	}
	backend_id = svc->backend_id;
	be = bpf_map_lookup_elem(&kld_lb4_be, &backend_id);
	if (!be) {
		kld_count(KLD_CTR_SOCK_LB_MISS);
		return KLD_SOCK_PASS;
	}

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = be->address;
	rkey.port = be->port;
	if (bpf_map_update_elem(&kld_sock_rnat, &rkey, &rval, BPF_ANY))
		kld_count(KLD_CTR_SOCK_RNAT_FAIL);

	ctx->user_ip4 = be->address;
	ctx->user_port = (__u32)be->port;
	return KLD_SOCK_PASS;
}

/*
 * Reverse translation for recvmsg4/getpeername4: a peer address that this
 * socket reached through a service is shown as the service VIP:port. If
 * the service is gone the mapping is dropped and the backend shows through.
 */
static __always_inline int kld_sock4_rev(struct bpf_sock_addr *ctx)
{
	struct sock_rnat_key rkey = {};
	struct sock_rnat_value *rval;
	struct lb4_key key = {};

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = ctx->user_ip4;
	rkey.port = (__be16)ctx->user_port;
	rval = bpf_map_lookup_elem(&kld_sock_rnat, &rkey);
	if (!rval)
		return KLD_SOCK_PASS;

	key.address = rval->address;
	key.dport = rval->port;
	key.proto = (__u8)ctx->protocol;
	key.scope = KLD_SCOPE_EXTERNAL;
	if (!bpf_map_lookup_elem(&kld_lb4_svc, &key)) {
		bpf_map_delete_elem(&kld_sock_rnat, &rkey);
		return KLD_SOCK_PASS;
	}
	ctx->user_ip4 = rval->address;
	ctx->user_port = (__u32)rval->port;
	return KLD_SOCK_PASS;
}

#endif /* KLDNET_LB_H */
