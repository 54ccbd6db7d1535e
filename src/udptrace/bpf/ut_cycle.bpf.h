/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * A cyclic sender's cycle, and the times the kernel itself keeps for a datagram.
 *
 * Wake-ups (--wakeup): a traced thread sleeps until its next period; the
 * expiry of the hrtimer it sleeps on, the scheduler's wakeup and the switch
 * that puts it on a CPU are its wake-up. Each thread keeps its latest complete
 * one; a send carries the last one completed before the send's first stage
 * (the callback's entry with --uprobe, else the syscall's entry), so a wake-up
 * inside the syscall (a blocked send) never reorders the record's stages.
 *
 * Launch times: SO_TXTIME puts a datagram's launch time in skb->tstamp; the
 * record keeps it with its clock, and user space relates it to the stages.
 *
 * Kernel TX timestamps (SO_TIMESTAMPING): the driver's skb_tx_timestamp (or a
 * NIC's completion) clones the skb, stamps the clone and queues it on the
 * socket's error queue; sock:inet_sk_error_report then fires on that CPU
 * while the original is still in our hands, and the clone shares its data
 * buffer, so the buffer's address ties the two.
 */
#ifndef UT_CYCLE_BPF_H
#define UT_CYCLE_BPF_H

#include "ut_common.bpf.h"

#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
#define CLOCK_TAI 11
#define SO_EE_ORIGIN_TIMESTAMPING 4
#define SCM_TSTAMP_SND 0           /* the driver's (or the NIC's) transmit timestamp */
/* a stamp is taken within microseconds of its report; older, it was some other packet's */
#define TX_TSTAMP_WINDOW_NS 1000000ULL

struct ut_wake {
	__u64 timer;               /* the sleeper's hrtimer expired; 0: woken by something else */
	__u64 expires;             /* that timer's requested expiry, CLOCK_MONOTONIC */
	__u64 wakeup;
	__u64 on_cpu;
};

struct ut_thread_wake {
	struct ut_wake pending;    /* under way: the timer and the wakeup, not yet on a CPU */
	struct ut_wake done;       /* the latest complete wake-up */
	struct ut_wake send;       /* the one before the current send's first stage */
};

/* The threads whose wake-ups are followed: sched_switch looks here for every switch. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);        /* tid */
	__type(value, struct ut_thread_wake);
} wake_threads SEC(".maps");

static __always_inline struct ut_thread_wake *wake_entry(__u32 tid, bool create)
{
	struct ut_thread_wake *w = bpf_map_lookup_elem(&wake_threads, &tid);

	if (!w && create) {
		struct ut_thread_wake fresh = {};

		bpf_map_update_elem(&wake_threads, &tid, &fresh, BPF_NOEXIST);
		w = bpf_map_lookup_elem(&wake_threads, &tid);
	}
	return w;
}

/* -p/-c select threads by their process; otherwise (--uprobe alone) a thread is followed
 * once it entered the callback. Either way an untraced task costs one map lookup. */
static __always_inline bool wake_filtered(void)
{
	return cfg.filter_pid || cfg.comm[0];
}

static __always_inline struct ut_thread_wake *wake_thread(struct task_struct *task)
{
	__u32 tid = BPF_CORE_READ(task, pid);

	if (!wake_filtered())
		return bpf_map_lookup_elem(&wake_threads, &tid);
	if (cfg.filter_pid) {
		__u32 tgid = BPF_CORE_READ(task, tgid);

		if (!bpf_map_lookup_elem(&pids, &tgid))
			return 0;
	}
	if (cfg.comm[0]) {
		char comm[16];

		BPF_CORE_READ_INTO(&comm, task, comm);
		if (!same_name16(comm, cfg.comm))
			return 0;
	}
	return wake_entry(tid, true);
}

static __always_inline bool task_running(struct task_struct *task)
{
	if (bpf_core_field_exists(task->__state))
		return BPF_CORE_READ(task, __state) == 0;
	return BPF_CORE_READ((struct task_struct___old *)task, state) == 0;
}

static __always_inline int on_timer_expire(struct hrtimer *timer)
{
	struct task_struct *task;
	struct ut_thread_wake *w;

	if (!cfg.hrtimer_wakeup || (__u64)BPF_CORE_READ(timer, function) != cfg.hrtimer_wakeup)
		return 0;
	task = BPF_CORE_READ((struct hrtimer_sleeper *)timer, task);
	/* a task already running (woken otherwise) is not woken by this expiry */
	if (!task || task_running(task))
		return 0;
	w = wake_thread(task);
	if (!w)
		return 0;
	w->pending.timer = bpf_ktime_get_ns();
	/* the timer's clock (realtime, TAI) minus this offset is CLOCK_MONOTONIC */
	w->pending.expires = BPF_CORE_READ(timer, _softexpires) - BPF_CORE_READ(timer, base, offset);
	return 0;
}

static __always_inline void wake_complete(struct ut_thread_wake *w, __u64 now)
{
	bool by_timer = w->pending.timer && w->pending.timer <= w->pending.wakeup;

	w->done.timer = by_timer ? w->pending.timer : 0;
	w->done.expires = by_timer ? w->pending.expires : 0;
	w->done.wakeup = w->pending.wakeup;
	w->done.on_cpu = now;
	__builtin_memset(&w->pending, 0, sizeof(w->pending));
}

