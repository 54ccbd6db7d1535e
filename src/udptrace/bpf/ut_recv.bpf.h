/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The receive path: from the driver (or a veth/lo handoff) through the stack
 * and a socket's queue to the reader's receive syscall.
 *
 * Until a datagram reaches a socket it is keyed by its data buffer (skb->head):
 * the stack may clone the skb (a packet tap makes it shared; multicast gives
 * each member socket its own clone) and every clone shares that buffer. A
 * multicast copy looped back to the sender's own members shares it too, so the
 * key tells that copy (PACKET_LOOPBACK) from the one on the wire. (UDP reuses
 * skb->dev as scratch once it queues a datagram: no device field is usable
 * after that.) On a
 * socket's queue each copy becomes one record keyed by its skb, so multicast
 * to two local members gives two records. A reader's copy moves the record to
 * its thread until the receive syscall returns.
 *
 * Entry points: --rx follows every UDP datagram a receive path sees; --e2e
 * continues a followed send into this host's receive path (veth, loopback, a
 * multicast copy looped back to a local member).
 */
#ifndef UT_RECV_BPF_H
#define UT_RECV_BPF_H

#include "ut_common.bpf.h"

/* One datagram on its way to a socket. */
struct ut_rx_datagram {
	struct ut_pkt_state state;
	__u64 skb;                 /* the skb that carries it; clones for other sockets differ;
				      0: the datagram its fragments were reassembled into */
	__u32 delivered;           /* sockets it was queued on so far */
};

/*
 * IP fragments: the first fragment's state is the datagram's. Reassembly makes
 * the skb of the fragment that completes the datagram its skb, with the first
 * fragment's data buffer (skb_morph, which marks both cloned), and frees the
 * first fragment's own skb: the state goes on. The later fragments are not
 * followed: their buffers are freed with the datagram (on 6.1 as drops with no
 * reason), and a state of theirs left behind would take the next datagram to
 * reuse the buffer for one of them.
 */
static __always_inline bool later_fragment(struct ut_record *r)
{
	return (r->flags & UT_F_FRAGMENT) && !r->udp_len;
}

struct ut_rx_key {
	__u64 head;
	__u32 looped;              /* the multicast copy looped back to the sender's host */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct ut_rx_key);
	__type(value, struct ut_rx_datagram);
} rx_datagrams SEC(".maps");

/* A socket's FIFO of queued records: seq in [head, tail). */
struct ut_rx_socket {
	__u64 head;
	__u64 tail;
	__u64 last_skb;            /* the newest skb queued: where the next walk back stops */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);        /* struct sock address */
	__type(value, struct ut_rx_socket);
} rx_sockets SEC(".maps");

struct ut_rx_slot {
	__u64 sk;
	__u64 seq;
};

/* Copies queued on a socket, not yet read. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct ut_rx_slot);
	__type(value, struct ut_pkt_state);
} rx_queued SEC(".maps");

/* What a thread's receive syscall has read so far; it ends at the syscall's return. */
struct ut_rx_reads {
	__u64 recvmsg_entry;       /* the thread's latest udp_recvmsg entry (fentry/kprobe) */
	__u32 count;
	__u32 pad;
	struct ut_record recs[UT_RX_BATCH];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);        /* tid */
	__type(value, struct ut_rx_reads);
} rx_reads SEC(".maps");

/* Never written: the zeroed value a thread's first read starts from. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_rx_reads);
} rx_reads_blank SEC(".maps");

/* Fresh state is built here: it is too large for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_rx_datagram);
} rx_scratch SEC(".maps");

static __always_inline struct ut_rx_datagram *rx_blank(void)
{
	__u32 zero = 0;
	struct ut_rx_datagram *d = bpf_map_lookup_elem(&rx_scratch, &zero);

	if (d)
		__builtin_memset(d, 0, sizeof(*d));
	return d;
}

static __always_inline struct ut_rx_key rx_key(struct sk_buff *skb)
{
	struct ut_rx_key key = {
		.head = (__u64)BPF_CORE_READ(skb, head),
		.looped = BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type) == PACKET_LOOPBACK,
	};

	return key;
}

/* The datagram this skb (or a clone of it) carries, if followed; stale ones are dropped. */
static __always_inline struct ut_rx_datagram *rx_datagram(struct ut_rx_key *key, __u64 now)
{
	struct ut_rx_datagram *d = bpf_map_lookup_elem(&rx_datagrams, key);

	if (d && now - d->state.last > cfg.max_age_ns) {
		bpf_map_delete_elem(&rx_datagrams, key);
		COUNT(rx_expired);
		return 0;
	}
	if (d)
		d->state.last = now;
	return d;
}

