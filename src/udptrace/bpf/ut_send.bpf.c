// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * udptrace send path: every UDP datagram from its send syscall to the point
 * where it left the sending device.
 *
 * A packet is tied to its syscall where that is certain: the skb's socket is
 * the socket behind the syscall's fd, seen on the syscall's own task (process
 * context, or a softirq running on that task's stack). From then on the skb
 * address is the key, until the packet ends:
 *   - handed to a receive path (veth, loopback) and the driver returned: sent;
 *   - freed after the driver took it (TX completion on a NIC): sent;
 *   - freed before that: dropped, with the kernel's drop reason.
 * Each hook is written once as a static function and wrapped twice, as
 * tp_btf and raw_tp; user space autoloads the variant this kernel supports.
 */
#include "ut_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "ut_record.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_UDP 17
#define IPV6_FRAGMENT 44
#define NETDEV_TX_OK 0
#define PACKET_LOOPBACK 5
/* a peer drops within microseconds; an older entry means we missed a silent free */
#define PEER_WINDOW_NS 1000000000ULL

const volatile struct ut_config cfg = {};

/* Used only to recognise a socket file; weak so a kernel without it still loads. */
extern const void socket_file_ops __ksym __weak;

__u64 next_syscall_id = 0;

/*
 * One entry per thread, rewritten in place by every send syscall (an insert and
 * a delete per syscall cost more than the rest of the syscall hooks together).
 */
struct ut_call {
	__u64 id;                  /* 0: no traced syscall in flight on this thread */
	__u64 entry;
	__u64 sk;                  /* socket behind sk_fd, kept across syscalls */
	__u32 fd;
	__u32 sk_fd;
	enum ut_syscall syscall;
	__u16 packets;
	__u16 sport;               /* ports of the first fragment, for the others */
	__u16 dport;
};

struct ut_pkt_state {
	struct ut_record rec;
	__u64 last;                /* time of the latest event, to spot stale entries */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, __u32);        /* tid */
	__type(value, struct ut_call);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, __u64);        /* skb address */
	__type(value, struct ut_pkt_state);
} packets SEC(".maps");

/*
 * The packet this CPU is transmitting right now. From net_dev_queue to
 * net_dev_xmit the kernel holds bottom halves off on one CPU, so a packet
 * sent synchronously (veth, loopback, an idle qdisc) is followed here, with
 * no hash insert or delete. It moves to `packets` (spills) the moment it
 * could be seen elsewhere: queued in a qdisc, parked for ARP, or awaiting a
 * NIC's TX completion.
 */
struct ut_current {
	__u64 skb;                 /* 0: empty */
	struct ut_pkt_state state;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_current);
} current_packet SEC(".maps");

/*
 * Packets whose send record has ended at a veth/lo handoff: when the peer's
 * receive path frees one with a drop reason (no listener: NO_SOCKET), the drop
 * is counted against the peer, not the send path. Direct-mapped by skb address:
 * no insert or delete per packet; a collision only forgets an older handoff.
 * A freed sk_buff and its data buffer are often both reused at once by the next
 * allocation, so the identity check takes the end of the data too.
 */
#define HANDOFF_SLOTS 4096

struct ut_handoff {
	__u64 skb;
	__u64 time;
	__u64 head;
	__u32 tail;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HANDOFF_SLOTS);
	__type(key, __u32);
	__type(value, struct ut_handoff);
} handed_off SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UT_HIST_SLOTS);
	__type(key, __u32);
	__type(value, struct ut_hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ut_drop_key);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
} pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ut_lpm_key);
	__type(value, __u8);
} src_nets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ut_lpm_key);
	__type(value, __u8);
} dst_nets SEC(".maps");

/* Slots hash the data buffer's address: a tp_btf skb pointer allows no arithmetic. */
static __always_inline struct ut_handoff *handoff_slot(__u64 head)
{
	__u32 slot = ((head * 0x9E3779B97F4A7C15ULL) >> 52) & (HANDOFF_SLOTS - 1);

	return bpf_map_lookup_elem(&handed_off, &slot);
}

