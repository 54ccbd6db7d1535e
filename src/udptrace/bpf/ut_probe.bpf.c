// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Feature probes: one tiny program per attach type. `udptrace check` loads
 * and attaches each alone, because only doing it proves the kernel allows
 * it (lockdown can refuse fentry or kprobes that the config says exist).
 * The tracepoint probe also counts its hits, so a test can see real events.
 */
#include "ut_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_ring SEC(".maps");

static __always_inline int hit(void)
{
	__u32 zero = 0;
	__u64 *n;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	n = bpf_map_lookup_elem(&hits, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int ut_probe_tp(void *ctx) { return hit(); }

SEC("raw_tp/sys_enter")
int ut_probe_raw_tp(void *ctx) { return hit(); }

SEC("tp_btf/sys_enter")
int BPF_PROG(ut_probe_tp_btf, void *regs, long id) { return hit(); }

SEC("fentry/__sys_sendto")
int BPF_PROG(ut_probe_fentry) { return hit(); }

SEC("kprobe/__sys_sendto")
int ut_probe_kprobe(void *ctx) { return hit(); }

SEC("uprobe")
int ut_probe_uprobe(void *ctx) { return hit(); }

SEC("tracepoint/syscalls/sys_enter_getppid")
int ut_probe_ringbuf(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (tgid == target_tgid)
		bpf_ringbuf_output(&probe_ring, &tgid, sizeof(tgid), 0);
	return 0;
}
