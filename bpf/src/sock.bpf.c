// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Socket-level service LB: cgroup sock_addr entry points (see sock_lb.h). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "kldnet/sock_lb.h"

#define AF_INET_KLD 2

static __always_inline int kld_sock4_fwd_ctx(struct bpf_sock_addr *ctx)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	int rc = kld_sock4_fwd(ctx, &addr, &port);

	if (addr != ctx->user_ip4 || port != (__be16)ctx->user_port) {
		ctx->user_ip4 = addr;
		ctx->user_port = (__u32)port;
	}
	return rc;
}

static __always_inline int kld_sock4_rev_ctx(struct bpf_sock_addr *ctx)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;

	if (kld_sock4_rev(ctx, &addr, &port)) {
		ctx->user_ip4 = addr;
		ctx->user_port = (__u32)port;
	}
	return KLD_SOCK_PASS;
}

/* The v6 twins: only v4-mapped destinations (::ffff:VIP) are services. */
static __always_inline int kld_sock6_fwd_ctx(struct bpf_sock_addr *ctx)
{
	__be32 addr;
	__be16 port;
	int rc;

	if (!kld_sock6_v4_mapped(ctx))
		return KLD_SOCK_PASS;
	addr = ctx->user_ip6[3];
	port = (__be16)ctx->user_port;
	rc = kld_sock4_fwd(ctx, &addr, &port);
	if (addr != ctx->user_ip6[3] || port != (__be16)ctx->user_port) {
		ctx->user_ip6[3] = addr;
		ctx->user_port = (__u32)port;
	}
	return rc;
}

static __always_inline int kld_sock6_rev_ctx(struct bpf_sock_addr *ctx)
{
	__be32 addr;
	__be16 port;

	if (!kld_sock6_v4_mapped(ctx))
		return KLD_SOCK_PASS;
	addr = ctx->user_ip6[3];
	port = (__be16)ctx->user_port;
	if (kld_sock4_rev(ctx, &addr, &port)) {
		ctx->user_ip6[3] = addr;
		ctx->user_port = (__u32)port;
	}
	return KLD_SOCK_PASS;
}

SEC("cgroup/connect4")
int kld_sock4_connect(struct bpf_sock_addr *ctx)
{
	return kld_sock4_fwd_ctx(ctx);
}

SEC("cgroup/sendmsg4")
int kld_sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return kld_sock4_fwd_ctx(ctx);
}

SEC("cgroup/recvmsg4")
int kld_sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	return kld_sock4_rev_ctx(ctx);
}

SEC("cgroup/getpeername4")
int kld_sock4_getpeer(struct bpf_sock_addr *ctx)
{
	return kld_sock4_rev_ctx(ctx);
}

SEC("cgroup/connect6")
int kld_sock6_connect(struct bpf_sock_addr *ctx)
{
	return kld_sock6_fwd_ctx(ctx);
}

SEC("cgroup/sendmsg6")
int kld_sock6_sendmsg(struct bpf_sock_addr *ctx)
{
	return kld_sock6_fwd_ctx(ctx);
}

SEC("cgroup/recvmsg6")
int kld_sock6_recvmsg(struct bpf_sock_addr *ctx)
{
	return kld_sock6_rev_ctx(ctx);
}

SEC("cgroup/getpeername6")
int kld_sock6_getpeer(struct bpf_sock_addr *ctx)
{
	return kld_sock6_rev_ctx(ctx);
}

/* Host processes must not bind a service's address and port (as Cilium's post_bind
 * hook): the frontend would silently shadow or be shadowed by the process. A wildcard
 * bind is checked against the NodePort frontends on 127.0.0.1, which every NodePort
 * service has. Returning 0 fails bind() with EPERM. */
SEC("cgroup/post_bind4")
int kld_sock4_postbind(struct bpf_sock *ctx)
{
	struct lb4_key key = {};
	__be32 addr = ctx->src_ip4;
	__u8 proto = ctx->protocol;

	if (ctx->family != AF_INET_KLD || (proto != IPPROTO_TCP && proto != IPPROTO_UDP))
		return 1;
	if (addr == 0)
		addr = bpf_htonl(0x7f000001);
	if (kld_lb4_service(&key, addr, bpf_htons((__u16)ctx->src_port), proto))
		return 0;
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