static __always_inline struct ut_counters *counts(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&counters, &zero);
}

#define COUNT(field)                                   \
	do {                                               \
		struct ut_counters *c__ = counts();            \
		if (c__)                                       \
			c__->field++;                              \
	} while (0)

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFF) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	return r | (v >> 1);
}

/* Log-linear bucket: exact below 8 ns, then 8 steps per power of two (<= 12.5% wide). */
static __always_inline void hist_add(__u32 slot, __u64 value)
{
	struct ut_hist *h = bpf_map_lookup_elem(&hists, &slot);
	__u64 row, sub, lg;

	if (!h)
		return;
	if (value < UT_HIST_SUB_BUCKETS) {
		row = 0;
		sub = value;
	} else {
		lg = log2_u64(value);
		row = lg - 2;
		sub = (value >> (lg - 3)) & (UT_HIST_SUB_BUCKETS - 1);
	}
	if (row >= UT_HIST_ROWS)
		row = UT_HIST_ROWS - 1;
	h->buckets[row][sub & (UT_HIST_SUB_BUCKETS - 1)]++;
	if (!h->count || value < h->min)
		h->min = value;
	if (value > h->max)
		h->max = value;
	h->count++;
	h->sum += value;
}

static __always_inline bool same_name16(const char *a, const volatile char *b)
{
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (a[i] != b[i])
			return false;
		if (!a[i])
			return true;
	}
	return true;
}

/* ---- syscalls ------------------------------------------------------------------- */

static __always_inline int syscall_enter(enum ut_syscall syscall, __u64 fd)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, tid = (__u32)pid_tgid;
	struct ut_call *call;

	if (cfg.filter_pid && !bpf_map_lookup_elem(&pids, &tgid))
		return 0;
	if (cfg.comm[0]) {
		char comm[16];

		bpf_get_current_comm(comm, sizeof(comm));
		if (!same_name16(comm, cfg.comm))
			return 0;
	}
	call = bpf_map_lookup_elem(&calls, &tid);
	if (!call) {
		struct ut_call fresh = {};

		bpf_map_update_elem(&calls, &tid, &fresh, BPF_NOEXIST);
		call = bpf_map_lookup_elem(&calls, &tid);
		if (!call)
			return 0;
	}
	call->id = __sync_fetch_and_add(&next_syscall_id, 1) + 1;
	call->entry = bpf_ktime_get_ns();
	call->fd = fd;
	call->syscall = syscall;
	call->packets = 0;
	return 0;
}

