/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The context a packet's steps run in: was the driver called directly by the
 * sending thread, or from the NET_TX softirq after a qdisc held the packet
 * (and how long that softirq was pending), or from another softirq; and where
 * a NIC's TX completion freed it. softirq_entry/exit mark the softirq each CPU
 * is serving; softirq_raise notes when NET_TX was first asked for.
 *
 * A TX completion signalled in a hard interrupt is freed later from NET_TX
 * (dev_consume_skb_irq), so it shows as NET_TX. x86's per-CPU preempt count
 * would spare the exit hook, but reading it needs its address in kallsyms,
 * which kernels without CONFIG_KALLSYMS_ALL (this project's CI) do not give.
 *
 * On PREEMPT_RT a softirq runs in a thread (the interrupt thread that raised it,
 * the thread whose local_bh_enable() found it pending, or ksoftirqd/N), and that
 * thread can be preempted mid-softirq: so "serving" holds only for the thread
 * that entered it, and with cfg.threads each step also names its thread and the
 * scheduling (policy, RT priority) that decided when it ran.
 */
#ifndef UT_CONTEXT_BPF_H
#define UT_CONTEXT_BPF_H

#include "ut_common.bpf.h"

/* softirq vector numbers: fixed since 2.6, the softirq tracepoints report them */
#define TIMER_SOFTIRQ 1
#define NET_TX_SOFTIRQ 2
#define NET_RX_SOFTIRQ 3

struct ut_softirq_cpu {
	__u64 net_tx_raised;       /* first NET_TX raise not yet run; 0: none */
	__u64 net_tx_pending;      /* raise → entry of the NET_TX run in progress; 0: unknown */
	__u32 serving;             /* the softirq vector being run + 1; 0: none */
	__u32 serving_tid;         /* the thread running it (PREEMPT_RT may preempt it) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_softirq_cpu);
} softirq_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_contexts);
} contexts SEC(".maps");

/* cfg.threads: sent packets per (thread, step, context); user space names the thread */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ut_thread);
	__type(value, __u64);
} context_threads SEC(".maps");

static __always_inline struct ut_softirq_cpu *this_softirq_cpu(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&softirq_cpu, &zero);
}

static __always_inline int on_softirq_raise(unsigned int vec)
{
	struct ut_softirq_cpu *cpu;

	if (vec != NET_TX_SOFTIRQ)
		return 0;
	cpu = this_softirq_cpu();
	if (cpu && !cpu->net_tx_raised)
		cpu->net_tx_raised = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int on_softirq_entry(unsigned int vec)
{
	struct ut_softirq_cpu *cpu = this_softirq_cpu();

	if (!cpu)
		return 0;
	cpu->serving = vec + 1;
	cpu->serving_tid = (__u32)bpf_get_current_pid_tgid();
	if (vec == NET_TX_SOFTIRQ) {
		__u64 raised = cpu->net_tx_raised;

		cpu->net_tx_pending = raised ? bpf_ktime_get_ns() - raised : 0;
		cpu->net_tx_raised = 0;
	}
	return 0;
}

static __always_inline int on_softirq_exit(unsigned int vec)
{
	struct ut_softirq_cpu *cpu = this_softirq_cpu();

	if (cpu)
		cpu->serving = 0;
	return 0;
}

/* The running thread and its scheduling, where cfg.threads asks for them. */
static __always_inline void current_thread(struct ut_thread *thread)
{
	struct task_struct *task;

	if (!cfg.threads)
		return;
	task = (struct task_struct *)bpf_get_current_task();
	thread->tid = (__u32)bpf_get_current_pid_tgid();
	thread->policy = BPF_CORE_READ(task, policy);
	thread->rt_priority = BPF_CORE_READ(task, rt_priority);
}

/*
 * Where this CPU runs now, seen from a packet sent by thread `sender`; with
 * NET_TX, `pending` gets how long that softirq waited to run; `thread` gets the
 * thread running (cfg.threads).
 */
static __always_inline enum ut_context cpu_context(__u32 sender, __u64 *pending,
						   struct ut_thread *thread)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ut_softirq_cpu *cpu;

	if (!cfg.contexts)
		return UT_CTX_UNKNOWN;
	cpu = this_softirq_cpu();
	if (!cpu)
		return UT_CTX_UNKNOWN;
	current_thread(thread);
	/* a thread that preempted the one serving a softirq (PREEMPT_RT) is not in it */
	switch (cpu->serving_tid == tid ? cpu->serving : 0) {
	case 0:
		return tid == sender ? UT_CTX_SENDER : UT_CTX_TASK;
	case NET_TX_SOFTIRQ + 1:
		*pending = cpu->net_tx_pending;
		return UT_CTX_NET_TX;
	case NET_RX_SOFTIRQ + 1:
		return UT_CTX_NET_RX;
	case TIMER_SOFTIRQ + 1:
		return UT_CTX_TIMER;
	default:
		return UT_CTX_SOFTIRQ;
	}
}

static __always_inline void count_thread(struct ut_thread thread, __u8 step,
					 enum ut_context context)
{
	__u64 one = 1, *packets;

	if (!thread.tid)
		return;
	thread.step = step;
	thread.context = context;
	packets = bpf_map_lookup_elem(&context_threads, &thread);
	if (packets)
		__sync_fetch_and_add(packets, 1);
	else
		bpf_map_update_elem(&context_threads, &thread, &one, BPF_NOEXIST);
}

/* A packet that left: count the contexts of its driver call and its completion. */
static __always_inline void count_contexts(struct ut_record *r)
{
	__u32 zero = 0;
	struct ut_contexts *c;

	if (!cfg.contexts)
		return;
	c = bpf_map_lookup_elem(&contexts, &zero);
	if (!c)
		return;
	if (r->xmit_context < UT_CTX_COUNT)
		c->xmit[r->xmit_context]++;
	if (r->completion_context < UT_CTX_COUNT)
		c->completion[r->completion_context]++;
	if (r->xmit_context == UT_CTX_NET_TX && r->softirq_pending_ns)
		hist_put(&c->net_tx_pending, r->softirq_pending_ns);
	count_thread(r->xmit_thread, 0, r->xmit_context);
	count_thread(r->completion_thread, 1, r->completion_context);
}

#endif /* UT_CONTEXT_BPF_H */
