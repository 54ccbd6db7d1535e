/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The raw_syscalls tracepoints, one hook for every syscall: what each of udptrace's
 * objects reads there. One pair of links instead of one per syscall: a syscall
 * tracepoint's perf link took 35-130 ms to detach (a grace period each), a tp_btf
 * link 0.1 ms.
 *
 * Each hook is written once as `on_enter(nr, ARG)` / `on_exit(nr, ret)` and wrapped
 * by UT_RAW_SYSCALL_HOOKS as tp_btf, raw_tp and tracepoint; user space autoloads the
 * first this kernel allows. on_enter is a macro: ARG(i) reads the syscall's argument i
 * where it is used, so a hook reads only the arguments of the syscalls it wants.
 */
#ifndef UT_RAW_SYSCALLS_BPF_H
#define UT_RAW_SYSCALLS_BPF_H

#include "ut_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define UT_SYSCALL_ARGS 6

/* raw_syscalls tracepoint records: stable ABI since the tracepoints exist */
struct ut_raw_sys_enter {
	__u64 common;
	long id;
	unsigned long args[UT_SYSCALL_ARGS];
};

struct ut_raw_sys_exit {
	__u64 common;
	long id;
	long ret;
};

/* Where the syscall ABI keeps argument i and the number (tp_btf and raw_tp hand pt_regs) */
#ifdef __TARGET_ARCH_x86
#define UT_SYSCALL_REGS 1

static __always_inline __u64 regs_arg(struct pt_regs *regs, int i)
{
	switch (i) {
	case 0: return BPF_CORE_READ(regs, di);
	case 1: return BPF_CORE_READ(regs, si);
	case 2: return BPF_CORE_READ(regs, dx);
	case 3: return BPF_CORE_READ(regs, r10); /* the syscall ABI's fourth register, not cx */
	case 4: return BPF_CORE_READ(regs, r8);
	default: return BPF_CORE_READ(regs, r9);
	}
}

static __always_inline long regs_nr(struct pt_regs *regs)
{
	return BPF_CORE_READ(regs, orig_ax);
}

/* tp_btf hands a typed pointer: plain loads, not a probe read each (45 ns here) */
#define UT_BTF_ARG(i)                                                                  \
	((i) == 0 ? regs->di : (i) == 1 ? regs->si : (i) == 2 ? regs->dx :             \
	 (i) == 3 ? regs->r10 : (i) == 4 ? regs->r8 : regs->r9)
#define UT_BTF_NR(regs) ((regs)->orig_ax)
#elif defined(__TARGET_ARCH_arm64)
#define UT_SYSCALL_REGS 1

static __always_inline __u64 regs_arg(struct pt_regs *regs, int i)
{
	return BPF_CORE_READ(regs, regs[i]);
}

static __always_inline long regs_nr(struct pt_regs *regs)
{
	return BPF_CORE_READ(regs, syscallno);
}

#define UT_BTF_ARG(i) (regs->regs[i])
#define UT_BTF_NR(regs) ((regs)->syscallno)
#endif

#ifdef UT_SYSCALL_REGS
#define UT_RAW_SYSCALL_REGS_HOOKS(prefix, on_enter, on_exit)                          \
	SEC("tp_btf/sys_enter")                                                            \
	int BPF_PROG(prefix##_btf_enter, struct pt_regs *regs, long id)                    \
	{                                                                                  \
		return on_enter(id, UT_BTF_ARG);                                           \
	}                                                                                  \
	SEC("raw_tp/sys_enter")                                                            \
	int BPF_PROG(prefix##_raw_enter, struct pt_regs *regs, long id)                    \
	{                                                                                  \
		return on_enter(id, UT_REGS_ARG);                                          \
	}                                                                                  \
	SEC("tp_btf/sys_exit")                                                             \
	int BPF_PROG(prefix##_btf_exit, struct pt_regs *regs, long ret)                    \
	{                                                                                  \
		return on_exit(UT_BTF_NR(regs), ret);                                      \
	}                                                                                  \
	SEC("raw_tp/sys_exit")                                                             \
	int BPF_PROG(prefix##_raw_exit, struct pt_regs *regs, long ret)                    \
	{                                                                                  \
		return on_exit(regs_nr(regs), ret);                                        \
	}
#else
#define UT_RAW_SYSCALL_REGS_HOOKS(prefix, on_enter, on_exit)
#endif

/* The argument readers on_enter is handed: (i) → argument i, for each kind of hook */
#define UT_REGS_ARG(i) regs_arg(regs, i)
#define UT_TP_ARG(i) (__u64)ctx->args[i]

#define UT_RAW_SYSCALL_HOOKS(prefix, on_enter, on_exit)                               \
	UT_RAW_SYSCALL_REGS_HOOKS(prefix, on_enter, on_exit)                               \
	SEC("tracepoint/raw_syscalls/sys_enter")                                           \
	int prefix##_tp_enter(struct ut_raw_sys_enter *ctx)                                \
	{                                                                                  \
		return on_enter(ctx->id, UT_TP_ARG);                                       \
	}                                                                                  \
	SEC("tracepoint/raw_syscalls/sys_exit")                                            \
	int prefix##_tp_exit(struct ut_raw_sys_exit *ctx)                                  \
	{                                                                                  \
		return on_exit(ctx->id, ctx->ret);                                         \
	}

#endif /* UT_RAW_SYSCALLS_BPF_H */
