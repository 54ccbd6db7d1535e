/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The layout both sides agree on. The Python side reads every struct and enum
 * here from the compiled object's BTF (udptrace.trace.layout), so this file
 * is the only definition: add a field or a stage here and Python sees it.
 */
#ifndef UT_RECORD_H
#define UT_RECORD_H

#include "ut_types.h"

/*
 * Stages of a packet, in pipeline order: ts[stage] is when the packet reached
 * it. New stages are inserted where they belong in the pipeline; nothing else
 * numbers them. Each stage's histogram holds the time since the stage the
 * packet reached before it.
 */
enum ut_stage {
	/* the sending thread's wake-up before the send (--wakeup) */
	UT_STAGE_TIMER = 0,        /* the timer it slept on expired (timer:hrtimer_expire_entry) */
	UT_STAGE_WAKEUP,           /* it was woken (sched:sched_wakeup) */
	UT_STAGE_ON_CPU,           /* it was switched in (sched:sched_switch) */
	UT_STAGE_APP,              /* the application's callback entered (--uprobe) */
	UT_STAGE_SYSCALL,          /* send syscall entry: time zero of the send path */
	UT_STAGE_UDP_SENDMSG,      /* udp_sendmsg entry: the socket layer done */
	UT_STAGE_UDP_SEND_SKB,     /* udp_send_skb entry: the datagram built */
	UT_STAGE_IP_SEND_SKB,      /* ip_send_skb entry: handed to IP */
	UT_STAGE_IP_OUTPUT,        /* ip_finish_output2: routing and netfilter done, neighbour next */
	UT_STAGE_NEIGH_PARKED,     /* parked on the neighbour's queue awaiting ARP/ND */
	UT_STAGE_NEIGH_QUEUE,      /* released from it: the neighbour resolved */
	UT_STAGE_DEV_QUEUE,        /* net:net_dev_queue, entering the device layer */
	UT_STAGE_QDISC_ENQUEUE,    /* qdisc:qdisc_enqueue, a queueing qdisc took it */
	UT_STAGE_QDISC_DEQUEUE,    /* qdisc:qdisc_dequeue, the qdisc released it */
	UT_STAGE_DEV_XMIT,         /* dev_hard_start_xmit: out of the qdisc layer, to the driver */
	UT_STAGE_XMIT_START,       /* net:net_dev_start_xmit, handed to the driver */
	UT_STAGE_RX_HANDOFF,       /* veth/loopback: entered the peer's receive path */
	UT_STAGE_XMIT_DONE,        /* net:net_dev_xmit, the driver returned */
	UT_STAGE_FREE,             /* skb freed: TX completion on a NIC, or a drop */
	/* the receive path (--rx, --e2e) */
	UT_STAGE_RX_DRIVER,        /* a driver handed it to the stack (NAPI, netif_rx) */
	UT_STAGE_RX_STACK,         /* net:netif_receive_skb: into the protocol stack */
	UT_STAGE_UDP_RCV,          /* udp_rcv (udpv6_rcv) entry: IP receive done, UDP next */
	UT_STAGE_UDP_QUEUE,        /* __udp_enqueue_schedule_skb entry: its socket found */
	UT_STAGE_SOCK_QUEUE,       /* queued on a socket (sock:sk_data_ready) */
	UT_STAGE_UDP_RECVMSG,      /* a reader in udp_recvmsg came for it (not before queued) */
	UT_STAGE_RX_READ,          /* the reader's recvmsg took it (sock:sock_recv_length) */
	UT_STAGE_RX_DONE,          /* the reader's receive syscall returned */
	UT_STAGE_COUNT,
};

/*
 * Spans: end-to-end times that are not one stage's share. Their histograms
 * follow the stages' in the `hists` map (slot UT_STAGE_COUNT + span).
 */
enum ut_span {
	UT_SPAN_SEND_SYSCALL = 0,  /* the send syscall, entry to return */
	UT_SPAN_TOTAL,             /* send syscall entry until the packet left the device */
	UT_SPAN_APP_TO_WIRE,       /* callback entry until the packet left the device */
	UT_SPAN_RX,                /* entering the receive path until the reader's syscall returned */
	UT_SPAN_E2E,               /* send syscall entry until the reader's syscall returned */
	UT_SPAN_CYCLE,             /* --wakeup: the requested wake-up until the packet left the device */
	UT_SPAN_COUNT,
};