static __always_inline void rx_describe_device(struct sk_buff *skb, struct ut_record *r)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);

	r->rx_netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	r->rx_ifindex = BPF_CORE_READ(dev, ifindex);
	BPF_CORE_READ_INTO(&r->rx_ifname, dev, name);
}

/* A followed send continues here (--e2e): from now on it is a datagram on a receive path. */
static __always_inline void rx_continue(struct ut_pkt_state *sent, struct sk_buff *skb)
{
	struct ut_rx_datagram *d = rx_blank();
	struct ut_rx_key key = rx_key(skb);

	if (!d || later_fragment(&sent->rec))
		return;
	d->state = *sent;
	d->state.rec.flags |= UT_F_RECEIVE;
	d->skb = (__u64)skb;
	rx_describe_device(skb, &d->state.rec);
	/* whatever a reused buffer held before is over: the traced send takes its place */
	if (!bpf_map_update_elem(&rx_datagrams, &key, d, BPF_ANY))
		COUNT(rx_datagrams);
}

/*
 * --rx: start following a UDP datagram the receive path sees for the first time.
 * Its IP header is at skb->data here (the driver pulled the link header).
 */
static __always_inline struct ut_rx_datagram *rx_begin(struct sk_buff *skb,
							struct ut_rx_key *key, __u64 now)
{
	struct ut_rx_datagram *d = rx_blank();
	unsigned char *base = (unsigned char *)key->head;
	struct ut_record *r;
	__u32 l4 = 0;
	bool first;

	if (!d)
		return 0;
	r = &d->state.rec;
	if (!parse_ip_udp(base, BPF_CORE_READ(skb, data) - base, r, &l4, &first) || !first)
		return 0;
	rx_describe_device(skb, r);
	/* --e2e follows every datagram, so sockets' queues stay in step: the filters are the
	 * sender's, and a traced send's datagram comes with its record (rx_continue) */
	if (cfg.rx) {
		if (!endpoints_wanted(r))
			return 0;
		if (cfg.netns && r->rx_netns != cfg.netns)
			return 0;
		if (cfg.ifname[0] && !same_name16(r->rx_ifname, cfg.ifname))
			return 0;
		if (cfg.stream)
			describe_payload(base, l4, BPF_CORE_READ(skb, tail), r);
		describe_frame(skb, r);
	}
	r->kind = UT_KIND_PACKET;
	r->flags |= UT_F_RECEIVE;
	r->len = BPF_CORE_READ(skb, len);
	r->netns = r->rx_netns;
	r->ifindex = r->rx_ifindex;
	__builtin_memcpy(r->ifname, r->rx_ifname, sizeof(r->ifname));
	d->state.last = now;
	d->skb = (__u64)skb;
	if (bpf_map_update_elem(&rx_datagrams, key, d, BPF_NOEXIST))
		return 0;
	if (cfg.rx)
		COUNT(rx_datagrams);
	return bpf_map_lookup_elem(&rx_datagrams, key);
}

/* A receive-path stage: netif_rx/NAPI (the driver) and netif_receive_skb (the stack). */
static __always_inline void on_rx_stage(struct sk_buff *skb, enum ut_stage stage)
{
	struct ut_rx_key key = rx_key(skb);
	__u64 now = bpf_ktime_get_ns();
	struct ut_rx_datagram *d = rx_datagram(&key, now);

	if (!d)
		d = rx_begin(skb, &key, now);
	if (!d)
		return;
	/* a send continuing here entered at the handoff, which is this receive's driver step */
	if (stage == UT_STAGE_RX_DRIVER && d->state.rec.ts[UT_STAGE_RX_HANDOFF])
		return;
	reach(&d->state.rec, stage, now);
}

/* --e2e: the sending driver returned after the peer took the datagram. */
static __always_inline void rx_note_xmit_done(struct sk_buff *skb, __u64 now)
{
	struct ut_rx_key key = rx_key(skb);
	struct ut_rx_datagram *d = bpf_map_lookup_elem(&rx_datagrams, &key);

	if (d && d->skb == (__u64)skb)
		reach(&d->state.rec, UT_STAGE_XMIT_DONE, now);
}

/*
 * End a receive record: received, or dropped (with the reason and the stage
 * reached). Under --e2e a datagram no traced send made was followed only to
 * keep its socket's FIFO in step: it ends silently.
 */
