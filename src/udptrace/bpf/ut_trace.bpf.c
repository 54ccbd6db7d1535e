// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * udptrace's kernel side: one object, so every path shares the packet state.
 * Its parts, each including the layers it stands on, from the bottom up:
 */
#include "ut_common.bpf.h"    /* configuration, output (records, counters, histograms), filters */
#include "ut_cycle.bpf.h"     /* wake-ups, launch times, the kernel's TX timestamps */
#include "ut_interval.bpf.h"  /* the time between successive sends of a flow */
#include "ut_context.bpf.h"   /* softirqs: the context a packet's steps run in */
#include "ut_packet.bpf.h"    /* the packets followed: per-CPU slot, shared map, held records */
#include "ut_syscall.bpf.h"   /* send syscalls: the per-thread state packets are tied to */
#include "ut_io_uring.bpf.h"  /* io_uring send requests, tied like syscalls */
#include "ut_app.bpf.h"       /* the application's callback (uprobes) */
#include "ut_recv.bpf.h"      /* the receive path, from the driver to the reader */
#include "ut_send.bpf.h"      /* the send path, from the syscall to the wire (into a receive path) */
#include "ut_functions.bpf.h" /* finer send stages at kernel functions (fentry, kprobe) */
#include "ut_recv_functions.bpf.h" /* finer receive stages at kernel functions */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Tracepoints, each wired to the paths that use it. Every program exists as
 * tp_btf and as raw_tp; user space autoloads the variant this kernel supports
 * and only the programs the chosen paths need.
 */
#define UT_HOOK(tp, name, args, call)                                       \
	SEC("tp_btf/" #tp) int BPF_PROG(ut_btf_##name, args) { return call; }   \
	SEC("raw_tp/" #tp) int BPF_PROG(ut_raw_##name, args) { return call; }

#define ARGS(...) __VA_ARGS__
#define RX_PATH (cfg.rx || cfg.e2e)

static __always_inline int on_netif_rx(struct sk_buff *skb)
{
	if (cfg.send)
		on_rx_handoff(skb, true);
	if (RX_PATH)
		on_rx_stage(skb, UT_STAGE_RX_DRIVER);
	return 0;
}

static __always_inline int on_netif_receive(struct sk_buff *skb)
{
	if (cfg.send)
		on_rx_handoff(skb, false);
	if (RX_PATH)
		on_rx_stage(skb, UT_STAGE_RX_STACK);
	return 0;
}

static __always_inline int on_skb_free(struct sk_buff *skb, __u32 reason, bool consumed)
{
	if (cfg.send)
		on_free(skb, reason, consumed);
	if (RX_PATH)
		on_rx_free(skb, reason, consumed);
	return 0;
}

/* A syscall's return: a send's (or an io_uring_enter's) ends it, a read's delivers its datagrams */
static __always_inline int on_syscall_exit(long nr, long ret)
{
	enum ut_syscall syscall = traced_syscall(nr);

	if (!syscall)
		return 0;
	if (syscall >= UT_SYS_RECVFROM)
		return RX_PATH ? rx_syscall_exit(syscall, ret) : 0;
	return cfg.send ? syscall_exit(ret) : 0;
}

UT_RAW_SYSCALL_HOOKS(ut_sys, send_syscall_enter, on_syscall_exit)
UT_HOOK(neigh_event_send_done, neigh_queue, ARGS(struct neighbour *n, int rc),
	on_neigh_queued(n, rc))
UT_HOOK(neigh_create, neigh_create,
	ARGS(struct neigh_table *tbl, struct net_device *dev, const void *pkey,
	     struct neighbour *n, bool exempt_from_gc), on_neigh_create(n))
UT_HOOK(neigh_update, neigh_update,
	ARGS(struct neighbour *n, const __u8 *lladdr, __u8 state, __u32 flags, __u32 pid),
	on_neigh_update(n))
UT_HOOK(net_dev_queue, dev_queue, ARGS(struct sk_buff *skb), on_dev_queue(skb))
UT_HOOK(qdisc_enqueue, qdisc_enq,
	ARGS(struct Qdisc *q, const struct netdev_queue *txq, struct sk_buff *skb),
	on_qdisc_enqueue(skb))
UT_HOOK(qdisc_dequeue, qdisc_deq,
	ARGS(struct Qdisc *q, const struct netdev_queue *txq, int n, struct sk_buff *skb),
	on_stage(skb, UT_STAGE_QDISC_DEQUEUE))
UT_HOOK(net_dev_start_xmit, xmit_start, ARGS(struct sk_buff *skb), on_xmit_start(skb))
UT_HOOK(net_dev_xmit, xmit_done, ARGS(struct sk_buff *skb, int rc), on_xmit_done(skb, rc))
UT_HOOK(napi_gro_receive_entry, napi_rx, ARGS(struct sk_buff *skb),
	(on_rx_stage(skb, UT_STAGE_RX_DRIVER), 0))
UT_HOOK(netif_rx, netif_rx, ARGS(struct sk_buff *skb), on_netif_rx(skb))
UT_HOOK(netif_receive_skb, netif_recv, ARGS(struct sk_buff *skb), on_netif_receive(skb))
UT_HOOK(sk_data_ready, sock_queue, ARGS(struct sock *sk), (on_sock_queue(sk), 0))
UT_HOOK(sock_recv_length, sock_read, ARGS(struct sock *sk, int ret, int flags),
	(on_sock_read(sk, ret, flags), 0))
UT_HOOK(hrtimer_expire_entry, timer_expire, ARGS(struct hrtimer *timer, __s64 *now),
	on_timer_expire(timer))
UT_HOOK(sched_wakeup, sched_wakeup, ARGS(struct task_struct *p), on_sched_wakeup(p))
UT_HOOK(sched_switch, sched_switch,
	ARGS(bool preempt, struct task_struct *prev, struct task_struct *next),
	on_sched_switch(next))
UT_HOOK(inet_sk_error_report, sk_error_report, ARGS(struct sock *sk), on_sk_error_report(sk))
UT_HOOK(consume_skb, consume, ARGS(struct sk_buff *skb), on_skb_free(skb, 0, true))
UT_HOOK(kfree_skb, kfree, ARGS(struct sk_buff *skb, void *location),
	on_skb_free(skb, cfg.kfree_has_reason ? (__u32)ctx[2] : 0, false))
UT_HOOK(softirq_raise, softirq_raise, unsigned int vec, on_softirq_raise(vec))
UT_HOOK(softirq_entry, softirq_entry, unsigned int vec, on_softirq_entry(vec))
UT_HOOK(softirq_exit, softirq_exit, unsigned int vec, on_softirq_exit(vec))
