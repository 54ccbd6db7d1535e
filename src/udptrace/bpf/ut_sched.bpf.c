// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * What the CPUs did while traced packets waited: scheduler switches and
 * softirq/hardirq entry and exit, one record each through a ring buffer.
 * Only on the CPUs user space marks in `watched` (those that sent traced
 * packets), so an idle or unrelated CPU costs one array lookup per event.
 * A separate object from the send path: `udptrace record --sched` loads it
 * beside ut_send, and nothing else pays for it.
 */
#include "ut_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

enum ut_sched_kind {
	UT_SCHED_SWITCH = 1,       /* pid, comm: the task switched in; prev_pid: the one out */
	UT_SCHED_SOFTIRQ_ENTRY,    /* number: the softirq vector */
	UT_SCHED_SOFTIRQ_EXIT,
	UT_SCHED_IRQ_ENTRY,        /* number: the irq; comm: its handler's name */
	UT_SCHED_IRQ_EXIT,
};

struct ut_sched_event {
	__u64 ts;                  /* CLOCK_MONOTONIC ns, the clock of the packet records */
	enum ut_sched_kind kind;
	__u32 cpu;
	__u32 pid;                 /* thread id */
	__u32 prev_pid;
	__u32 number;
	__u32 pad;
	char comm[16];
};

/* Never written: puts the record into the object's BTF, where user space reads its layout. */
const struct ut_sched_event *ut_sched_event_layout __attribute__((unused));

struct ut_sched_counters {
	__u64 events;
	__u64 lost;                /* events the ring buffer had no room for */
};

/* Only the fields read here; the ___ut flavour keeps them apart from ut_types.h's. */
struct task_struct___ut {
	int pid;
	char comm[16];
} __attribute__((preserve_access_index));

struct irqaction___ut {
	const char *name;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);    /* set to the number of possible CPUs before load */
	__type(key, __u32);
	__type(value, __u8);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} sched_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_sched_counters);
} sched_counters SEC(".maps");

static __always_inline struct ut_sched_event *begin(enum ut_sched_kind kind)
{
	__u32 cpu = bpf_get_smp_processor_id(), zero = 0;
	struct ut_sched_counters *c;
	struct ut_sched_event *e;
	__u8 *on = bpf_map_lookup_elem(&watched, &cpu);

	if (!on || !*on)
		return NULL;
	c = bpf_map_lookup_elem(&sched_counters, &zero);
	e = bpf_ringbuf_reserve(&sched_events, sizeof(*e), 0);
	if (!e) {
		if (c)
			c->lost++;
		return NULL;
	}
	if (c)
		c->events++;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	e->kind = kind;
	e->cpu = cpu;
	return e;
}

static __always_inline int on_switch(struct task_struct___ut *prev, struct task_struct___ut *next)
{
	struct ut_sched_event *e = begin(UT_SCHED_SWITCH);

	if (!e)
		return 0;
	e->pid = BPF_CORE_READ(next, pid);
	e->prev_pid = BPF_CORE_READ(prev, pid);
	BPF_CORE_READ_STR_INTO(&e->comm, next, comm);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

static __always_inline int on_softirq(enum ut_sched_kind kind, unsigned int vec)
{
	struct ut_sched_event *e = begin(kind);

	if (!e)
		return 0;
	e->number = vec;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

static __always_inline int on_irq(enum ut_sched_kind kind, int irq, struct irqaction___ut *action)
{
	struct ut_sched_event *e = begin(kind);

	if (!e)
		return 0;
	e->number = irq;
	if (kind == UT_SCHED_IRQ_ENTRY)
		bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), BPF_CORE_READ(action, name));
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

/* Each hook as tp_btf and as raw_tp; user space autoloads the variant this kernel allows. */
#define UT_HOOK(tp, args, call)                                            \
	SEC("tp_btf/" #tp) int BPF_PROG(ut_btf_##tp, args) { return call; }    \
	SEC("raw_tp/" #tp) int BPF_PROG(ut_raw_##tp, args) { return call; }

#define ARGS(...) __VA_ARGS__

/* (bool preempt, prev, next[, prev_state since 5.18]): the first three are enough */
UT_HOOK(sched_switch, ARGS(bool preempt, struct task_struct___ut *prev,
			   struct task_struct___ut *next),
	on_switch(prev, next))
UT_HOOK(softirq_entry, ARGS(unsigned int vec), on_softirq(UT_SCHED_SOFTIRQ_ENTRY, vec))
UT_HOOK(softirq_exit, ARGS(unsigned int vec), on_softirq(UT_SCHED_SOFTIRQ_EXIT, vec))
UT_HOOK(irq_handler_entry, ARGS(int irq, struct irqaction___ut *action),
	on_irq(UT_SCHED_IRQ_ENTRY, irq, action))
UT_HOOK(irq_handler_exit, ARGS(int irq, struct irqaction___ut *action),
	on_irq(UT_SCHED_IRQ_EXIT, irq, action))
