/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Send intervals (--interval): the time between successive sends of a flow,
 * and between successive entries of the application's callback, aggregated
 * here so a cyclic publisher's period and jitter cost no records.
 */
#ifndef UT_INTERVAL_BPF_H
#define UT_INTERVAL_BPF_H

#include "ut_common.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ut_flow_key);
	__type(value, struct ut_interval);
} intervals SEC(".maps");

/* Empty flow state: too large for the BPF stack, so inserts copy this one. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_interval);
} blank_interval SEC(".maps");

/* The middle one of the warm-up intervals (ties broken by position). */
static __always_inline __u64 warmup_median(struct ut_interval *f)
{
	__u64 median = f->warmup[0];

#pragma unroll
	for (int i = 0; i < UT_INTERVAL_WARMUP; i++) {
		int below = 0;

#pragma unroll
		for (int j = 0; j < UT_INTERVAL_WARMUP; j++)
			below += f->warmup[j] < f->warmup[i] || (f->warmup[j] == f->warmup[i] && j < i);
		if (below == UT_INTERVAL_WARMUP / 2)
			median = f->warmup[i];
	}
	return median;
}

static __always_inline void deviation_add(struct ut_interval *f, __u64 interval)
{
	if (interval < f->reference)
		hist_put(&f->early, f->reference - interval);
	else
		hist_put(&f->late, interval - f->reference);
	if (interval > f->reference + f->reference / 2)
		f->missed++;
}

/* Count one send (or callback entry) of a flow at `now`; returns its interval, 0 for the first. */
static __always_inline __u64 interval_note(struct ut_flow_key *key, __u64 now)
{
	struct ut_interval *f = bpf_map_lookup_elem(&intervals, key);
	__u64 interval;
	__u32 zero = 0, warmed;

	if (!f) {
		struct ut_interval *blank = bpf_map_lookup_elem(&blank_interval, &zero);

		if (!blank)
			return 0;
		blank->last = now;
		bpf_get_current_comm(blank->comm, sizeof(blank->comm));
		bpf_map_update_elem(&intervals, key, blank, BPF_NOEXIST);
		return 0;
	}
	if (now <= f->last)
		return 0;
	interval = now - f->last;
	f->last = now;
	hist_put(&f->interval, interval);
	if (f->reference) {
		deviation_add(f, interval);
		return interval;
	}
	warmed = f->warmed;
	if (warmed < UT_INTERVAL_WARMUP) {
		f->warmup[warmed] = interval;
		f->warmed = ++warmed;
		if (warmed == UT_INTERVAL_WARMUP) {
			f->reference = warmup_median(f);
#pragma unroll
			for (int i = 0; i < UT_INTERVAL_WARMUP; i++)
				deviation_add(f, f->warmup[i]);
		}
	}
	return interval;
}

/* The flow's addresses, from its latest packet: what the report names it by. */
static __always_inline void interval_describe(struct ut_flow_key *key, struct ut_record *r)
{
	struct ut_interval *f = bpf_map_lookup_elem(&intervals, key);

	if (!f || f->dport)
		return;
	f->family = r->family;
	f->sport = r->sport;
	f->dport = r->dport;
	__builtin_memcpy(f->saddr, r->saddr, 16);
	__builtin_memcpy(f->daddr, r->daddr, 16);
}

#endif /* UT_INTERVAL_BPF_H */
