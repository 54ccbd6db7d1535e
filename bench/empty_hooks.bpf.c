// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Every hook `udptrace trace -p PID` attaches by default, with empty bodies:
 * what attaching there costs before udptrace does any work, the floor under
 * its modes. Same attach types as udptrace picks on a kernel with BTF (a perf
 * tracepoint for io_uring, tp_btf for the rest). Each
 * program is named after udptrace's own with `ut_e_` for `ut_`; bench/run.py
 * refuses to run when the two sets differ.
 */
#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EMPTY(section, name) \
	SEC(section) int ut_e_##name(void *ctx) { return 0; }

EMPTY("tp_btf/sys_enter", sys_btf_enter)
EMPTY("tp_btf/sys_exit", sys_btf_exit)
EMPTY("tracepoint/io_uring/io_uring_submit_req", iou_submit)
EMPTY("tp_btf/neigh_event_send_done", btf_neigh_queue)
EMPTY("tp_btf/neigh_create", btf_neigh_create)
EMPTY("tp_btf/neigh_update", btf_neigh_update)
EMPTY("tp_btf/net_dev_queue", btf_dev_queue)
EMPTY("tp_btf/qdisc_enqueue", btf_qdisc_enq)
EMPTY("tp_btf/qdisc_dequeue", btf_qdisc_deq)
EMPTY("tp_btf/net_dev_start_xmit", btf_xmit_start)
EMPTY("tp_btf/net_dev_xmit", btf_xmit_done)
EMPTY("tp_btf/netif_rx", btf_netif_rx)
EMPTY("tp_btf/netif_receive_skb", btf_netif_recv)
EMPTY("tp_btf/consume_skb", btf_consume)
EMPTY("tp_btf/kfree_skb", btf_kfree)
EMPTY("tp_btf/softirq_raise", btf_softirq_raise)
EMPTY("tp_btf/softirq_entry", btf_softirq_entry)
EMPTY("tp_btf/softirq_exit", btf_softirq_exit)
EMPTY("tp_btf/inet_sk_error_report", btf_sk_error_report)
