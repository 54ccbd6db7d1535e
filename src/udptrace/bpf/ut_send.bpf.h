/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The send path: every UDP datagram from its send syscall to the point where
 * it left the sending device.
 *
 * A packet is tied to its syscall where that is certain: the skb's socket is
 * the socket behind the syscall's fd, seen on the syscall's own task (process
 * context, or a softirq running on that task's stack). From then on the skb
 * address is the key, until the packet ends:
 *   - handed to a receive path (veth, loopback) and the driver returned: sent;
 *   - freed after the driver took it (TX completion on a NIC): sent;
 *   - freed before that: dropped, with the kernel's drop reason.
 * Each hook is written once as a static function and wrapped twice (UT_HOOK).
 */
#ifndef UT_SEND_BPF_H
#define UT_SEND_BPF_H

#include "ut_common.bpf.h"
#include "ut_packet.bpf.h"
#include "ut_syscall.bpf.h"
#include "ut_cycle.bpf.h"
#include "ut_interval.bpf.h"
#include "ut_context.bpf.h"
#include "ut_recv.bpf.h"

/* a peer drops within microseconds; an older entry means we missed a silent free */
#define PEER_WINDOW_NS 1000000000ULL

/* Set at the first veth/lo handoff: before it, no free can be a peer's drop. */
__u32 handoffs_seen = 0;

/*
 * Packets whose send record has ended at a veth/lo handoff: when the peer's
 * receive path frees one with a drop reason (no listener: NO_SOCKET), the drop
 * is counted against the peer, not the send path. Direct-mapped by skb address:
 * no insert or delete per packet; a collision only forgets an older handoff.
 * A freed sk_buff and its data buffer are often both reused at once by the next
 * allocation, so the identity check takes the data buffer and its end too.
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

/* Where a number is put down and read back: see as_number. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} number_scratch SEC(".maps");

/*
 * A kernel object's address as a plain number: the verifier allows no
 * arithmetic on a typed pointer (tp_btf), and what map memory holds comes back
 * as a number.
 */
static __always_inline __u64 as_number(__u64 address)
{
	__u32 zero = 0;
	volatile __u64 *cell = bpf_map_lookup_elem(&number_scratch, &zero);

	if (!cell)
		return 0;
	*cell = address;
	return *cell;
}

static __always_inline struct ut_handoff *handoff_slot(__u64 skb)
{
	__u32 slot = ((as_number(skb) * 0x9E3779B97F4A7C15ULL) >> 52) & (HANDOFF_SLOTS - 1);

	return bpf_map_lookup_elem(&handed_off, &slot);
}

/*
 * Fill the packet fields of a record from the skb's headers. False when the
 * packet is not UDP or the filters exclude it.
 */
static __always_inline bool describe_packet(struct sk_buff *skb, struct ut_call *call,
					    struct ut_record *r)
{
	unsigned char *head = UT_READ(skb, head);
	__u32 nh = UT_READ(skb, network_header);
	struct net_device *dev = UT_READ(skb, dev);
	struct net *net;
	__u32 l4 = 0;
	bool first_fragment = true;

	if (!parse_ip_udp(head, nh, r, &l4, &first_fragment))
		return false;

	/* histogram mode without port filters needs none of what follows but the checks */
	if (!cfg.stream && !cfg.intervals && !cfg.e2e && !cfg.filter_port && !cfg.netns &&
	    !cfg.ifname[0])
		return true;
	if (first_fragment) {
		call->sport = r->sport;
		call->dport = r->dport;
	} else { /* only the first fragment carries the UDP header */
		r->sport = call->sport;
		r->dport = call->dport;
	}

	if (!endpoints_wanted(r))
		return false;

	net = UT_READ(dev, nd_net.net);
	r->netns = UT_READ(net, ns.inum);
	if (cfg.netns && r->netns != cfg.netns)
		return false;
	if (cfg.typed)
		__builtin_memcpy(r->ifname, dev->name, sizeof(r->ifname));
	else
		BPF_CORE_READ_INTO(&r->ifname, dev, name);
	if (cfg.ifname[0] && !same_name16(r->ifname, cfg.ifname))
		return false;
	r->ifindex = UT_READ(dev, ifindex);
	r->len = UT_READ(skb, len);

	if (cfg.stream && first_fragment)
		describe_payload(head, l4, UT_READ(skb, tail), r);
	describe_frame(skb, r);
	return true;
}

/* UDP GSO (UDP_SEGMENT): one skb that the device, or the stack just before it, cuts into
 * gso_segs datagrams of gso_size payload bytes. */
static __always_inline void describe_gso(struct sk_buff *skb, struct ut_record *r)
{
	unsigned char *head = UT_READ(skb, head);
	struct skb_shared_info *shinfo = (void *)(head + UT_READ(skb, end));

	r->gso_size = BPF_CORE_READ(shinfo, gso_size);
	if (r->gso_size)
		r->gso_segs = BPF_CORE_READ(shinfo, gso_segs);
}

/* Start following an skb of a traced syscall in this CPU's slot; returns its state or 0. */
static __always_inline struct ut_pkt_state *begin_packet(__u64 key, struct sk_buff *skb,
							 struct ut_call *call, __u64 now)
{
	struct ut_current *cur = claim_slot(key);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ut_record *r;

	if (!cur)
		return 0;
	r = &cur->state.rec;
	__builtin_memset(r, 0, sizeof(*r));
	describe_gso(skb, r);
	if (!describe_packet(skb, call, r))
		return 0;
	r->kind = UT_KIND_PACKET;
	r->ts[UT_STAGE_APP] = call->app;
	r->ts[UT_STAGE_SYSCALL] = call->entry;
#pragma unroll
	for (int i = 0; i < UT_FUNCTION_STAGES; i++)
		r->ts[UT_STAGE_UDP_SENDMSG + i] = call->function_ts[i];
	if (call->output_skb != key) /* a looped-back copy, or a fragment seen by no ip_output */
		r->ts[UT_STAGE_IP_OUTPUT] = 0;
	r->syscall_id = call->id;
	r->syscall = call->syscall;
	r->pid = pid_tgid >> 32;
	r->tid = (__u32)pid_tgid;
	r->cpu = bpf_get_smp_processor_id();
	if (cfg.stream)
		bpf_get_current_comm(r->comm, sizeof(r->comm));
	describe_txtime(skb, r);
	if (cfg.wakeup)
		wake_describe(r);
	if (cfg.intervals && !call->packets) {
		/* one send is one syscall, however many datagrams or fragments it makes */
		struct ut_flow_key flow = {.id = call->sk, .tgid = r->pid, .kind = UT_FLOW_SOCKET};

		r->interval_ns = interval_note(&flow, call->entry);
		interval_describe(&flow, r);
	}
	r->packet_index = call->packets++;
	cur->state.last = now;
	cur->skb = key;
	COUNT(packets);
	return &cur->state;
}

/* End a packet's record; `reason` and `stage` say where a dropped one died. */
static __always_inline void finish(__u64 key, struct ut_pkt_state *s, enum ut_fate fate,
				   __u32 reason, enum ut_stage stage)
{
	struct sk_buff *skb = (struct sk_buff *)key;
	struct ut_record *r = &s->rec;

	r->fate = fate;
	if (fate == UT_FATE_LOOPED) {
		COUNT(looped);
	} else if (fate == UT_FATE_SENT) {
		add_stage_hists(r, 0);
		add_sent_spans(r);
		if ((r->flags & UT_F_HANDED_OFF) && !cfg.e2e) {
			__u64 head = (__u64)UT_READ(skb, head);
			struct ut_handoff *h = handoff_slot(key);

			if (h) {
				h->skb = key;
				h->time = r->ts[UT_STAGE_RX_HANDOFF];
				h->head = head;
				h->tail = UT_READ(skb, tail);
				if (!handoffs_seen)
					handoffs_seen = 1;
			}
		}
		count_contexts(r);
		COUNT(sent);
		COUNT_ADD(datagrams, r->gso_segs ?: 1);
	} else {
		r->drop_reason = reason;
		r->drop_stage = stage;
		count_drop(reason, stage);
		COUNT(dropped);
	}
	/* with --e2e a packet handed to a receive path here goes on there, its record too
	 * (but a later fragment: its datagram's record is the first fragment's) */
	end_packet(key, r, cfg.stream && !(cfg.e2e && (r->flags & UT_F_HANDED_OFF) &&
					   fate != UT_FATE_DROPPED && !later_fragment(r)));
}

/*
 * Packets parked on a neighbour entry awaiting ARP/ND. Usually the syscall
 * returns first and neigh_event_send_done finds the packet at the queue's
 * tail. When the peer answers at once (a veth), the answer is processed, and
 * the queue flushed, before that tracepoint fires: neigh_update, at the start
 * of the answer's processing, still sees the packet queued. Its parking time
 * is then the entry's creation, which the first packet to a host triggers.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);        /* struct neighbour address */
	__type(value, __u64);      /* when it was created */
} neigh_created SEC(".maps");

