// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Socket-level service LB: cgroup sock_addr entry points (see sock_lb.h). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "kldnet/sock_lb.h"

SEC("cgroup/connect4")
int kld_sock4_connect(struct bpf_sock_addr *ctx)
{
	return kld_sock4_fwd(ctx);
}

SEC("cgroup/sendmsg4")
int kld_sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return kld_sock4_fwd(ctx);
}

SEC("cgroup/recvmsg4")
int kld_sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	return kld_sock4_rev(ctx);
}

SEC("cgroup/getpeername4")
int kld_sock4_getpeer(struct bpf_sock_addr *ctx)
{
	return kld_sock4_rev(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
