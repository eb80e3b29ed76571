// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level IPv4 service load balancing (cgroup sock_addr hooks):
 * connect()/sendmsg() to a service VIP are rewritten to one backend before
 * the kernel routes anything, so no per-packet NAT is needed for host
 * processes; recvmsg()/getpeername() translate the backend back to the VIP.
 * The v6 hooks do the same for v4-mapped addresses of AF_INET6 sockets.
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
 * Forward translation for connect/sendmsg of the IPv4 address *addr:*port
 * (from an AF_INET socket, or the IPv4 part of a v4-mapped IPv6 address).
 *  - not a service: untouched;
 *  - service without active backends: refused (kld_sock4_refuse);
 *  - otherwise a backend is chosen (kld_lb4_select; Maglev hashes the socket
 *    cookie and the destination: a socket has no source port before
 *    connect(); affinity uses client 0, i.e. per node) and *addr:*port
 *    become that backend; the VIP is remembered per socket cookie in
 *    kld_sock_rnat for the reverse hooks.
 * A slot or backend missing mid-update leaves the address untouched.
 */
static __always_inline int kld_sock4_fwd(struct bpf_sock_addr *ctx, __be32 *addr, __be16 *port)
{
	struct lb4_key key;
	struct sock_rnat_key rkey = {};
	struct sock_rnat_value rval = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	__u32 backend_id = 0;
	__u64 cookie;
	__u32 hash;

	svc = kld_lb4_service(&key, *addr, *port, (__u8)ctx->protocol);
	if (!svc)
		return KLD_SOCK_PASS;
	if (svc->count == 0) {
		kld_count(KLD_CTR_SOCK_LB_NO_BE);
		return kld_sock4_refuse();
	}
	cookie = bpf_get_socket_cookie(ctx);
	hash = kld_jhash_3words((__u32)cookie, (__u32)(cookie >> 32) ^ *addr, *port, 0);
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

	*addr = be->address;
	*port = be->port;
	return KLD_SOCK_PASS;
}

/*
 * Reverse translation for recvmsg/getpeername: a peer *addr:*port that this
 * socket reached through a service is shown as the service VIP:port. If
 * the service is gone the mapping is dropped and the backend shows through.
 * Returns 1 when *addr:*port were rewritten.
 */
static __always_inline int kld_sock4_rev(struct bpf_sock_addr *ctx, __be32 *addr, __be16 *port)
{
	struct sock_rnat_key rkey = {};
	struct sock_rnat_value *rval;
	struct lb4_key key;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = *addr;
	rkey.port = *port;
	rval = bpf_map_lookup_elem(&kld_sock_rnat, &rkey);
	if (!rval)
		return 0;

	if (!kld_lb4_service(&key, rval->address, rval->port, (__u8)ctx->protocol)) {
		bpf_map_delete_elem(&kld_sock_rnat, &rkey);
		return 0;
	}
	*addr = rval->address;
	*port = rval->port;
	return 1;
}

/* Is the IPv6 address of an AF_INET6 socket's call a v4-mapped one
 * (::ffff:a.b.c.d)? Dual-stack programs (Java, Go's tcp6 sockets) reach IPv4
 * services that way; the v6 hooks give them the same socket LB. */
static __always_inline int kld_sock6_v4_mapped(const struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
	       ctx->user_ip6[2] == bpf_htonl(0x0000ffff);
}

#endif /* KLDNET_SOCK_LB_H */
