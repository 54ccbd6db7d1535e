/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The packets the send path follows, by skb address: this CPU's slot for the
 * one being transmitted right now, the shared map for the others, and the
 * record a slot holds for its syscall's return. Under both the syscall layer
 * (which ends a held record at the return) and the send path (which starts,
 * moves and ends packets).
 */
#ifndef UT_PACKET_BPF_H
#define UT_PACKET_BPF_H

#include "ut_common.bpf.h"

/*
 * Entries in `packets`, inserts minus deletes. While it is 0 an skb that is
 * not in this CPU's slot is not followed, and hooks learn it without a lookup.
 * An entry the LRU evicts stays counted: the map is then only looked up.
 */
__u64 states_in_map = 0;

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
	__u64 held;                /* the syscall whose return the record in state awaits; 0: none */
	struct ut_pkt_state state;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_current);
} current_packet SEC(".maps");

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
	/* counted first: a CPU that finds it in the map must not have seen the count at 0 */
	__sync_fetch_and_add(&states_in_map, 1);
	if (bpf_map_update_elem(&packets, &cur->skb, &cur->state, BPF_ANY)) {
		__sync_fetch_and_add(&states_in_map, -1);
		COUNT(state_full);
	}
	cur->skb = 0;
}

static __always_inline void forget(__u64 key)
{
	if (!bpf_map_delete_elem(&packets, &key))
		__sync_fetch_and_add(&states_in_map, -1);
}

/*
 * The record of a syscall's first packet, when it ends inside the syscall in
 * this CPU's slot (sent synchronously), waits there for the syscall's return
 * and leaves with its end: one record, no syscall record (see struct
 * ut_record). It leaves alone when the slot is needed first, or when the
 * thread returns on another CPU (whose return then sends the syscall record).
 */
static __always_inline void release_held(struct ut_current *cur)
{
	if (!cur->held)
		return;
	if (!emit_record(&cur->state.rec))
		COUNT(lost);
	cur->held = 0;
}

/*
 * Syscall `call_id` returned, having made `packets` packets: true when the
 * record held here was its only packet's and now carries the syscall's end.
 */
static __always_inline bool emit_held_at_exit(__u64 call_id, __u16 packets, __u64 now,
					      __s64 ret)
{
	struct ut_current *cur = cpu_slot();
	bool joined;

	if (!cur || !cur->held)
		return false;
	joined = cur->held == call_id && packets == 1;
	if (joined) {
		cur->state.rec.syscall_exit = now;
		cur->state.rec.syscall_ret = ret;
	}
	release_held(cur);
	return joined;
}

/* This CPU's slot, emptied for packet `key`: its packet spills, its held record leaves. */
static __always_inline struct ut_current *claim_slot(__u64 key)
{
	struct ut_current *cur = cpu_slot();

	if (!cur)
		return 0;
	if (cur->skb != key)
		spill(cur);
	cur->skb = 0;
	release_held(cur);
	return cur;
}

/*
 * The state of an skb we follow, or 0; stale states are dropped on sight.
 * `now` is read only for a followed one: the clock costs more than the test.
 */
static __always_inline struct ut_pkt_state *followed(__u64 key, __u64 *now)
{
	struct ut_current *cur = cpu_slot();
	struct ut_pkt_state *s;

	if (cur && cur->skb == key) {
		*now = bpf_ktime_get_ns();
		return &cur->state;
	}
	if (!states_in_map)
		return 0;
	s = bpf_map_lookup_elem(&packets, &key);
	if (!s)
		return 0;
	*now = bpf_ktime_get_ns();
	if (*now - s->last > cfg.max_age_ns) {
		forget(key);
		COUNT(expired);
		return 0;
	}
	s->last = *now;
	return s;
}

/* The packet in this CPU's slot, if that is `key`, moves to the shared map. */
static __always_inline void spill_if_current(__u64 key)
{
	struct ut_current *cur = cpu_slot();

	if (cur && cur->skb == key)
		spill(cur);
}

/*
 * Packet `key` ended with record `r`; `emit` puts the record out. The first
 * packet of a syscall, ending in this CPU's slot on its own thread, is held
 * for the syscall's return instead (see release_held). Its state is gone.
 */
static __always_inline void end_packet(__u64 key, struct ut_record *r, bool emit)
{
	struct ut_current *cur = cpu_slot();
	bool in_slot = cur && cur->skb == key;

	if (emit) {
		if (in_slot && !r->packet_index && r->tid == (__u32)bpf_get_current_pid_tgid())
			cur->held = r->syscall_id;
		else if (!emit_record(r))
			COUNT(lost);
	}
	if (in_slot)
		cur->skb = 0;
	else
		forget(key);
}

#endif /* UT_PACKET_BPF_H */