/* The syscall's own record, written straight into the ring buffer. */
static __always_inline void emit_syscall_record(struct ut_call *call, __u64 now, __s64 ret,
						__u64 pid_tgid)
{
	struct ut_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	if (!r) {
		COUNT(lost_syscalls);
		return;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = UT_KIND_SYSCALL;
	r->ts[UT_STAGE_SYSCALL] = call->entry;
	r->syscall_exit = now;
	r->syscall_ret = ret;
	r->syscall_id = call->id;
	r->syscall = call->syscall;
	r->packet_index = call->packets;
	r->pid = pid_tgid >> 32;
	r->tid = (__u32)pid_tgid;
	r->cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

static __always_inline int syscall_exit(__s64 ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct ut_call *call = bpf_map_lookup_elem(&calls, &tid);
	__u64 now;

	if (!call || !call->id)
		return 0;
	if (call->packets) {
		now = bpf_ktime_get_ns();
		COUNT(syscalls);
		hist_add(UT_STAGE_SYSCALL, now - call->entry);
		if (cfg.stream)
			emit_syscall_record(call, now, ret, pid_tgid);
	}
	call->id = 0;
	return 0;
}

/* sys_enter_* / sys_exit_* tracepoint records: stable ABI since syscall tracepoints exist */
struct syscall_enter_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};

struct syscall_exit_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

#define UT_SYSCALL(name, id)                                                \
	SEC("tracepoint/syscalls/sys_enter_" #name)                             \
	int ut_enter_##name(struct syscall_enter_ctx *ctx)                      \
	{                                                                       \
		return syscall_enter(id, ctx->args[0]);                             \
	}                                                                       \
	SEC("tracepoint/syscalls/sys_exit_" #name)                              \
	int ut_exit_##name(struct syscall_exit_ctx *ctx)                        \
	{                                                                       \
		return syscall_exit(ctx->ret);                                      \
	}

UT_SYSCALL(sendto, UT_SYS_SENDTO)
UT_SYSCALL(sendmsg, UT_SYS_SENDMSG)
UT_SYSCALL(sendmmsg, UT_SYS_SENDMMSG)
UT_SYSCALL(write, UT_SYS_WRITE)
UT_SYSCALL(writev, UT_SYS_WRITEV)

/* ---- packets -------------------------------------------------------------------- */

/* The socket behind the syscall's fd, or 0 when the fd is not a socket. */
static __always_inline __u64 fd_socket(__u32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = 0;
	struct socket *sock;

	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return 0;
	if (&socket_file_ops && BPF_CORE_READ(file, f_op) != &socket_file_ops)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	return (__u64)BPF_CORE_READ(sock, sk);
}

/* The syscall this skb belongs to, if it is being sent by a traced syscall right here. */
static __always_inline struct ut_call *owning_call(struct sk_buff *skb)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ut_call *call = bpf_map_lookup_elem(&calls, &tid);
	__u64 sk;

	if (!call || !call->id)
		return 0;
	sk = (__u64)BPF_CORE_READ(skb, sk);
	if (!sk)
		return 0;
	if (sk == call->sk && call->fd == call->sk_fd)
		return call; /* the common case: the same socket as last time, no fd walk */
	call->sk = fd_socket(call->fd);
	call->sk_fd = call->fd;
	return sk == call->sk ? call : 0;
}

static __always_inline bool addr_wanted(void *lpm, __u8 *addr)
{
	struct ut_lpm_key key = {.prefixlen = 128};

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(lpm, &key) != 0;
}

/*
 * Fill the packet fields of a record from the skb's headers. False when the
 * packet is not UDP or the filters exclude it.
 */
static __always_inline bool describe_packet(struct sk_buff *skb, struct ut_call *call,
					    struct ut_record *r)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u32 nh = BPF_CORE_READ(skb, network_header);
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	__u32 l4 = 0, linear_end;
	bool first_fragment = true;
	__u8 version = 0;

	bpf_probe_read_kernel(&version, 1, head + nh);
	version >>= 4;
	if (version == 4) {
		struct ut_iphdr ip;
		__u16 frag;

		bpf_probe_read_kernel(&ip, sizeof(ip), head + nh);
		if (ip.protocol != IPPROTO_UDP)
			return false;
		r->family = AF_INET;
		r->saddr[10] = r->saddr[11] = r->daddr[10] = r->daddr[11] = 0xff;
		__builtin_memcpy(&r->saddr[12], ip.saddr, 4);
		__builtin_memcpy(&r->daddr[12], ip.daddr, 4);
		frag = bpf_ntohs(ip.frag_off);
		if (frag & 0x3FFF) /* MF flag or an offset */
			r->flags |= UT_F_FRAGMENT;
		first_fragment = (frag & 0x1FFF) == 0;
		l4 = nh + (ip.ver_ihl & 0xF) * 4;
	} else if (version == 6) {
		struct ut_ipv6hdr ip6;
		__u8 next;

		bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh);
		next = ip6.nexthdr;
		l4 = nh + sizeof(ip6);
		if (next == IPV6_FRAGMENT) {
			struct ut_frag6hdr fh;

			bpf_probe_read_kernel(&fh, sizeof(fh), head + l4);
			next = fh.nexthdr;
			r->flags |= UT_F_FRAGMENT;
			first_fragment = (bpf_ntohs(fh.frag_off) & 0xFFF8) == 0;
			l4 += sizeof(fh);
		}
		if (next != IPPROTO_UDP)
			return false;
		r->family = AF_INET6;
		__builtin_memcpy(r->saddr, ip6.saddr, 16);
		__builtin_memcpy(r->daddr, ip6.daddr, 16);
	} else {
		return false;
	}

	/* histogram mode without port filters needs none of what follows but the checks */
	if (!cfg.stream && !cfg.filter_port && !cfg.netns && !cfg.ifname[0])
		return true;
	if (first_fragment) {
		struct ut_udphdr udp;

		bpf_probe_read_kernel(&udp, sizeof(udp), head + l4);
		call->sport = bpf_ntohs(udp.source);
		call->dport = bpf_ntohs(udp.dest);
	}
	r->sport = call->sport;
	r->dport = call->dport;

	if (cfg.filter_port) {
		__u16 sport = r->sport, dport = r->dport;

		if (!bpf_map_lookup_elem(&ports, &sport) && !bpf_map_lookup_elem(&ports, &dport))
			return false;
	}
	if (cfg.filter_src && !addr_wanted(&src_nets, r->saddr))
		return false;
	if (cfg.filter_dst && !addr_wanted(&dst_nets, r->daddr))
		return false;

	r->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	if (cfg.netns && r->netns != cfg.netns)
		return false;
	BPF_CORE_READ_INTO(&r->ifname, dev, name);
	if (cfg.ifname[0] && !same_name16(r->ifname, cfg.ifname))
		return false;
	r->ifindex = BPF_CORE_READ(dev, ifindex);
	r->len = BPF_CORE_READ(skb, len);

	if (cfg.payload_port && first_fragment &&
	    (r->sport == cfg.payload_port || r->dport == cfg.payload_port)) {
		linear_end = (BPF_CORE_READ(skb, data) - head) + r->len - BPF_CORE_READ(skb, data_len);
		if (linear_end > l4 + 8) {
			__u32 avail = linear_end - l4 - 8;

			r->payload_len = avail < UT_PAYLOAD_BYTES ? avail : UT_PAYLOAD_BYTES;
			/* a fixed-size read: bytes past payload_len are ignored by user space */
			bpf_probe_read_kernel(r->payload, UT_PAYLOAD_BYTES, head + l4 + 8);
			r->flags |= UT_F_PAYLOAD;
		}
	}
	return true;
}

