// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The hooks udptrace runs for each datagram a veth sender sends, with empty
 * bodies: what attaching there costs before udptrace does any work, the
 * floor under its histogram mode. Same attach types as udptrace picks on a
 * kernel with BTF (perf tracepoints for the syscalls, tp_btf for the rest);
 * keep the list in step with the programs bench/run.py reports at about one
 * run per packet.
 */
#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EMPTY(section, name) \
	SEC(section) int name(void *ctx) { return 0; }

EMPTY("tracepoint/syscalls/sys_enter_sendto", empty_enter_sendto)
EMPTY("tracepoint/syscalls/sys_exit_sendto", empty_exit_sendto)
EMPTY("tp_btf/net_dev_queue", empty_dev_queue)
EMPTY("tp_btf/net_dev_start_xmit", empty_xmit_start)
EMPTY("tp_btf/net_dev_xmit", empty_xmit_done)
EMPTY("tp_btf/netif_rx", empty_netif_rx)
EMPTY("tp_btf/netif_receive_skb", empty_netif_recv)
EMPTY("tp_btf/consume_skb", empty_consume)
