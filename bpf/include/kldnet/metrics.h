// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Per-CPU packet/byte counters by {reason, direction}. */
#ifndef KLDNET_METRICS_H
#define KLDNET_METRICS_H

#include "common.h"

static __always_inline void kld_metrics_add(__u8 reason, __u8 direction, __u32 len)
{
	struct metrics_key key = { .reason = reason, .direction = direction };
	struct metrics_value init = { .packets = 1, .bytes = len };
	struct metrics_value *v;

	v = bpf_map_lookup_elem(&kld_metrics, &key);
	if (v) {
		v->packets += 1;
		v->bytes += len;
		return;
	}
	/* First packet for this key on any CPU. If another CPU won the race,
	 * NOEXIST fails and the retried lookup finds its (zeroed-for-us) slot. */
	if (!bpf_map_update_elem(&kld_metrics, &key, &init, BPF_NOEXIST))
		return;
	v = bpf_map_lookup_elem(&kld_metrics, &key);
	if (v) {
		v->packets += 1;
		v->bytes += len;
		return;
	}
	kld_count(KLD_CTR_METRICS_FAIL);
}

#endif /* KLDNET_METRICS_H */