static __always_inline struct ut_current *cpu_slot(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&current_packet, &zero);
}

/* Move this CPU's packet to the shared map, where other CPUs and contexts find it. */
static __always_inline void spill(struct ut_current *cur)
{
	if (!cur->skb)
		return;
	if (bpf_map_update_elem(&packets, &cur->skb, &cur->state, BPF_ANY))
		COUNT(state_full);
	cur->skb = 0;
}

/* Start following an skb of a traced syscall in this CPU's slot; returns its state or 0. */
static __always_inline struct ut_pkt_state *begin_packet(__u64 key, struct sk_buff *skb,
							 struct ut_call *call, __u64 now)
{
	struct ut_current *cur = cpu_slot();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ut_record *r;

	if (!cur)
		return 0;
	if (cur->skb != key)
		spill(cur);
	cur->skb = 0;
	r = &cur->state.rec;
	__builtin_memset(r, 0, sizeof(*r));
	if (!describe_packet(skb, call, r))
		return 0;
	r->kind = UT_KIND_PACKET;
	r->ts[UT_STAGE_SYSCALL] = call->entry;
	r->syscall_id = call->id;
	r->syscall = call->syscall;
	r->packet_index = call->packets++;
	r->pid = pid_tgid >> 32;
	r->tid = (__u32)pid_tgid;
	r->cpu = bpf_get_smp_processor_id();
	if (cfg.stream)
		bpf_get_current_comm(r->comm, sizeof(r->comm));
	cur->state.last = now;
	cur->skb = key;
	COUNT(packets);
	return &cur->state;
}

/* The state of an skb we follow, or 0; stale states are dropped on sight. */
static __always_inline struct ut_pkt_state *followed(__u64 key, __u64 now)
{
	struct ut_current *cur = cpu_slot();
	struct ut_pkt_state *s;

	if (cur && cur->skb == key)
		return &cur->state;
	s = bpf_map_lookup_elem(&packets, &key);
	if (s && now - s->last > cfg.max_age_ns) {
		bpf_map_delete_elem(&packets, &key);
		COUNT(expired);
		return 0;
	}
	if (s)
		s->last = now;
	return s;
}

