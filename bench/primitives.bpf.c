// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * What the steps of a udptrace hook cost on this kernel, one program per step,
 * each doing it REPEAT times on the getppid tracepoint (bench/primitives.py
 * calls getppid and reads every program's bpf_stats). A step's cost is its
 * program's run time less the empty one's, over REPEAT.
 */
#include "../src/udptrace/bpf/ut_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define REPEAT 8
#define BPF_MAP_TYPE_TASK_STORAGE 29
#define BPF_LOCAL_STORAGE_GET_F_CREATE 1

struct value {
	__u64 words[53];           /* the size of struct ut_record */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, __u32);
	__type(value, struct value);
} lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct value);
} percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct value);
} task_storage SEC(".maps");

volatile __u64 sink;

#define STEP(name) SEC("tracepoint/syscalls/sys_enter_getppid") int name(void *ctx)

STEP(ut_p_empty) { return 0; }

STEP(ut_p_clock)
{
	for (int i = 0; i < REPEAT; i++)
		sink += bpf_ktime_get_ns();
	return 0;
}

STEP(ut_p_pid_tgid)
{
	for (int i = 0; i < REPEAT; i++)
		sink += bpf_get_current_pid_tgid();
	return 0;
}

/* one 8-byte probe read of a kernel field */
STEP(ut_p_probe_read)
{
	struct task_struct *task = (void *)bpf_get_current_task();

	for (int i = 0; i < REPEAT; i++)
		sink += (__u64)BPF_CORE_READ(task, files);
	return 0;
}

/* the same field with a plain load through a typed pointer (and the helper that gives it) */
STEP(ut_p_typed_load)
{
	for (int i = 0; i < REPEAT; i++)
		sink += bpf_get_current_task_btf()->files != 0;
	return 0;
}

STEP(ut_p_hash_lookup)
{
	for (int i = 0; i < REPEAT; i++) {
		__u32 key = i & 1;
		__u64 *v = bpf_map_lookup_elem(&hash, &key);

		if (v)
			sink += *v;
	}
	return 0;
}

STEP(ut_p_lru_lookup)
{
	for (int i = 0; i < REPEAT; i++) {
		__u32 key = i & 1;
		struct value *v = bpf_map_lookup_elem(&lru, &key);

		if (v)
			sink += v->words[0];
	}
	return 0;
}

STEP(ut_p_task_storage)
{
	for (int i = 0; i < REPEAT; i++) {
		struct value *v = bpf_task_storage_get(&task_storage, bpf_get_current_task_btf(), 0,
						       BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (v)
			sink += v->words[0];
	}
	return 0;
}

STEP(ut_p_percpu_lookup)
{
	for (int i = 0; i < REPEAT; i++) {
		__u32 key = 0;
		struct value *v = bpf_map_lookup_elem(&percpu, &key);

		if (v)
			sink += v->words[i];
	}
	return 0;
}

STEP(ut_p_comm)
{
	char comm[16];

	for (int i = 0; i < REPEAT; i++) {
		bpf_get_current_comm(comm, sizeof(comm));
		sink += comm[i];
	}
	return 0;
}