static __always_inline void rx_finish(struct ut_record *r, enum ut_fate fate, __u32 reason)
{
	if (cfg.e2e && !r->syscall_id)
		return;
	r->fate = fate;
	if (fate == UT_FATE_RECEIVED) {
		add_stage_hists(r, UT_STAGE_RX_DRIVER);
		add_received_spans(r);
		COUNT(received);
	} else {
		r->drop_reason = reason;
		r->drop_stage = last_stage(r);
		count_drop(reason, r->drop_stage);
		COUNT(rx_dropped);
	}
	if (cfg.stream && !emit_record(r))
		COUNT(lost);
}

/* Append one datagram's copy, carried by `skb`, to a socket's FIFO. */
static __noinline void rx_enqueue(struct ut_rx_socket *q, __u64 sk, struct sk_buff *skb,
				       __u64 seq, __u64 now)
{
	struct ut_rx_key dkey = rx_key(skb);
	struct ut_rx_datagram *d = rx_datagram(&dkey, now);
	struct ut_rx_slot slot = {.sk = sk, .seq = seq};

	if (!d)
		return;
	reach(&d->state.rec, UT_STAGE_SOCK_QUEUE, now);
	if (!bpf_map_update_elem(&rx_queued, &slot, &d->state, BPF_ANY)) {
		d->delivered++;
		if (!cfg.e2e || d->state.rec.syscall_id)
			COUNT(queued);
	}
	/* the next socket's copy gets its own times */
	d->state.rec.ts[UT_STAGE_UDP_QUEUE] = 0;
	d->state.rec.ts[UT_STAGE_SOCK_QUEUE] = 0;
	/* the original goes to the last socket: no more copies (a reassembled datagram: one) */
	if (d->skb == (__u64)skb || !d->skb)
		bpf_map_delete_elem(&rx_datagrams, &dkey);
}

/*
 * sk_data_ready: skbs were just queued on the socket (one, or a batch: on
 * 6.18 concurrent producers share one wake-up). They are the newest ones: back
 * from the tail while they carry a datagram not yet queued (a unicast one
 * leaves rx_datagrams when queued; a multicast clone stays until its original
 * is, so the newest skb queued last time also stops the walk), up to a batch;
 * then queued oldest first. An skb's address alone cannot stop the walk: the
 * next skb often reuses the address of the one just read.
 */
static __always_inline void on_sock_queue(struct sock *sk)
{
	struct sk_buff *list = (struct sk_buff *)&sk->sk_receive_queue, *skb, *oldest = 0;
	struct ut_rx_socket fresh = {}, *q;
	__u64 now = bpf_ktime_get_ns(), key = (__u64)sk, seen = 0;
	struct ut_rx_datagram *d;
	struct ut_rx_key dkey;
	int n = 0;

	skb = BPF_CORE_READ(sk, sk_receive_queue.prev);
#pragma unroll
	for (int i = 0; i < UT_RX_BATCH; i++) {
		if (!skb || skb == list)
			break;
		dkey = rx_key(skb);
		d = rx_datagram(&dkey, now);
		if (!d || (d->delivered && (__u64)skb == seen))
			break;
		if (!i) {
			q = bpf_map_lookup_elem(&rx_sockets, &key);
			seen = q ? q->last_skb : 0;
		}
		oldest = skb;
		n++;
		skb = BPF_CORE_READ(skb, prev);
	}
	if (!n)
		return;
	q = bpf_map_lookup_elem(&rx_sockets, &key);
	if (!q) {
		bpf_map_update_elem(&rx_sockets, &key, &fresh, BPF_NOEXIST);
		q = bpf_map_lookup_elem(&rx_sockets, &key);
		if (!q)
			return;
	}
	q->last_skb = (__u64)BPF_CORE_READ(sk, sk_receive_queue.prev);
#pragma unroll
	for (int i = 0; i < UT_RX_BATCH; i++) { /* oldest first */
		if (i >= n || !oldest)
			break;
		rx_enqueue(q, key, oldest, q->tail++, now);
		oldest = BPF_CORE_READ(oldest, next);
	}
}

/* The reader's process, as the record's receiver; false when -p/-c exclude it (--rx). */
static __always_inline bool rx_reader(struct ut_record *r)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!cfg.e2e && !process_wanted(pid_tgid >> 32))
		return false;
	r->rx_pid = pid_tgid >> 32;
	r->rx_tid = (__u32)pid_tgid;
	r->rx_cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(r->rx_comm, sizeof(r->rx_comm));
	return true;
}

/* The thread's pending reads, made on first use. */
static __always_inline struct ut_rx_reads *thread_reads(__u32 tid)
{
	struct ut_rx_reads *reads = bpf_map_lookup_elem(&rx_reads, &tid);
	__u32 zero = 0;

	if (!reads) {
		struct ut_rx_reads *blank = bpf_map_lookup_elem(&rx_reads_blank, &zero);

		if (blank)
			bpf_map_update_elem(&rx_reads, &tid, blank, BPF_NOEXIST);
		reads = bpf_map_lookup_elem(&rx_reads, &tid);
	}
	return reads;
}