/* The packet in this CPU's slot, if that is `key`, moves to the shared map. */
static __always_inline void spill_if_current(__u64 key)
{
	struct ut_current *cur = cpu_slot();

	if (cur && cur->skb == key)
		spill(cur);
}

static __always_inline void reach(struct ut_record *r, enum ut_stage stage, __u64 now)
{
	if (!r->ts[stage])
		r->ts[stage] = now;
}

/* The stage the packet reached last (by time), for a drop's attribution. */
static __always_inline enum ut_stage last_stage(struct ut_record *r)
{
	enum ut_stage last = UT_STAGE_SYSCALL;
	__u64 latest = 0;

#pragma unroll
	for (int i = 0; i < UT_STAGE_COUNT; i++) {
		if (r->ts[i] && r->ts[i] >= latest) {
			latest = r->ts[i];
			last = i;
		}
	}
	return last;
}

static __always_inline void count_drop(__u32 reason, enum ut_stage stage)
{
	struct ut_drop_key dk = {.reason = reason, .stage = stage};
	__u64 one = 1, *n = bpf_map_lookup_elem(&drops, &dk);

	if (n)
		(*n)++;
	else
		bpf_map_update_elem(&drops, &dk, &one, BPF_NOEXIST);
}

/* End a packet's record; `reason` and `stage` say where a dropped one died. */
static __always_inline void finish(__u64 key, struct ut_pkt_state *s, enum ut_fate fate,
				   __u32 reason, enum ut_stage stage)
{
	struct ut_record *r = &s->rec;
	struct ut_current *cur;

	r->fate = fate;
	if (fate == UT_FATE_LOOPED) {
		COUNT(looped);
	} else if (fate == UT_FATE_SENT) {
		__u64 prev = r->ts[UT_STAGE_SYSCALL];
		__u64 end = r->ts[UT_STAGE_XMIT_DONE] ?: r->ts[UT_STAGE_FREE];

		/* each stage's histogram holds the time since the stage reached before it */
#pragma unroll
		for (int i = 1; i < UT_STAGE_COUNT; i++) {
			__u64 t = r->ts[i];

			if (t && t >= prev) {
				hist_add(i, t - prev);
				prev = t;
			}
		}
		if (end)
			hist_add(UT_HIST_TOTAL, end - r->ts[UT_STAGE_SYSCALL]);
		if (r->flags & UT_F_HANDED_OFF) {
			__u64 head = (__u64)BPF_CORE_READ((struct sk_buff *)key, head);
			struct ut_handoff *h = handoff_slot(head);

			if (h) {
				h->skb = key;
				h->time = r->ts[UT_STAGE_RX_HANDOFF];
				h->head = head;
				h->tail = BPF_CORE_READ((struct sk_buff *)key, tail);
			}
		}
		COUNT(sent);
	} else {
		r->drop_reason = reason;
		r->drop_stage = stage;
		count_drop(reason, stage);
		COUNT(dropped);
	}
	if (cfg.stream && bpf_ringbuf_output(&events, r, sizeof(*r), BPF_RB_NO_WAKEUP))
		COUNT(lost);
	cur = cpu_slot();
	if (cur && cur->skb == key)
		cur->skb = 0;
	else
		bpf_map_delete_elem(&packets, &key);
}

static __always_inline int on_neigh_queued(struct neighbour *n, int rc)
{
	struct sk_buff *skb;
	struct ut_call *call;
	struct ut_pkt_state *s;
	__u64 now, key;

	if (rc != 1) /* 1: the skb was parked on arp_queue awaiting resolution */
		return 0;
	skb = BPF_CORE_READ(n, arp_queue.prev);
	if (!skb || (void *)skb == (void *)&n->arp_queue)
		return 0;
	call = owning_call(skb);
	if (!call)
		return 0;
	now = bpf_ktime_get_ns();
	key = (__u64)skb;
	s = followed(key, now);
	if (s && s->rec.syscall_id == call->id)
		return 0;
	s = begin_packet(key, skb, call, now);
	if (!s)
		return 0;
	s->rec.ts[UT_STAGE_NEIGH_QUEUE] = now;
	s->rec.flags |= UT_F_NEIGH_QUEUED;
	COUNT(neigh_queued);
	spill_if_current(key);
	return 0;
}

