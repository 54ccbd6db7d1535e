/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types udptrace reads, declared with preserve_access_index so
 * every field access is a CO-RE relocation resolved against the running
 * kernel's BTF at load time. Only the fields we touch are listed; their order
 * and the struct sizes here do not matter. This replaces a build-host
 * vmlinux.h, which would tie the object to the kernel it was built on.
 */
#ifndef UT_TYPES_H
#define UT_TYPES_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* UAPI constants (stable ABI) that vmlinux.h would otherwise provide */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LPM_TRIE = 11,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum { BPF_ANY = 0, BPF_NOEXIST = 1 };
enum { BPF_F_NO_PREALLOC = 1, BPF_F_NO_COMMON_LRU = 2 };
enum { BPF_RB_NO_WAKEUP = 1, BPF_RB_FORCE_WAKEUP = 2 };
enum { BPF_RB_AVAIL_DATA = 0 };

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	char name[16];
	int ifindex;
	unsigned short type;       /* ARPHRD_*: what its frames' link header is */
	possible_net_t nd_net;
};

struct in6_addr {
	__u8 u6_addr8[16];         /* a union in the kernel; only ever copied whole */
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sk_buff {
	struct sk_buff *next;      /* on a queue (inside anonymous unions in the kernel) */
	struct sk_buff *prev;
	unsigned int len;
	unsigned int data_len;
	__u16 transport_header;
	__u16 network_header;
	__u16 mac_header;
	__be16 protocol;
	__u8 pkt_type:3;
	__u8 tstamp_type:2;        /* since 6.11: the clock of tstamp (enum skb_tstamp_type) */
	__u8 mono_delivery_time:1; /* 5.18 to 6.10: tstamp is CLOCK_MONOTONIC */
	__u8 cloned:1;             /* its data buffer is shared with another skb */
	__s64 tstamp;              /* ktime_t; on the send path SO_TXTIME's launch time */
	char cb[48];
	unsigned int tail;         /* sk_buff_data_t: an offset from head on 64-bit */
	unsigned int end;          /* the skb_shared_info lies at head + end */
	unsigned char *head;
	unsigned char *data;
	struct net_device *dev;
	struct sock *sk;
};

struct skb_shared_hwtstamps {
	__s64 hwtstamp;            /* ktime_t, in a union with netdev_data */
};

struct skb_shared_info {
	unsigned short gso_size;
	unsigned short gso_segs;
	struct skb_shared_hwtstamps hwtstamps;
};

/* An error queue entry's header in skb->cb (include/net/sock.h: SKB_EXT_ERR) */
struct sock_extended_err {
	__u32 ee_errno;
	__u8 ee_origin;
	__u32 ee_info;
};

struct sock_exterr_skb {
	struct sock_extended_err ee;
};

struct sk_buff_head {
	struct sk_buff *next;
	struct sk_buff *prev;
	__u32 qlen;
};

struct neighbour {
	struct sk_buff_head arp_queue;
};

struct sock {
	struct sock_common __sk_common;
	struct sk_buff_head sk_receive_queue;
	struct sk_buff_head sk_error_queue;
	__u16 sk_type;
	__u16 sk_protocol;
	__u8 sk_clockid;           /* SO_TXTIME's clock */
};

struct socket {
	struct sock *sk;
};

struct inode {
	unsigned short i_mode;
};

struct file {
	struct inode *f_inode;
	void *private_data;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	struct files_struct *files;
	int pid;                   /* the thread's id */
	int tgid;                  /* the process's */
	char comm[16];
	unsigned int __state;      /* since 5.14; `state` before */
	int on_cpu;                /* running on a CPU, or still switching away from it */
	unsigned int rt_priority;
	unsigned int policy;
};

struct task_struct___old {
	long state;
};

struct hrtimer_clock_base {
	__s64 offset;              /* ktime_t: this clock minus CLOCK_MONOTONIC */
};

struct hrtimer {
	__s64 _softexpires;        /* ktime_t: the expiry asked for; node.expires adds the slack */
	void *function;
	struct hrtimer_clock_base *base;
};

/* A task sleeping with a timeout (nanosleep, poll, epoll, futex): the timer wakes `task` */
struct hrtimer_sleeper {
	struct hrtimer timer;
	struct task_struct *task;
};

struct Qdisc;
struct netdev_queue;
struct neigh_table;

/*
 * Registers under the kernel's names, placed by CO-RE: a raw syscall's
 * arguments (ut_syscalls.bpf.c) and a kprobe's, which bpf_tracing.h reads by
 * these names once __VMLINUX_H__ says this header stands for vmlinux.h.
 * Laid out for x86 and arm64 only.
 */
#define __VMLINUX_H__
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long di, si, dx, cx, r10, r8, r9, ax, bp, sp, ip, orig_ax;
};
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
	unsigned long regs[31];
	int syscallno;
};

struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#else
#define UT_NO_KPROBES /* no layout here yet: the plan offers no kprobes (plan.KPROBE_MACHINES) */
#endif

#pragma clang attribute pop

/* The clock of skb->tstamp (since 6.11); values relocated by name against the kernel's BTF */
enum skb_tstamp_type {
	SKB_CLOCK_REALTIME,
	SKB_CLOCK_MONOTONIC,
	SKB_CLOCK_TAI,
};

/* Wire formats: fixed by RFCs, read byte-exact, no relocation. */
struct ut_iphdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct ut_ipv6hdr {
	__u8 ver_tc;
	__u8 tc_flow[3];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct ut_frag6hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

struct ut_udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__u16 check;
};

#endif /* UT_TYPES_H */
