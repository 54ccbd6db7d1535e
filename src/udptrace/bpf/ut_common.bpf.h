/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What every part of the tracer shares: the configuration, the output maps
 * (records, counters, histograms, drops), the filters and small helpers.
 */
#ifndef UT_COMMON_BPF_H
#define UT_COMMON_BPF_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_UDP 17
#define IPV6_FRAGMENT 44
#define NETDEV_TX_OK 0
#define PACKET_LOOPBACK 5

const volatile struct ut_config cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UT_HIST_SLOTS);
	__type(key, __u32);
	__type(value, struct ut_hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ut_drop_key);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
} pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ut_lpm_key);
	__type(value, __u8);
} src_nets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ut_lpm_key);
	__type(value, __u8);
} dst_nets SEC(".maps");

static __always_inline struct ut_counters *counts(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&counters, &zero);
}

#define COUNT(field)                                   \
	do {                                               \
		struct ut_counters *c__ = counts();            \
		if (c__)                                       \
			c__->field++;                              \
	} while (0)

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

/* Log-linear bucket: exact below 8 ns, then 8 steps per power of two (<= 12.5% wide). */
static __always_inline void hist_put(struct ut_hist *h, __u64 value)
{
	__u64 row, sub, lg;

	if (value < UT_HIST_SUB_BUCKETS) {
		row = 0;
		sub = value;
	} else {
		lg = log2_u64(value);
		row = lg - 2;
		sub = (value >> (lg - 3)) & (UT_HIST_SUB_BUCKETS - 1);
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
}

/* Into the report's histogram `slot`: a stage, or UT_STAGE_COUNT + a span. */
static __always_inline void hist_add(__u32 slot, __u64 value)
{
	struct ut_hist *h = bpf_map_lookup_elem(&hists, &slot);

	if (h)
		hist_put(h, value);
}

#define SPAN_SLOT(span) (UT_STAGE_COUNT + (span))
/* enum ut_span appears in no field; this keeps it in the BTF that Python reads */
const enum ut_span *ut_span_in_btf __attribute__((unused));

static __always_inline bool same_name16(const char *a, const volatile char *b)
{
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (a[i] != b[i])
			return false;
		if (!a[i])
			return true;
	}
	return true;
}

static __always_inline bool addr_wanted(void *lpm, __u8 *addr)
{
	struct ut_lpm_key key = {.prefixlen = 128};

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(lpm, &key) != 0;
}

static __always_inline void count_drop(__u32 reason, enum ut_stage stage)
{
	struct ut_drop_key dk = {.reason = reason, .stage = stage};
	__u64 one = 1, *n = bpf_map_lookup_elem(&drops, &dk);

	if (n)
		(*n)++;
	else
		bpf_map_update_elem(&drops, &dk, &one, BPF_NOEXIST);
}

/*
 * A tracepoint hook, written once and wrapped twice, as tp_btf and raw_tp:
 * user space autoloads the variant this kernel supports.
 */
#define UT_HOOK(tp, name, args, call)                                       \
	SEC("tp_btf/" #tp) int BPF_PROG(ut_btf_##name, args) { return call; }   \
	SEC("raw_tp/" #tp) int BPF_PROG(ut_raw_##name, args) { return call; }

#define ARGS(...) __VA_ARGS__

#endif /* UT_COMMON_BPF_H */