/*
 * sock_recv_length: a recvmsg on `sk` returned `ret` bytes. Unless it only
 * peeked, it took the oldest datagram of the socket's queue.
 */
#define MSG_PEEK 2

static __always_inline void on_sock_read(struct sock *sk, int ret, int flags)
{
	__u64 key = (__u64)sk, now;
	struct ut_rx_socket *q;
	struct ut_pkt_state *s;
	struct ut_rx_reads *reads;
	struct ut_rx_slot slot;
	__u32 n;

	if (ret < 0 || (flags & MSG_PEEK))
		return;
	q = bpf_map_lookup_elem(&rx_sockets, &key);
	if (!q || q->head >= q->tail)
		return;
	now = bpf_ktime_get_ns();
	slot.sk = key;
	slot.seq = q->head++;
	s = bpf_map_lookup_elem(&rx_queued, &slot);
	if (!s)
		return;
	reach(&s->rec, UT_STAGE_RX_READ, now);
	reads = thread_reads((__u32)bpf_get_current_pid_tgid());
	if (reads && reads->recvmsg_entry) {
		/* a reader already waiting came for it the moment it was queued */
		s->rec.ts[UT_STAGE_UDP_RECVMSG] = reads->recvmsg_entry > s->rec.ts[UT_STAGE_SOCK_QUEUE] ?
			reads->recvmsg_entry : s->rec.ts[UT_STAGE_SOCK_QUEUE];
		reads->recvmsg_entry = 0;
	}
	if (rx_reader(&s->rec)) {
		if (reads) {
			n = reads->count;
			if (n >= UT_RX_BATCH) { /* more than a batch in one syscall: ends at its read */
				rx_finish(&s->rec, UT_FATE_RECEIVED, 0);
			} else {
				reads->recs[n] = s->rec;
				reads->count = n + 1;
			}
		}
	}
	bpf_map_delete_elem(&rx_queued, &slot);
}

/* A receive syscall returned: everything the thread read in it is received. */
static __always_inline int rx_syscall_exit(enum ut_syscall syscall, __s64 ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ut_rx_reads *reads = bpf_map_lookup_elem(&rx_reads, &tid);
	__u64 now;

	if (!reads || !reads->count)
		return 0;
	now = bpf_ktime_get_ns();
#pragma unroll
	for (int i = 0; i < UT_RX_BATCH; i++) {
		if (i >= reads->count)
			break;
		reads->recs[i].ts[UT_STAGE_RX_DONE] = now;
		reads->recs[i].rx_syscall = syscall;
		reads->recs[i].rx_ret = ret;
		rx_finish(&reads->recs[i], UT_FATE_RECEIVED, 0);
	}
	reads->count = 0;
	return 0;
}

/*
 * A free on the receive path, before a socket queued the datagram: it dies
 * here with the kernel's reason (NO_SOCKET, SOCKET_RCVBUFF, UDP_CSUM, ...).
 * A clone is one socket's copy; the original is the datagram itself.
 */
static __always_inline void on_rx_free(struct sk_buff *skb, __u32 reason, bool consumed)
{
	struct ut_rx_key dkey = rx_key(skb);
	struct ut_rx_datagram *d = bpf_map_lookup_elem(&rx_datagrams, &dkey);

	if (!d)
		return;
	if (d->skb != (__u64)skb && d->skb) {
		if (!consumed) { /* one socket's clone was dropped; the others go on */
			struct ut_rx_datagram *copy = rx_blank();

			if (copy) {
				copy->state.rec = d->state.rec;
				rx_finish(&copy->state.rec, UT_FATE_DROPPED, reason);
			}
		}
		return;
	}
	if (consumed) {
		if (d->skb && (d->state.rec.flags & UT_F_FRAGMENT) &&
		    BPF_CORE_READ_BITFIELD_PROBED(skb, cloned)) {
			d->skb = 0; /* reassembled: the datagram goes on in another skb */
			return;
		}
		/*
		 * Taken by no socket here (forwarded, or a tap's original whose clone went
		 * on): over. A tap frees its original only after the clone was delivered.
		 */
		bpf_map_delete_elem(&rx_datagrams, &dkey);
		return;
	}
	rx_finish(&d->state.rec, UT_FATE_DROPPED, reason);
	bpf_map_delete_elem(&rx_datagrams, &dkey);
}

#endif /* UT_RECV_BPF_H */