static __always_inline int on_sched_wakeup(struct task_struct *task)
{
	struct ut_thread_wake *w = wake_thread(task);
	__u64 now;

	if (!w)
		return 0;
	now = bpf_ktime_get_ns();
	w->pending.wakeup = now;
	/* woken before it had left its CPU: it runs on, no switch will follow */
	if (BPF_CORE_READ(task, on_cpu))
		wake_complete(w, now);
	return 0;
}

static __always_inline int on_sched_switch(struct task_struct *next)
{
	struct ut_thread_wake *w = wake_thread(next);

	/* back on a CPU after a preemption is no wake-up */
	if (w && w->pending.wakeup)
		wake_complete(w, bpf_ktime_get_ns());
	return 0;
}

/* A send begins (its callback's entry, or its syscall's outside one): the thread's latest
 * wake-up is the send's. The callback's entry makes a thread followed under --uprobe alone. */
static __always_inline void wake_send_begins(__u32 tid, bool callback)
{
	struct ut_thread_wake *w = wake_entry(tid, callback && !wake_filtered());

	if (w)
		w->send = w->done;
}

static __always_inline void wake_describe(struct ut_record *r)
{
	struct ut_thread_wake *w = bpf_map_lookup_elem(&wake_threads, &r->tid);

	if (!w || !w->send.on_cpu)
		return;
	r->ts[UT_STAGE_TIMER] = w->send.timer;
	r->ts[UT_STAGE_WAKEUP] = w->send.wakeup;
	r->ts[UT_STAGE_ON_CPU] = w->send.on_cpu;
	r->timer_expires = w->send.expires;
}

/* The clock of an skb's launch time: the skb says so since 6.11; before, only TCP's
 * monotonic times were marked, and a datagram's is in its socket's SO_TXTIME clock. */
static __always_inline __s32 txtime_clock(struct sk_buff *skb)
{
	if (bpf_core_field_exists(skb->tstamp_type)) {
		__u32 type = BPF_CORE_READ_BITFIELD_PROBED(skb, tstamp_type);

		if (type == bpf_core_enum_value(enum skb_tstamp_type, SKB_CLOCK_MONOTONIC))
			return CLOCK_MONOTONIC;
		if (type == bpf_core_enum_value(enum skb_tstamp_type, SKB_CLOCK_TAI))
			return CLOCK_TAI;
		return CLOCK_REALTIME;
	}
	if (bpf_core_field_exists(skb->mono_delivery_time) &&
	    BPF_CORE_READ_BITFIELD_PROBED(skb, mono_delivery_time))
		return CLOCK_MONOTONIC;
	return BPF_CORE_READ(skb, sk, sk_clockid);
}

/* On the send path a local datagram's skb->tstamp is 0 unless SO_TXTIME set a launch time. */
static __always_inline void describe_txtime(struct sk_buff *skb, struct ut_record *r)
{
	__s64 launch = BPF_CORE_READ(skb, tstamp);

	if (launch <= 0)
		return;
	r->txtime = launch;
	r->txtime_clock = txtime_clock(skb);
}

/* The latest TX timestamp a socket got on this CPU, until the skb it belongs to takes it. */
struct ut_tx_tstamp {
	__u64 head;                /* the data buffer the stamped clone shares; 0: none */
	__u64 time;                /* when it was reported */
	__u64 sw;
	__u64 hw;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_tx_tstamp);
} tx_tstamps SEC(".maps");

static __always_inline int on_sk_error_report(struct sock *sk)
{
	struct sk_buff *clone = BPF_CORE_READ(sk, sk_error_queue.prev);
	struct sock_exterr_skb *serr;
	struct skb_shared_info *shinfo;
	struct ut_tx_tstamp *slot;
	unsigned char *head;
	__u32 zero = 0;

	if (!clone || (void *)clone == (void *)&sk->sk_error_queue)
		return 0;
	serr = (struct sock_exterr_skb *)&clone->cb;
	/* ICMP errors, zero-copy completions and SO_TXTIME errors come this way too */
	if (BPF_CORE_READ(serr, ee.ee_origin) != SO_EE_ORIGIN_TIMESTAMPING ||
	    BPF_CORE_READ(serr, ee.ee_info) != SCM_TSTAMP_SND)
		return 0;
	slot = bpf_map_lookup_elem(&tx_tstamps, &zero);
	if (!slot)
		return 0;
	head = BPF_CORE_READ(clone, head);
	shinfo = (void *)(head + BPF_CORE_READ(clone, end));
	slot->head = (__u64)head;
	slot->time = bpf_ktime_get_ns();
	/* a NIC's stamp is in the shared info; a software one in the clone's tstamp (realtime) */
	slot->hw = BPF_CORE_READ(shinfo, hwtstamps.hwtstamp);
	slot->sw = slot->hw ? 0 : BPF_CORE_READ(clone, tstamp);
	return 0;
}

/* Where a packet's driver call returns, or a NIC completes it: its stamp, if one was taken. */
static __always_inline void take_tx_tstamp(struct sk_buff *skb, struct ut_record *r, __u64 now)
{
	__u32 zero = 0;
	struct ut_tx_tstamp *slot = bpf_map_lookup_elem(&tx_tstamps, &zero);

	if (!slot || !slot->head || slot->head != (__u64)BPF_CORE_READ(skb, head) ||
	    now - slot->time > TX_TSTAMP_WINDOW_NS)
		return;
	if (slot->sw)
		r->tstamp_sw = slot->sw;
	if (slot->hw)
		r->tstamp_hw = slot->hw;
	slot->head = 0;
}

#endif /* UT_CYCLE_BPF_H */
