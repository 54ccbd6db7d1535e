/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Log-linear latency histograms (struct ut_hist in ut_record.h), shared by
 * every udptrace BPF object. report/distribution.py reads the buckets back
 * with the same bounds, so the two change together.
 */
#ifndef UT_HIST_BPF_H
#define UT_HIST_BPF_H

#include "ut_types.h"
#include <bpf/bpf_helpers.h>
#include "ut_record.h"

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFF) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	return r | (v >> 1);
}

/*
 * Log-linear bucket: exact below UT_HIST_SUB_BUCKETS ns, then that many steps per power of
 * two (each at most 1/UT_HIST_SUB_BUCKETS of its lower bound wide). A global function,
 * checked once by the verifier rather than at each call site with every state leading
 * there: inlined, the histograms were most of the instructions verified at load.
 */
__noinline int hist_put(struct ut_hist *h, __u64 value)
{
	/* 64-bit: with 32-bit ones clang bounds a zero-extended copy and indexes with another,
	 * and 6.1's verifier rejects the access (6.18 accepts it) */
	__u64 row, sub, lg;

	if (!h) /* a global function's pointer may be null, for the verifier */
		return 0;
	if (value < UT_HIST_SUB_BUCKETS) {
		row = 0;
		sub = value;
	} else {
		lg = log2_u64(value);
		row = lg - UT_HIST_SUB_BITS + 1;
		sub = (value >> (lg - UT_HIST_SUB_BITS)) & (UT_HIST_SUB_BUCKETS - 1);
	}
	if (row >= UT_HIST_ROWS)
		row = UT_HIST_ROWS - 1;
	h->buckets[row][sub & (UT_HIST_SUB_BUCKETS - 1)]++;
	if (!h->count || value < h->min)
		h->min = value;
	if (value > h->max)
		h->max = value;
	h->count++;
	h->sum += value;
	return 0;
}

#endif /* UT_HIST_BPF_H */
