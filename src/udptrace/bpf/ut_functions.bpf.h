/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Finer send-path stages at kernel functions, where the kernel allows fentry
 * (or kprobes, the fallback). They are optional: a function missing, renamed
 * or inlined on a kernel leaves its stage out, and where neither hook kind is
 * allowed none of these programs is loaded.
 *
 * udp_sendmsg, udp_send_skb, ip_send_skb and ip_finish_output2 run before the
 * packet is tied to its syscall at net_dev_queue (or the neighbour queue), so
 * their times wait in the thread's call state and begin_packet copies them.
 * Each datagram overwrites them: every datagram of a sendmmsg carries its own,
 * and IP fragments share their datagram's, except ip_output, which runs per
 * fragment and belongs only to the skb it saw. dev_hard_start_xmit takes the
 * followed packets themselves.
 */
#ifndef UT_FUNCTIONS_BPF_H
#define UT_FUNCTIONS_BPF_H

#include "ut_common.bpf.h"
#include "ut_packet.bpf.h"
#include "ut_syscall.bpf.h"

/* skbs dev_hard_start_xmit takes at once: a qdisc's bulk dequeue, GSO segments */
#define DEV_XMIT_LIST_MAX 8

/* A function the thread's traced syscall runs for its own socket: note when. */
static __always_inline int on_socket_function(struct sock *sk, enum ut_stage stage)
{
	struct ut_call *call = socket_call(sk);

	if (call)
		call->function_ts[stage - UT_STAGE_UDP_SENDMSG] = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int on_skb_function(struct sk_buff *skb, enum ut_stage stage)
{
	return on_socket_function(BPF_CORE_READ(skb, sk), stage);
}

/* IP output done (routing, netfilter, fragmentation); the neighbour comes next. */
static __always_inline int on_ip_output(struct sk_buff *skb)
{
	struct ut_call *call = owning_call(skb);

	if (call) {
		call->function_ts[UT_STAGE_IP_OUTPUT - UT_STAGE_UDP_SENDMSG] = bpf_ktime_get_ns();
		call->output_skb = (__u64)skb;
	}
	return 0;
}

/* Out of the qdisc layer (or past a queueless device's), on the way to the driver. */
static __always_inline int on_dev_xmit(struct sk_buff *skb)
{
	__u64 now;
	struct ut_pkt_state *s;

	for (int i = 0; i < DEV_XMIT_LIST_MAX && skb; i++) {
		s = followed((__u64)skb, &now);
		if (s)
			reach(&s->rec, UT_STAGE_DEV_XMIT, now);
		skb = BPF_CORE_READ(skb, next);
	}
	return 0;
}

UT_FUNCTION(udp_sendmsg, on_socket_function(sk, UT_STAGE_UDP_SENDMSG), struct sock *sk)
UT_FUNCTION(udpv6_sendmsg, on_socket_function(sk, UT_STAGE_UDP_SENDMSG), struct sock *sk)
UT_FUNCTION(udp_send_skb, on_skb_function(skb, UT_STAGE_UDP_SEND_SKB), struct sk_buff *skb)
UT_FUNCTION(udp_v6_send_skb, on_skb_function(skb, UT_STAGE_UDP_SEND_SKB), struct sk_buff *skb)
UT_FUNCTION(ip_send_skb, on_skb_function(skb, UT_STAGE_IP_SEND_SKB),
	    struct net *net, struct sk_buff *skb)
UT_FUNCTION(ip6_send_skb, on_skb_function(skb, UT_STAGE_IP_SEND_SKB), struct sk_buff *skb)
UT_FUNCTION(ip_finish_output2, on_ip_output(skb),
	    struct net *net, struct sock *sk, struct sk_buff *skb)
UT_FUNCTION(ip6_finish_output2, on_ip_output(skb),
	    struct net *net, struct sock *sk, struct sk_buff *skb)
UT_FUNCTION(dev_hard_start_xmit, on_dev_xmit(first), struct sk_buff *first)

#endif /* UT_FUNCTIONS_BPF_H */