static __noinline void tie_parked(struct sk_buff *skb, __u64 parked, __u64 now)
{
	struct ut_call *call = owning_call(skb);
	__u64 key = (__u64)skb, seen;
	struct ut_pkt_state *s;

	if (!call)
		return;
	s = followed(key, &seen);
	if (s && s->rec.syscall_id == call->id)
		return;
	s = begin_packet(key, skb, call, now);
	if (!s)
		return;
	s->rec.ts[UT_STAGE_NEIGH_PARKED] = parked;
	s->rec.flags |= UT_F_NEIGH_QUEUED;
	COUNT(neigh_queued);
	spill_if_current(key);
}

static __always_inline int on_neigh_queued(struct neighbour *n, int rc)
{
	struct sk_buff *skb;
	__u64 now;

	if (rc != 1) /* 1: the skb was parked on arp_queue awaiting resolution */
		return 0;
	skb = UT_READ(n, arp_queue.prev);
	if (!skb || (void *)skb == (void *)&n->arp_queue)
		return 0;
	now = bpf_ktime_get_ns();
	tie_parked(skb, now, now);
	return 0;
}

static __always_inline int on_neigh_create(struct neighbour *n)
{
	__u64 key = (__u64)n, now = bpf_ktime_get_ns();

	bpf_map_update_elem(&neigh_created, &key, &now, BPF_ANY);
	return 0;
}

