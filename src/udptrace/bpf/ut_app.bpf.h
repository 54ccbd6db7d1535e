/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The application level (--uprobe): while a thread is inside the named
 * function, every datagram it sends carries the function's entry time as its
 * first stage, so a cycle reads callback → syscall → … → wire.
 */
#ifndef UT_APP_BPF_H
#define UT_APP_BPF_H

#include "ut_common.bpf.h"
#include "ut_syscall.bpf.h"
#include "ut_cycle.bpf.h"
#include "ut_interval.bpf.h"

SEC("uprobe")
int ut_app_entry(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid(), now;
	struct ut_call *call;

	if (!process_wanted(pid_tgid >> 32))
		return 0;
	call = thread_call((__u32)pid_tgid);
	if (!call || call->app_depth++)
		return 0; /* a recursive call stays inside the outermost one */
	now = bpf_ktime_get_ns();
	call->app = now;
	if (cfg.wakeup)
		wake_send_begins((__u32)pid_tgid, true);
	if (cfg.intervals) {
		struct ut_flow_key key = {.tgid = pid_tgid >> 32, .kind = UT_FLOW_APP};

		interval_note(&key, now);
	}
	return 0;
}

SEC("uretprobe")
int ut_app_return(void *ctx)
{
	struct ut_call *call = current_call();

	if (!call || !call->app_depth)
		return 0;
	if (!--call->app_depth)
		call->app = 0;
	return 0;
}

#endif /* UT_APP_BPF_H */