/*
 * Stage roles: the points spans begin and end at (stages.py's ROLES, held to
 * this enum by a test). A role with several stages is the first of them a
 * record reached, tried in the order of the number; a number missing from a
 * role is a time the record keeps beside its stages, named in stages.py.
 */
enum ut_role {
	UT_ROLE_TIME_ZERO_1 = UT_STAGE_SYSCALL,      /* the send syscall's entry */
	UT_ROLE_CALLBACK_1 = UT_STAGE_APP,           /* the application's callback entered */
	UT_ROLE_WIRE_1 = UT_STAGE_XMIT_DONE,         /* left the device: the driver returned, */
	UT_ROLE_WIRE_2 = UT_STAGE_FREE,              /* else a NIC's TX completion freed it */
	UT_ROLE_RX_START_1 = UT_STAGE_RX_HANDOFF,    /* entered a receive path: a veth/lo handoff, */
	UT_ROLE_RX_START_2 = UT_STAGE_RX_DRIVER,     /* else a driver, */
	UT_ROLE_RX_START_3 = UT_STAGE_RX_STACK,      /* else the stack */
	UT_ROLE_RX_END_1 = UT_STAGE_RX_DONE,         /* the reader's receive syscall returned, */
	UT_ROLE_RX_END_2 = UT_STAGE_RX_READ,         /* else its read took it */
	/* 1: the wake-up the thread asked for (timer_expires) */
	UT_ROLE_CYCLE_START_2 = UT_STAGE_TIMER,      /* else its timer's expiry, */
	UT_ROLE_CYCLE_START_3 = UT_STAGE_WAKEUP,     /* else its wakeup */
};

enum ut_limits {
	UT_PAYLOAD_BYTES = 64,     /* UDP payload kept for PubSub attribution */
	UT_FRAME_BYTES = 128,      /* the most of a frame a record keeps (--snaplen) */
	UT_FINGERPRINT_BYTES = 64, /* UDP payload the fingerprint covers (read with the above) */
	UT_RX_BATCH = 8,           /* datagrams one receive syscall can read with times each */
	/* log-linear: 16 linear steps per power of two, so the middle of a bucket is within
	 * 1/32 of any value in it (a percentile to ~3 %); 32 steps would put struct ut_interval's
	 * three histograms past the 32 KiB a per-CPU map value can have */
	UT_HIST_SUB_BITS = 4,
	UT_HIST_SUB_BUCKETS = 1 << UT_HIST_SUB_BITS,
	UT_HIST_ROWS = 64 - UT_HIST_SUB_BITS + 1, /* row 0 exact, then one per power of two */
	UT_HIST_SLOTS = UT_STAGE_COUNT + UT_SPAN_COUNT,
	UT_INTERVAL_WARMUP = 5,    /* intervals whose median becomes a flow's reference period */
};

enum ut_record_kind {
	UT_KIND_PACKET = 1,        /* one datagram or fragment, at its end */
	UT_KIND_SYSCALL = 2,       /* one send syscall that made packets, at its exit */
};

/* Which send or receive syscall: our own numbering, the same on every architecture. */
enum ut_syscall {
	UT_SYS_SENDTO = 1,
	UT_SYS_SENDMSG,
	UT_SYS_SENDMMSG,
	UT_SYS_WRITE,
	UT_SYS_WRITEV,
	UT_SYS_SENDFILE,
	UT_SYS_SPLICE,
	UT_SYS_IO_URING,           /* an io_uring send request: time zero is its submission */
	UT_SYS_RECVFROM,
	UT_SYS_RECVMSG,
	UT_SYS_RECVMMSG,
	UT_SYS_READ,
	UT_SYS_READV,
};

#define UT_SYSCALLS (UT_SYS_READV + 1) /* ut_config.syscall_nr's size: index 0 is unused */