static __always_inline int on_neigh_update(struct neighbour *n)
{
	struct sk_buff *skb = UT_READ(n, arp_queue.next);
	__u64 key = (__u64)n, now = bpf_ktime_get_ns(), *created;

	created = bpf_map_lookup_elem(&neigh_created, &key);
	for (int i = 0; i < 4; i++) { /* a bounded loop: the verifier checks every turn */
		if (!skb || (void *)skb == (void *)&n->arp_queue)
			break;
		tie_parked(skb, created ? *created : now, now);
		skb = UT_READ(skb, next);
	}
	return 0;
}

/*
 * A UDP packet of a traced process that no traced send owns (an io_uring
 * request punted to a worker thread, a send path we do not hook): counted, so
 * it is never silently absent.
 */
static __always_inline void count_unattributed(struct sk_buff *skb)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sock *sk;

	if (!may_be_traced(pid_tgid))
		return;
	sk = UT_READ(skb, sk);
	if (!sk || UT_READ(sk, sk_protocol) != IPPROTO_UDP)
		return;
	if (process_wanted(pid_tgid >> 32))
		COUNT(unattributed);
}

/*
 * A parked packet reaches the device queue once its neighbour resolved: from
 * softirq later, or at once within its syscall when the peer answers straight
 * away (a veth). Either way the wait is the neigh_queue stage's own.
 */
static __always_inline void neigh_released(struct ut_pkt_state *s, struct sk_buff *skb,
					   __u64 now)
{
	if (!(s->rec.flags & UT_F_NEIGH_QUEUED))
		return;
	reach(&s->rec, UT_STAGE_NEIGH_QUEUE, now);
	/* parked before its link header was added */
	s->rec.len = UT_READ(skb, len);
	describe_frame(skb, &s->rec);
}

static __always_inline int on_dev_queue(struct sk_buff *skb)
{
	__u64 key = (__u64)skb, now = 0;
	struct ut_call *call = owning_call(skb);
	struct ut_pkt_state *s = followed(key, &now);

	if (call) {
		if (!now)
			now = bpf_ktime_get_ns();
		if (!s || s->rec.syscall_id != call->id)
			s = begin_packet(key, skb, call, now);
		if (s) {
			neigh_released(s, skb, now);
			reach(&s->rec, UT_STAGE_DEV_QUEUE, now);
		}
		return 0;
	}
	if (!s) {
		count_unattributed(skb);
		return 0;
	}
	if ((s->rec.flags & UT_F_NEIGH_QUEUED) && !s->rec.ts[UT_STAGE_DEV_QUEUE]) {
		neigh_released(s, skb, now);
		s->rec.ts[UT_STAGE_DEV_QUEUE] = now;
		return 0;
	}
	if (s->rec.ts[UT_STAGE_XMIT_START] && !s->rec.ts[UT_STAGE_XMIT_DONE]) {
		/* a stacked device (vlan, bridge, bond) queues it on its lower device: the wire is there */
		struct net_device *dev = UT_READ(skb, dev);

		BPF_CORE_READ_INTO(&s->rec.ifname, dev, name);
		s->rec.ifindex = UT_READ(dev, ifindex);
		describe_frame(skb, &s->rec); /* with the lower device's link header (a VLAN tag) */
		return 0;
	}
	/* a new packet at the address of one we lost track of: never join the two */
	spill_if_current(key);
	forget(key);
	COUNT(expired);
	return 0;
}

static __always_inline int on_stage(struct sk_buff *skb, enum ut_stage stage)
{
	__u64 now;
	struct ut_pkt_state *s = followed((__u64)skb, &now);

	if (s)
		reach(&s->rec, stage, now);
	return 0;
}