static __always_inline int on_dev_queue(struct sk_buff *skb)
{
	__u64 key = (__u64)skb, now = bpf_ktime_get_ns();
	struct ut_call *call = owning_call(skb);
	struct ut_pkt_state *s = followed(key, now);

	if (call) {
		if (!s || s->rec.syscall_id != call->id)
			s = begin_packet(key, skb, call, now);
		if (s)
			reach(&s->rec, UT_STAGE_DEV_QUEUE, now);
		return 0;
	}
	if (!s)
		return 0;
	if ((s->rec.flags & UT_F_NEIGH_QUEUED) && !s->rec.ts[UT_STAGE_DEV_QUEUE]) {
		/* the neighbour resolved: our parked packet leaves, usually from softirq */
		s->rec.ts[UT_STAGE_DEV_QUEUE] = now;
		return 0;
	}
	if (s->rec.ts[UT_STAGE_XMIT_START] && !s->rec.ts[UT_STAGE_XMIT_DONE]) {
		/* a stacked device (vlan, bridge, bond) queues it on its lower device: the wire is there */
		struct net_device *dev = BPF_CORE_READ(skb, dev);

		BPF_CORE_READ_INTO(&s->rec.ifname, dev, name);
		s->rec.ifindex = BPF_CORE_READ(dev, ifindex);
		return 0;
	}
	/* a new packet at the address of one we lost track of: never join the two */
	spill_if_current(key);
	bpf_map_delete_elem(&packets, &key);
	COUNT(expired);
	return 0;
}

static __always_inline int on_stage(struct sk_buff *skb, enum ut_stage stage)
{
	__u64 now = bpf_ktime_get_ns();
	struct ut_pkt_state *s = followed((__u64)skb, now);

	if (s)
		reach(&s->rec, stage, now);
	return 0;
}

/* A queueing qdisc may be run by another CPU: from here the packet lives in the map. */
static __always_inline int on_qdisc_enqueue(struct sk_buff *skb)
{
	on_stage(skb, UT_STAGE_QDISC_ENQUEUE);
	spill_if_current((__u64)skb);
	return 0;
}

/*
 * Multicast to a group this host has joined (IP_MULTICAST_LOOP): the IP layer
 * clones the skb, without its socket, and hands the clone to netif_rx on the
 * sender's own task before the original reaches the device. The copy is its
 * own record, linked to the syscall, ending here.
 */
static __always_inline int on_loopback_copy(__u64 key, struct sk_buff *skb, __u64 now)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ut_call *call = bpf_map_lookup_elem(&calls, &tid);
	struct ut_pkt_state *s;

	if (!call || !call->id || BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type) != PACKET_LOOPBACK)
		return 0;
	s = begin_packet(key, skb, call, now);
	if (!s)
		return 0;
	reach(&s->rec, UT_STAGE_RX_HANDOFF, now);
	finish(key, s, UT_FATE_LOOPED, 0, 0);
	return 0;
}

/* `enqueue`: netif_rx, where a looped copy enters; netif_receive_skb sees it again later */
static __always_inline int on_rx_handoff(struct sk_buff *skb, bool enqueue)
{
	__u64 key = (__u64)skb, now = bpf_ktime_get_ns();
	struct ut_pkt_state *s = followed(key, now);

	if (!s)
		return enqueue ? on_loopback_copy(key, skb, now) : 0;
	reach(&s->rec, UT_STAGE_RX_HANDOFF, now);
	s->rec.flags |= UT_F_HANDED_OFF;
	if (s->rec.ts[UT_STAGE_XMIT_DONE])
		finish(key, s, UT_FATE_SENT, 0, 0);
	return 0;
}

