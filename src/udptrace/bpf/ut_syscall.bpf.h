/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The send syscalls and the per-thread state that ties packets to them.
 */
#ifndef UT_SYSCALL_BPF_H
#define UT_SYSCALL_BPF_H

#include "ut_common.bpf.h"
#include "ut_packet.bpf.h"
#include "ut_cycle.bpf.h"
#include "ut_sock.bpf.h"
#include "ut_raw_syscalls.bpf.h"

/*
 * Syscall ids: a counter per CPU, the CPU in the top 16 bits. One shared counter
 * moved its cache line between the CPUs at every send syscall.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} syscall_ids SEC(".maps");

static __always_inline __u64 new_syscall_id(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&syscall_ids, &zero);

	if (!n)
		return 0;
	return (__u64)bpf_get_smp_processor_id() << 48 | ++*n;
}

/* A call whose socket is not named by an fd this side can read (io_uring) */
#define UT_FD_ANY 0xffffffffU

/*
 * One entry per thread, rewritten in place by every send syscall (an insert and
 * a delete per syscall cost more than the rest of the syscall hooks together).
 */
#define UT_FUNCTION_STAGES (UT_STAGE_IP_OUTPUT - UT_STAGE_UDP_SENDMSG + 1)

struct ut_call {
	__u64 id;                  /* 0: no traced syscall in flight on this thread */
	__u64 entry;
	/*
	 * udp_sendmsg … ip_output (ut_functions.bpf.h) run before a packet is tied
	 * to the syscall: the latest datagram's times wait here for begin_packet
	 */
	__u64 function_ts[UT_FUNCTION_STAGES];
	__u64 output_skb;          /* the skb of function_ts' ip_output, the one it belongs to */
	__u64 sk;                  /* socket behind sk_fd, kept across syscalls */
	__u64 app;                 /* entry of the callback the thread is in; 0: none */
	__u32 app_depth;           /* the callback's nesting (recursion) on this thread */
	__u32 fd;
	__u32 sk_fd;
	enum ut_syscall syscall;
	__u16 packets;
	__u16 sport;               /* ports of the first fragment, for the others */
	__u16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, __u32);        /* tid */
	__type(value, struct ut_call);
} calls SEC(".maps");

/* This thread's entry, made on first use. */
static __always_inline struct ut_call *thread_call(__u32 tid)
{
	struct ut_call *call = bpf_map_lookup_elem(&calls, &tid);

	if (!call) {
		struct ut_call fresh = {};

		bpf_map_update_elem(&calls, &tid, &fresh, BPF_NOEXIST);
		call = bpf_map_lookup_elem(&calls, &tid);
	}
	return call;
}

/* This thread's state, if it has any. */
static __always_inline struct ut_call *current_call(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;

	if (!may_be_traced(pid_tgid))
		return 0;
	return bpf_map_lookup_elem(&calls, &tid);
}

/* The traced syscall in flight on this thread, or 0. */
static __always_inline struct ut_call *call_in_flight(void)
{
	struct ut_call *call = current_call();

	return call && call->id ? call : 0;
}

static __always_inline int syscall_enter(enum ut_syscall syscall, __u64 fd)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ut_call *call;

	if (!process_wanted(pid_tgid >> 32))
		return 0;
	call = thread_call((__u32)pid_tgid);
	if (!call)
		return 0;
	call->id = new_syscall_id();
	call->entry = bpf_ktime_get_ns();
	call->fd = fd;
	call->syscall = syscall;
	call->packets = 0;
	__builtin_memset(call->function_ts, 0, sizeof(call->function_ts));
	call->output_skb = 0;
	if (cfg.wakeup && !call->app_depth)
		wake_send_begins((__u32)pid_tgid, false);
	return 0;
}

/* Where a syscall's own record is put together: too large for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_record);
} syscall_scratch SEC(".maps");

/* The syscall's own record. */
static __always_inline void emit_syscall_record(struct ut_call *call, __u64 now, __s64 ret,
						__u64 pid_tgid)
{
	__u32 zero = 0;
	struct ut_record *r = bpf_map_lookup_elem(&syscall_scratch, &zero);

	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = UT_KIND_SYSCALL;
	r->ts[UT_STAGE_SYSCALL] = call->entry;
	r->ts[UT_STAGE_APP] = call->app;
	r->syscall_exit = now;
	r->syscall_ret = ret;
	r->syscall_id = call->id;
	r->syscall = call->syscall;
	r->packet_index = call->packets;
	r->pid = pid_tgid >> 32;
	r->tid = (__u32)pid_tgid;
	r->cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	if (!emit_record(r))
		COUNT(lost_syscalls);
}

static __always_inline int syscall_exit(__s64 ret)
{
	struct ut_call *call = call_in_flight();
	__u64 now;

	if (!call)
		return 0;
	if (call->packets) {
		now = bpf_ktime_get_ns();
		COUNT(syscalls);
		add_span(UT_SPAN_SEND_SYSCALL, call->entry, now);
		if (cfg.stream && !emit_held_at_exit(call->id, call->packets, now, ret))
			emit_syscall_record(call, now, ret, bpf_get_current_pid_tgid());
	}
	call->id = 0;
	return 0;
}

/*
 * Which traced syscall `nr` is (0: none). Every syscall passes the raw_syscalls
 * hooks; the numbers differ between architectures, so user space writes them.
 */
static __always_inline enum ut_syscall traced_syscall(long nr)
{
#pragma unroll
	for (int i = 1; i < UT_SYSCALLS; i++)
		if (nr == cfg.syscall_nr[i])
			return i;
	return 0;
}

/*
 * A send syscall's entry (on_enter of ut_raw_syscalls.bpf.h): its socket is its
 * argument 0, splice's is argument 2 (the output). io_uring_enter is not one: a
 * request's submission is its entry.
 */
#define send_syscall_enter(nr, ARG)                                                 \
	({                                                                          \
		enum ut_syscall s__ = cfg.send ? traced_syscall(nr) : 0;            \
		s__ && s__ < UT_SYS_IO_URING ?                                      \
			syscall_enter(s__, s__ == UT_SYS_SPLICE ? ARG(2) : ARG(0)) : 0; \
	})

/* Whether `sk` is the socket behind the syscall's fd. */
static __always_inline bool is_call_socket(struct ut_call *call, __u64 sk)
{
	if (!sk)
		return false;
	if (call->fd == UT_FD_ANY) /* an io_uring request: its fd may index fixed files */
		return true;
	if (sk == call->sk && call->fd == call->sk_fd)
		return true; /* the common case: the same socket as last time, no fd walk */
	call->sk = (__u64)ut_fd_sock(call->fd);
	call->sk_fd = call->fd;
	return sk == call->sk;
}

/* The syscall this socket's data belongs to, if a traced syscall sends it right here. */
static __always_inline struct ut_call *socket_call(struct sock *sk)
{
	struct ut_call *call = call_in_flight();

	return call && is_call_socket(call, (__u64)sk) ? call : 0;
}

/* The syscall this skb belongs to, if it is being sent by a traced syscall right here. */
static __always_inline struct ut_call *owning_call(struct sk_buff *skb)
{
	struct ut_call *call = call_in_flight();

	return call && is_call_socket(call, (__u64)UT_READ(skb, sk)) ? call : 0;
}

#endif /* UT_SYSCALL_BPF_H */