/* The driver is called: directly by the sender, or from a softirq (step 7). */
static __always_inline int on_xmit_start(struct sk_buff *skb)
{
	__u64 now;
	struct ut_pkt_state *s = followed((__u64)skb, &now);
	struct ut_record *r;

	if (!s)
		return 0;
	r = &s->rec;
	reach(r, UT_STAGE_XMIT_START, now);
	/* the latest call counts: a busy driver's packet is retried from the qdisc */
	r->softirq_pending_ns = 0;
	r->xmit_context = cpu_context(r->tid, &r->softirq_pending_ns, &r->xmit_thread);
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
static __always_inline int on_loopback_copy(__u64 key, struct sk_buff *skb)
{
	struct ut_call *call = call_in_flight();
	struct ut_pkt_state *s;
	__u32 pkt_type;
	__u64 now;

	if (!call)
		return 0;
	pkt_type = cfg.typed ? BPF_CORE_READ_BITFIELD(skb, pkt_type) :
			       BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type);
	if (pkt_type != PACKET_LOOPBACK)
		return 0;
	now = bpf_ktime_get_ns();
	s = begin_packet(key, skb, call, now);
	if (!s)
		return 0;
	reach(&s->rec, UT_STAGE_RX_HANDOFF, now);
	if (cfg.e2e) {
		s->rec.flags |= UT_F_HANDED_OFF;
		rx_continue(s, skb);
	}
	finish(key, s, UT_FATE_LOOPED, 0, 0);
	return 0;
}

/* `enqueue`: netif_rx, where a looped copy enters; netif_receive_skb sees it again later */
static __always_inline int on_rx_handoff(struct sk_buff *skb, bool enqueue)
{
	__u64 key = (__u64)skb, now;
	struct ut_pkt_state *s = followed(key, &now);

	if (!s)
		return enqueue ? on_loopback_copy(key, skb) : 0;
	reach(&s->rec, UT_STAGE_RX_HANDOFF, now);
	s->rec.flags |= UT_F_HANDED_OFF;
	if (cfg.e2e)
		rx_continue(s, skb);
	if (s->rec.ts[UT_STAGE_XMIT_DONE])
		finish(key, s, UT_FATE_SENT, 0, 0);
	return 0;
}

static __always_inline int on_xmit_done(struct sk_buff *skb, int rc)
{
	__u64 key = (__u64)skb, now;
	struct ut_pkt_state *s = followed(key, &now);

	if (!s)
		return 0;
	s->rec.xmit_rc = rc;
	if (rc != NETDEV_TX_OK) /* busy: the qdisc requeues it and tries again */
		return 0;
	take_tx_tstamp(skb, &s->rec, now);
	reach(&s->rec, UT_STAGE_XMIT_DONE, now);
	/* a NIC still owns the skb until TX completion; a veth/lo has passed it on */
	if (s->rec.flags & UT_F_HANDED_OFF) {
		if (cfg.e2e)
			rx_note_xmit_done(skb, now);
		finish(key, s, UT_FATE_SENT, 0, 0);
	}
	else
		spill_if_current(key);
	return 0;
}

static __always_inline int on_free(struct sk_buff *skb, __u32 reason, bool consumed)
{
	__u64 key = (__u64)skb, now;
	struct ut_pkt_state *s = followed(key, &now);
	struct ut_record *r;
	enum ut_stage stage;
	struct ut_handoff *handoff;
	__u64 head;

	if (!s) {
		if (!handoffs_seen)
			return 0;
		handoff = handoff_slot(key);
		head = (__u64)UT_READ(skb, head);
		if (handoff && handoff->skb == key && handoff->head == head) {
			if (!consumed && bpf_ktime_get_ns() - handoff->time < PEER_WINDOW_NS &&
			    handoff->tail == UT_READ(skb, tail)) {
				count_drop(reason, UT_STAGE_RX_HANDOFF);
				COUNT(peer_dropped);
			}
			handoff->skb = 0;
		}
		return 0;
	}
	r = &s->rec;
	take_tx_tstamp(skb, r, now); /* a NIC's own stamp comes with its TX completion */
	if (r->flags & UT_F_HANDED_OFF) {
		/* the receiver freed it before the driver returned (RPS): ours was sent */
		finish(key, s, UT_FATE_SENT, 0, 0);
		return 0;
	}
	if (consumed && r->ts[UT_STAGE_XMIT_START]) {
		__u64 unused;

		/* the TX completion (step 8): a NAPI poll, a deferred free, the next send... */
		reach(r, UT_STAGE_FREE, now);
		r->completion_context = cpu_context(r->tid, &unused, &r->completion_thread);
		finish(key, s, UT_FATE_SENT, 0, 0);
		return 0;
	}
	stage = last_stage(r);
	reach(r, UT_STAGE_FREE, now);
	finish(key, s, UT_FATE_DROPPED, reason, stage);
	return 0;
}

#endif /* UT_SEND_BPF_H */