enum ut_fate {
	UT_FATE_SENT = 1,
	UT_FATE_DROPPED = 2,
	UT_FATE_LOOPED = 3,        /* a multicast copy delivered to this host's own members */
	UT_FATE_RECEIVED = 4,      /* a reader's receive syscall returned it */
	UT_FATE_UNREAD = 5,        /* still queued on a socket when the trace ended */
};

/*
 * Where the kernel ran a step of the packet: the driver's transmit, or a NIC's
 * TX completion (the free after it).
 */
enum ut_context {
	UT_CTX_UNKNOWN = 0,        /* not reached, or nothing told */
	UT_CTX_SENDER,             /* the sending thread in process context: transmitted directly */
	UT_CTX_TASK,               /* another thread's process context (it ran the qdisc) */
	UT_CTX_NET_TX,             /* the NET_TX softirq: a qdisc released it, or a deferred free */
	UT_CTX_NET_RX,             /* the NET_RX softirq: a NAPI poll */
	UT_CTX_TIMER,              /* the timer softirq */
	UT_CTX_SOFTIRQ,            /* another softirq */
	UT_CTX_COUNT,
};

/*
 * PREEMPT_RT runs softirqs in threads (the interrupt thread that raised them, a
 * thread leaving a bh-disabled section, or ksoftirqd): the thread that ran a step,
 * with the scheduling that decided when. Set where cfg.threads says so; tid 0 = not told.
 */
struct ut_thread {
	__u32 tid;
	__u8 policy;               /* SCHED_OTHER 0, SCHED_FIFO 1, SCHED_RR 2, ... */
	__u8 rt_priority;          /* 1-99 under FIFO/RR */
	__u8 step;                 /* as a ut_context_threads key: 0 driver call, 1 TX completion */
	__u8 context;              /* as a key: its enum ut_context */
};

enum ut_record_flags {
	UT_F_NEIGH_QUEUED = 1,     /* attributed when it was parked for ARP/ND */
	UT_F_HANDED_OFF = 2,       /* continued into a receive path (veth/lo) */
	UT_F_FRAGMENT = 4,         /* an IP fragment (not the whole datagram) */
	UT_F_PAYLOAD = 8,          /* payload[] holds the first UDP payload bytes */
	UT_F_RECEIVE = 16,         /* followed on the receive path: rx_* fields are set */
};

/*
 * A packet or a syscall. A packet whose send ended inside its syscall (veth,
 * loopback, a synchronous driver) waits for the syscall's return and carries
 * its exit and return value itself: then there is no syscall record.
 *
 * The ring buffer carries only as much of each record as the mode needs:
 * `payload` with --pubsub, the rx_* fields on the receive path, --snaplen
 * bytes of `frame`. So those stay last, in this order; every other field goes
 * before `payload`.
 */