static __always_inline int on_xmit_done(struct sk_buff *skb, int rc)
{
	__u64 key = (__u64)skb, now = bpf_ktime_get_ns();
	struct ut_pkt_state *s = followed(key, now);

	if (!s)
		return 0;
	s->rec.xmit_rc = rc;
	if (rc != NETDEV_TX_OK) /* busy: the qdisc requeues it and tries again */
		return 0;
	reach(&s->rec, UT_STAGE_XMIT_DONE, now);
	/* a NIC still owns the skb until TX completion; a veth/lo has passed it on */
	if (s->rec.flags & UT_F_HANDED_OFF)
		finish(key, s, UT_FATE_SENT, 0, 0);
	else
		spill_if_current(key);
	return 0;
}

static __always_inline int on_free(struct sk_buff *skb, __u32 reason, bool consumed)
{
	__u64 key = (__u64)skb, now = bpf_ktime_get_ns();
	struct ut_pkt_state *s = followed(key, now);
	struct ut_record *r;
	enum ut_stage stage;
	struct ut_handoff *handoff;
	__u64 head;

	if (!s) {
		head = (__u64)BPF_CORE_READ(skb, head);
		handoff = handoff_slot(head);
		if (handoff && handoff->skb == key && handoff->head == head) {
			if (!consumed && now - handoff->time < PEER_WINDOW_NS &&
			    handoff->tail == BPF_CORE_READ(skb, tail)) {
				count_drop(reason, UT_STAGE_RX_HANDOFF);
				COUNT(peer_dropped);
			}
			handoff->skb = 0;
		}
		return 0;
	}
	r = &s->rec;
	if (r->flags & UT_F_HANDED_OFF) {
		/* the receiver freed it before the driver returned (RPS): ours was sent */
		finish(key, s, UT_FATE_SENT, 0, 0);
		return 0;
	}
	if (consumed && r->ts[UT_STAGE_XMIT_START]) {
		reach(r, UT_STAGE_FREE, now);
		finish(key, s, UT_FATE_SENT, 0, 0);
		return 0;
	}
	stage = last_stage(r);
	reach(r, UT_STAGE_FREE, now);
	finish(key, s, UT_FATE_DROPPED, reason, stage);
	return 0;
}

/* ---- hooks: each as tp_btf and as raw_tp ------------------------------------------ */

#define UT_HOOK(tp, name, args, call)                                       \
	SEC("tp_btf/" #tp) int BPF_PROG(ut_btf_##name, args) { return call; }   \
	SEC("raw_tp/" #tp) int BPF_PROG(ut_raw_##name, args) { return call; }

#define ARGS(...) __VA_ARGS__

UT_HOOK(neigh_event_send_done, neigh_queue, ARGS(struct neighbour *n, int rc),
	on_neigh_queued(n, rc))
UT_HOOK(net_dev_queue, dev_queue, ARGS(struct sk_buff *skb), on_dev_queue(skb))
UT_HOOK(qdisc_enqueue, qdisc_enq,
	ARGS(struct Qdisc *q, const struct netdev_queue *txq, struct sk_buff *skb),
	on_qdisc_enqueue(skb))
UT_HOOK(qdisc_dequeue, qdisc_deq,
	ARGS(struct Qdisc *q, const struct netdev_queue *txq, int n, struct sk_buff *skb),
	on_stage(skb, UT_STAGE_QDISC_DEQUEUE))
UT_HOOK(net_dev_start_xmit, xmit_start, ARGS(struct sk_buff *skb),
	on_stage(skb, UT_STAGE_XMIT_START))
UT_HOOK(net_dev_xmit, xmit_done, ARGS(struct sk_buff *skb, int rc), on_xmit_done(skb, rc))
UT_HOOK(netif_rx, netif_rx, ARGS(struct sk_buff *skb), on_rx_handoff(skb, true))
UT_HOOK(netif_receive_skb, netif_recv, ARGS(struct sk_buff *skb), on_rx_handoff(skb, false))
UT_HOOK(consume_skb, consume, ARGS(struct sk_buff *skb), on_free(skb, 0, true))
UT_HOOK(kfree_skb, kfree, ARGS(struct sk_buff *skb, void *location),
	on_free(skb, cfg.kfree_has_reason ? (__u32)ctx[2] : 0, false))
