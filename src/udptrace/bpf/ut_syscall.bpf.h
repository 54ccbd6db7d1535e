/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The send syscalls and the per-thread state that ties packets to them.
 */
#ifndef UT_SYSCALL_BPF_H
#define UT_SYSCALL_BPF_H

#include "ut_sock.bpf.h"

__u64 next_syscall_id = 0;

/* A call whose socket is not named by an fd this side can read (io_uring) */
#define UT_FD_ANY 0xffffffffU

/*
 * One entry per thread, rewritten in place by every send syscall (an insert and
 * a delete per syscall cost more than the rest of the syscall hooks together).
 */
struct ut_call {
	__u64 id;                  /* 0: no traced syscall in flight on this thread */
	__u64 entry;
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

static __always_inline bool process_wanted(__u32 tgid)
{
	if (cfg.filter_pid && !bpf_map_lookup_elem(&pids, &tgid))
		return false;
	if (cfg.comm[0]) {
		char comm[16];

		bpf_get_current_comm(comm, sizeof(comm));
		if (!same_name16(comm, cfg.comm))
			return false;
	}
	return true;
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
	call->id = __sync_fetch_and_add(&next_syscall_id, 1) + 1;
	call->entry = bpf_ktime_get_ns();
	call->fd = fd;
	call->syscall = syscall;
	call->packets = 0;
	if (cfg.wakeup && !call->app_depth)
		wake_send_begins((__u32)pid_tgid, false);
	return 0;
}

/* The syscall's own record, written straight into the ring buffer. */
static __always_inline void emit_syscall_record(struct ut_call *call, __u64 now, __s64 ret,
						__u64 pid_tgid)
{
	struct ut_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	if (!r) {
		COUNT(lost_syscalls);
		return;
	}
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
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

static __always_inline int syscall_exit(__s64 ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct ut_call *call = bpf_map_lookup_elem(&calls, &tid);
	__u64 now;

	if (!call || !call->id)
		return 0;
	if (call->packets) {
		now = bpf_ktime_get_ns();
		COUNT(syscalls);
		hist_add(SPAN_SLOT(UT_SPAN_SEND_SYSCALL), now - call->entry);
		if (cfg.stream)
			emit_syscall_record(call, now, ret, pid_tgid);
	}
	call->id = 0;
	return 0;
}

/* sys_enter_* / sys_exit_* tracepoint records: stable ABI since syscall tracepoints exist */
struct syscall_enter_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};

struct syscall_exit_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

/* A send syscall whose socket is its argument `fd` (0 for most, the output fd of splice). */
#define UT_SYSCALL_FD(name, id, fd)                                         \
	SEC("tracepoint/syscalls/sys_enter_" #name)                             \
	int ut_enter_##name(struct syscall_enter_ctx *ctx)                      \
	{                                                                       \
		return syscall_enter(id, ctx->args[fd]);                            \
	}                                                                       \
	SEC("tracepoint/syscalls/sys_exit_" #name)                              \
	int ut_exit_##name(struct syscall_exit_ctx *ctx)                        \
	{                                                                       \
		return syscall_exit(ctx->ret);                                      \
	}

#define UT_SYSCALL(name, id) UT_SYSCALL_FD(name, id, 0)

UT_SYSCALL(sendto, UT_SYS_SENDTO)
UT_SYSCALL(sendmsg, UT_SYS_SENDMSG)
UT_SYSCALL(sendmmsg, UT_SYS_SENDMMSG)
UT_SYSCALL(write, UT_SYS_WRITE)
UT_SYSCALL(writev, UT_SYS_WRITEV)
UT_SYSCALL(sendfile64, UT_SYS_SENDFILE)
UT_SYSCALL_FD(splice, UT_SYS_SPLICE, 2)

/* The syscall this skb belongs to, if it is being sent by a traced syscall right here. */
static __always_inline struct ut_call *owning_call(struct sk_buff *skb)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ut_call *call = bpf_map_lookup_elem(&calls, &tid);
	__u64 sk;

	if (!call || !call->id)
		return 0;
	sk = (__u64)BPF_CORE_READ(skb, sk);
	if (!sk)
		return 0;
	if (call->fd == UT_FD_ANY) /* an io_uring request: its fd may index fixed files */
		return call;
	if (sk == call->sk && call->fd == call->sk_fd)
		return call; /* the common case: the same socket as last time, no fd walk */
	call->sk = (__u64)ut_fd_sock(call->fd);
	call->sk_fd = call->fd;
	return sk == call->sk ? call : 0;
}

#endif /* UT_SYSCALL_BPF_H */
