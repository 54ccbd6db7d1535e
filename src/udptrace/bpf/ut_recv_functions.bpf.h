/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Finer receive-path stages at kernel functions, where the kernel allows
 * fentry (or kprobes, the fallback).
 * Optional like the send side's: a function missing or inlined leaves its
 * stage out, and where neither hook kind is allowed none is loaded.
 *
 * Two of them also stand in for tracepoints older kernels lack (6.1 has
 * neither sock:sk_data_ready nor sock:sock_recv_length): sock_def_readable is
 * where sk_data_ready is traced, and skb_consume_udp is UDP's end of a read
 * that took a datagram, just before sock_recv_length would fire.
 */
#ifndef UT_RECV_FUNCTIONS_BPF_H
#define UT_RECV_FUNCTIONS_BPF_H

#include "ut_common.bpf.h"
#include "ut_recv.bpf.h"

/* A function the datagram's skb (or its clone) passes through on the way to a socket. */
static __always_inline int on_rx_function(struct sk_buff *skb, enum ut_stage stage)
{
	struct ut_rx_key key;
	struct ut_rx_datagram *d;
	__u64 now;

	if (!cfg.rx && !cfg.e2e)
		return 0;
	key = rx_key(skb);
	now = bpf_ktime_get_ns();
	d = rx_datagram(&key, now);
	if (!d)
		return 0;
	if (stage == UT_STAGE_UDP_QUEUE) /* each multicast member's clone: its own time */
		d->state.rec.ts[stage] = now;
	else
		reach(&d->state.rec, stage, now);
	return 0;
}

/*
 * The thread entered udp_recvmsg: its read, if it takes a followed datagram,
 * notes when the reader came for it (on_sock_read). A thread gets its entry
 * in rx_reads only for a socket that may hold one (every reader's socket
 * would crowd out the entries of threads in the middle of a traced read).
 */
static __always_inline int on_recvmsg_entry(struct sock *sk)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid(), key = (__u64)sk;
	__u32 tid = (__u32)pid_tgid;
	struct ut_rx_reads *reads;

	if (!cfg.rx && !cfg.e2e)
		return 0;
	reads = bpf_map_lookup_elem(&rx_reads, &tid);
	if (!reads && (bpf_map_lookup_elem(&rx_sockets, &key) ||
		       (cfg.rx && process_wanted(pid_tgid >> 32))))
		reads = thread_reads(tid);
	if (reads)
		reads->recvmsg_entry = bpf_ktime_get_ns();
	return 0;
}

UT_FUNCTION(udp_rcv, on_rx_function(skb, UT_STAGE_UDP_RCV), struct sk_buff *skb)
UT_FUNCTION(udpv6_rcv, on_rx_function(skb, UT_STAGE_UDP_RCV), struct sk_buff *skb)
UT_FUNCTION(__udp_enqueue_schedule_skb, on_rx_function(skb, UT_STAGE_UDP_QUEUE),
	    struct sock *sk, struct sk_buff *skb)
UT_FUNCTION(udp_recvmsg, on_recvmsg_entry(sk), struct sock *sk)
UT_FUNCTION(udpv6_recvmsg, on_recvmsg_entry(sk), struct sock *sk)
/* where sk_data_ready and sock_recv_length are not tracepoints */
UT_FUNCTION(sock_def_readable, (on_sock_queue(sk), 0), struct sock *sk)
/* a peek passes -len (or 0 for an empty datagram, then counted as a read) */
UT_FUNCTION(skb_consume_udp, (on_sock_read(sk, len, 0), 0),
	    struct sock *sk, struct sk_buff *skb, int len)

#endif /* UT_RECV_FUNCTIONS_BPF_H */
