// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level IPv4 service load balancing (cgroup sock_addr hooks):
 * connect()/sendmsg() to a service VIP are rewritten to one backend before
 * the kernel routes anything, so no per-packet NAT is needed for host
 * processes; recvmsg()/getpeername() translate the backend back to the VIP.
 */
#ifndef KLDNET_SOCK_LB_H
#define KLDNET_SOCK_LB_H

#include <linux/errno.h>
#include <linux/in.h>

#include "common.h"
#include "lb.h"

#define KLD_SOCK_PASS 1   /* let the syscall proceed */
#define KLD_SOCK_REJECT 0 /* connect()/sendmsg() fail (EPERM unless retval set) */

/*
 * Refuse the syscall. With KLD_SOCK_ECONNREFUSED the error is ECONNREFUSED,
 * what a client expects from a port nobody listens on (kube-proxy REJECTs
 * with icmp-port-unreachable); bpf_set_retval() exists for cgroup programs
 * since Linux 5.18 (commit b44123b4a3dc), otherwise the kernel reports EPERM.
 */
static __always_inline int kld_sock4_refuse(void)
{
	if (KLD_SOCK_ECONNREFUSED)
		bpf_set_retval(-ECONNREFUSED);
	return KLD_SOCK_REJECT;
}

/*
 * Forward translation for connect4/sendmsg4.
 *  - not a service: untouched;
 *  - service without active backends: refused (kld_sock4_refuse);
 *  - otherwise a backend is chosen (kld_lb4_select; Maglev hashes the socket
 *    cookie and the destination: a socket has no source port before
 *    connect(); affinity uses client 0, i.e. per node) and the socket's
 *    destination becomes that backend; the VIP is remembered per socket
 *    cookie in kld_sock_rnat for the reverse hooks.
 * A slot or backend missing mid-update leaves the address untouched.
 */
static __always_inline int kld_sock4_fwd(struct bpf_sock_addr *ctx)
{
	struct lb4_key key;
	struct sock_rnat_key rkey = {};
	struct sock_rnat_value rval = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	__u32 backend_id = 0;
	__u64 cookie;
	__u32 hash;

	svc = kld_lb4_service(&key, ctx->user_ip4, (__be16)ctx->user_port, (__u8)ctx->protocol);
	if (!svc)
		return KLD_SOCK_PASS;
	if (svc->count == 0) {
		kld_count(KLD_CTR_SOCK_LB_NO_BE);
		return kld_sock4_refuse();
	}
	cookie = bpf_get_socket_cookie(ctx);
	hash = kld_jhash_3words((__u32)cookie, (__u32)(cookie >> 32) ^ ctx->user_ip4,
				ctx->user_port, 0);
	switch (kld_lb4_select(&key, svc, 0, hash, bpf_ktime_get_ns(), &backend_id, &be)) {
	case KLD_LB_OK:
		break;
	case KLD_LB_NO_BACKEND:
		kld_count(KLD_CTR_SOCK_LB_NO_BE);
		return kld_sock4_refuse();
	default:
		kld_count(KLD_CTR_SOCK_LB_MISS);
		return KLD_SOCK_PASS;
	}

	rval.address = key.address;
	rval.port = key.dport;
	rval.rev_nat_index = svc->rev_nat_index;
	rkey.cookie = cookie;
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
	struct lb4_key key;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = ctx->user_ip4;
	rkey.port = (__be16)ctx->user_port;
	rval = bpf_map_lookup_elem(&kld_sock_rnat, &rkey);
	if (!rval)
		return KLD_SOCK_PASS;

	if (!kld_lb4_service(&key, rval->address, rval->port, (__u8)ctx->protocol)) {
		bpf_map_delete_elem(&kld_sock_rnat, &rkey);
		return KLD_SOCK_PASS;
	}
	ctx->user_ip4 = rval->address;
	ctx->user_port = (__u32)rval->port;
	return KLD_SOCK_PASS;
}

#endif /* KLDNET_SOCK_LB_H */