struct ut_record {
	__u64 ts[UT_STAGE_COUNT];  /* CLOCK_MONOTONIC ns per stage; 0 = not reached */
	__u64 syscall_id;          /* links packets to their syscall record */
	__u64 syscall_exit;        /* the syscall's exit time; 0 = in its own record */
	__s64 syscall_ret;         /* the syscall's return value, with syscall_exit */
	__u64 interval_ns;         /* since the flow's previous send syscall (--interval); 0 = none */
	__u64 timer_expires;       /* --wakeup: the waking timer's requested (soft) expiry */
	/*
	 * The kernel writes these in their own clocks; user space turns txtime and tstamp_sw
	 * into CLOCK_MONOTONIC as it reads each batch (trace/clocks.py). 0 = none.
	 */
	__u64 txtime;              /* SO_TXTIME launch time (skb->tstamp), in clock txtime_clock */
	__u64 tstamp_sw;           /* SO_TIMESTAMPING: the kernel's software TX timestamp (realtime) */
	__u64 tstamp_hw;           /* SO_TIMESTAMPING: the NIC's TX timestamp, in its own clock */
	__u64 softirq_pending_ns;  /* xmit_context NET_TX: from its raise to its run; 0 = unknown */
	/*
	 * The datagram's own bytes hashed (ut_common.bpf.h's fingerprint), alike on the
	 * send and the receive path: its ports, UDP length and first payload bytes. 0 =
	 * none: not streamed, a later fragment, or payload outside the linear data.
	 */
	__u64 fingerprint;
	enum ut_record_kind kind;
	enum ut_fate fate;
	enum ut_stage drop_stage;  /* last stage reached before a drop */
	__u32 drop_reason;         /* kernel enum skb_drop_reason, named from BTF */
	__u32 pid;
	__u32 tid;
	__u32 cpu;                 /* CPU of the syscall */
	__u32 netns;               /* inode of the device's network namespace */
	__u32 ifindex;
	__u32 len;                 /* frame length at the device queue (L2 header included) */
	__u32 frame_len;           /* --snaplen: the whole frame's length from frame[0] */
	__s32 xmit_rc;             /* driver return code at net_dev_xmit */
	enum ut_syscall syscall;
	__s32 txtime_clock;        /* clockid of txtime (CLOCK_TAI, ...); valid when txtime != 0 */
	enum ut_context xmit_context;       /* where the driver's transmit was called */
	enum ut_context completion_context; /* where a NIC's TX completion freed it */
	struct ut_thread xmit_thread;       /* PREEMPT_RT: the thread that called the driver */
	struct ut_thread completion_thread; /* PREEMPT_RT: the thread that ran the completion */
	__u16 family;              /* AF_INET / AF_INET6 */
	__u16 sport;
	__u16 dport;
	__u16 packet_index;        /* n-th packet of its syscall; syscall records: count */
	__u16 payload_len;
	__u16 udp_len;             /* the UDP header's length: header and payload */
	__u16 gso_segs;            /* UDP GSO: datagrams this skb becomes on the wire; 0: one */
	__u16 gso_size;            /* UDP GSO: payload bytes per datagram */
	__u16 frame_caplen;        /* --snaplen: bytes of the frame in frame[]; 0 = none */
	__u16 frame_l3;            /* where its IP header starts in frame[]: 0 = no link header */
	__u16 dev_type;            /* ARPHRD_* of the device frame[] was read on */
	enum ut_record_flags flags;
	__u8 saddr[16];            /* IPv4 as ::ffff:a.b.c.d */
	__u8 daddr[16];
	char comm[16];
	char ifname[16];
	__u8 payload[UT_PAYLOAD_BYTES];
	/* the receive side (UT_F_RECEIVE) */
	__s64 rx_ret;              /* the reader's receive syscall's return value */
	__u32 rx_pid;
	__u32 rx_tid;
	__u32 rx_cpu;              /* CPU of the reader */
	__u32 rx_netns;            /* inode of the receiving device's network namespace */
	__u32 rx_ifindex;
	enum ut_syscall rx_syscall;
	char rx_comm[16];
	char rx_ifname[16];
	/* --snaplen: the datagram's frame as the device had it (see describe_frame) */
	__u8 frame[UT_FRAME_BYTES];
};

/* Per-CPU totals; the Python side reads the field names from BTF. */
struct ut_counters {
	__u64 syscalls;            /* send syscalls that produced UDP packets */
	__u64 packets;             /* packets followed */
	__u64 sent;
	__u64 dropped;
	__u64 lost;                /* packet records the ring buffer had no room for */
	__u64 lost_syscalls;       /* syscall records the ring buffer had no room for */
	__u64 state_full;          /* packets not followed: state map full */
	__u64 expired;             /* states dropped as stale (address reused) */
	__u64 neigh_queued;        /* packets attributed while parked for ARP/ND */
	__u64 peer_dropped;        /* sent on a veth/lo, then dropped by the peer's receive path */
	__u64 looped;              /* multicast copies looped back to local members */
	__u64 datagrams;           /* datagrams on the wire from sent packets (UDP GSO: each segment) */
	__u64 unattributed;        /* UDP sent by a traced process that no traced send made */
	__u64 rx_datagrams;        /* datagrams followed into a receive path */
	__u64 queued;              /* queued on a socket (one per socket for multicast) */
	__u64 received;            /* returned by a reader's receive syscall */
	__u64 rx_dropped;          /* dropped on the receive path */
	__u64 rx_expired;          /* receive states dropped as stale */
};

/* One latency distribution: exact count/sum/min/max, log-linear buckets. */
struct ut_hist {
	__u64 count;
	__u64 sum;
	__u64 min;
	__u64 max;
	__u64 buckets[UT_HIST_ROWS][UT_HIST_SUB_BUCKETS];
};

/* Per-CPU: packets by the context of their driver call and of their TX completion. */
struct ut_contexts {
	__u64 xmit[UT_CTX_COUNT];
	__u64 completion[UT_CTX_COUNT];
	struct ut_hist net_tx_pending;  /* NET_TX raise → run, for packets it transmitted */
};

struct ut_drop_key {
	__u32 reason;
	enum ut_stage stage;
};

/* Send intervals (--interval), per flow: a socket of a process, or its callback. */
enum ut_flow_kind {
	UT_FLOW_SOCKET = 1,
	UT_FLOW_APP = 2,
};

struct ut_flow_key {
	__u64 id;                  /* the socket's address; 0 for the callback */
	__u32 tgid;
	enum ut_flow_kind kind;
};

/*
 * Jitter needs the period, known only at the end; so the kernel measures each
 * interval against a reference fixed early (the median of the first few) and
 * user space shifts those deviations onto the final median.
 */
struct ut_interval {
	__u64 last;                /* the previous send syscall's entry (or callback entry) */
	__u64 reference;           /* median of the warm-up intervals; 0 until known */
	__u64 warmup[UT_INTERVAL_WARMUP];
	__u64 missed;              /* intervals longer than 1.5 reference periods */
	__u32 warmed;              /* intervals in warmup[] so far */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[16];
	struct ut_hist interval;   /* every interval */
	struct ut_hist early;      /* reference - interval, for intervals shorter than it */
	struct ut_hist late;       /* interval - reference, for the others */
};

/* Set by Python in .rodata before load: constant to the verifier. */
struct ut_config {
	__u64 max_age_ns;          /* a state idle this long is stale */
	__u64 hrtimer_wakeup;      /* the function every hrtimer_sleeper runs, with wakeup; 0 =
	                            * unknown (not a __ksym: libbpf reads all of kallsyms for one,
	                            * 0.1 s of every load) */
	__u32 filter_pid;          /* only tgids in map pids */
	__u32 filter_port;         /* only packets with a port in map ports */
	__u32 filter_src;          /* only sources in LPM map src_nets */
	__u32 filter_dst;          /* only destinations in LPM map dst_nets */
	__u32 netns;               /* only this network namespace inode; 0 = any */
	__u32 stream;              /* emit per-packet records to the ring buffer */
	__u32 kfree_has_reason;    /* kfree_skb tracepoint carries a drop reason */
	__u32 intervals;           /* keep per-flow send intervals */
	__u32 send;                /* follow datagrams from their send syscalls */
	__u32 rx;                  /* follow every UDP datagram that enters a receive path */
	__u32 e2e;                 /* followed sends continue into this host's receive path */
	__u32 wakeup;              /* follow traced threads' wake-ups (timer, wakeup, on_cpu) */
	__u32 contexts;            /* the softirq hooks run: record the contexts of packets' steps */
	__u32 threads;             /* PREEMPT_RT: also the thread of each step (ut_thread) */
	__u32 only_pid;            /* the one tgid -p names (a constant test); 0 = none or several */
	__u32 typed;               /* every hook gets typed arguments (tp_btf): plain loads */
	__u32 record_bytes;        /* bytes of each record the ring buffer carries (see ut_record) */
	__u32 wakeup_bytes;        /* wake a reader waiting on the ring when it fills past this */
	__u32 snaplen;             /* frame bytes each record keeps; 0 = none */
	__u16 payload_port;        /* copy payload for this port, either side; 0 = none */
	__u16 pad;
	__s32 syscall_nr[UT_SYSCALLS]; /* each ut_syscall's number here (-1: none) */
	char comm[16];             /* only this comm; empty = any */
	char ifname[16];           /* only this device; empty = any */
};

struct ut_lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

#endif /* UT_RECORD_H */
