/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What every part of the tracer shares, the layer under all of them: the
 * configuration, the output (the ring buffer of records, counters,
 * histograms, drops), the filters, parsing a packet's headers, and the
 * wrappers hooks are written with.
 */
#ifndef UT_COMMON_BPF_H
#define UT_COMMON_BPF_H

#include "ut_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "ut_record.h"
#include "ut_hist.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_UDP 17
#define IPV6_FRAGMENT 44
#define NETDEV_TX_OK 0
#define PACKET_LOOPBACK 5

const volatile struct ut_config cfg = {};

/*
 * A field of a kernel object a hook was handed, or reached from one: a plain
 * load when every hook is tp_btf (the verifier knows the pointer's type and
 * guards the load), else a probe read (raw_tp), which costs more here than the
 * rest of a hook that finds nothing to do. cfg.typed is a constant to the
 * verifier: it never checks the side not taken.
 */
#define UT_READ(p, field) (cfg.typed ? (p)->field : BPF_CORE_READ(p, field))

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

struct ut_pkt_state {
	struct ut_record rec;
	__u64 last;                /* time of the latest event, to spot stale entries */
};

static __always_inline struct ut_counters *counts(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&counters, &zero);
}

#define COUNT_ADD(field, n)                            \
	do {                                               \
		struct ut_counters *c__ = counts();            \
		if (c__)                                       \
			c__->field += (n);                         \
	} while (0)

#define COUNT(field) COUNT_ADD(field, 1)

/* Into the report's histogram `slot`: a stage, or UT_STAGE_COUNT + a span. */
static __always_inline void hist_add(__u32 slot, __u64 value)
{
	hist_put(bpf_map_lookup_elem(&hists, &slot), value);
}

#define SPAN_SLOT(span) (UT_STAGE_COUNT + (span))
/* these enums appear in no field; this keeps them in the BTF that Python reads */
const enum ut_span *ut_span_in_btf __attribute__((unused));
const enum ut_role *ut_role_in_btf __attribute__((unused));
const enum ut_limits *ut_limits_in_btf __attribute__((unused));

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

/*
 * False for a task that -p rules out, told without a lookup when one pid is
 * traced: every hook asks first, so what udptrace does not follow pays little.
 */
static __always_inline bool may_be_traced(__u64 pid_tgid)
{
	return !cfg.only_pid || pid_tgid >> 32 == cfg.only_pid;
}

/* The process filters (-p, -c) on the current task of process `tgid`. */
static __always_inline bool process_wanted(__u32 tgid)
{
	if (cfg.only_pid) {
		if (tgid != cfg.only_pid)
			return false;
	} else if (cfg.filter_pid && !bpf_map_lookup_elem(&pids, &tgid)) {
		return false;
	}
	if (cfg.comm[0]) {
		char comm[16];

		bpf_get_current_comm(comm, sizeof(comm));
		if (!same_name16(comm, cfg.comm))
			return false;
	}
	return true;
}

static __always_inline bool addr_wanted(void *lpm, __u8 *addr)
{
	struct ut_lpm_key key = {.prefixlen = 128};

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(lpm, &key) != 0;
}

/* The port and address filters (--port, --src, --dst) on a described packet. */
static __always_inline bool endpoints_wanted(struct ut_record *r)
{
	if (cfg.filter_port) {
		__u16 sport = r->sport, dport = r->dport;

		if (!bpf_map_lookup_elem(&ports, &sport) && !bpf_map_lookup_elem(&ports, &dport))
			return false;
	}
	if (cfg.filter_src && !addr_wanted(&src_nets, r->saddr))
		return false;
	if (cfg.filter_dst && !addr_wanted(&dst_nets, r->daddr))
		return false;
	return true;
}

/* Ports and datagram length from a UDP header. */
static __always_inline void put_udp_header(struct ut_udphdr *h, struct ut_record *r)
{
	r->sport = bpf_ntohs(h->source);
	r->dport = bpf_ntohs(h->dest);
	r->udp_len = bpf_ntohs(h->len);
}

/*
 * A record into the ring buffer, as much of it as the mode needs; false when
 * it had no room. A reader waiting on the ring (epoll) is woken once the ring
 * fills past cfg.wakeup_bytes, by the record that crosses it: once a batch,
 * not once a record (each wake-up is an interrupt on this CPU).
 */
static __always_inline bool emit_record(struct ut_record *r)
{
	__u64 flags = BPF_RB_NO_WAKEUP, queued;

	if (cfg.wakeup_bytes) {
		queued = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
		if (queued < cfg.wakeup_bytes && queued + cfg.record_bytes >= cfg.wakeup_bytes)
			flags = BPF_RB_FORCE_WAKEUP;
	}
	return !bpf_ringbuf_output(&events, r, cfg.record_bytes, flags);
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

/* Enough for an IPv6 header or an IPv4 one without options, and the UDP header after it. */
#define UT_HEADERS_BYTES 48

/*
 * The IP and UDP identity of a packet whose IP header starts at head + nh:
 * family, addresses, fragment flag, and the UDP ports and length of a first
 * fragment; `l4` is the UDP header's offset from head and `first` whether this
 * fragment carries it. False when it is not UDP. One probe read covers the
 * headers in the common case.
 */
static __always_inline bool parse_ip_udp(unsigned char *head, __u32 nh, struct ut_record *r,
					 __u32 *l4, bool *first)
{
	union {
		struct ut_iphdr ip;
		struct ut_ipv6hdr ip6;
		__u8 bytes[UT_HEADERS_BYTES];
	} h;
	struct ut_udphdr udp;
	__u8 version;

	*first = true;
	bpf_probe_read_kernel(&h, sizeof(h), head + nh);
	version = h.bytes[0] >> 4;
	if (version == 4) {
		struct ut_iphdr *ip = &h.ip;
		__u16 frag;

		if (ip->protocol != IPPROTO_UDP)
			return false;
		r->family = AF_INET;
		r->saddr[10] = r->saddr[11] = r->daddr[10] = r->daddr[11] = 0xff;
		__builtin_memcpy(&r->saddr[12], ip->saddr, 4);
		__builtin_memcpy(&r->daddr[12], ip->daddr, 4);
		frag = bpf_ntohs(ip->frag_off);
		if (frag & 0x3FFF) /* MF flag or an offset */
			r->flags |= UT_F_FRAGMENT;
		*first = (frag & 0x1FFF) == 0;
		*l4 = nh + (ip->ver_ihl & 0xF) * 4;
	} else if (version == 6) {
		struct ut_ipv6hdr *ip6 = &h.ip6;
		__u8 next = ip6->nexthdr;

		*l4 = nh + sizeof(*ip6);
		if (next == IPV6_FRAGMENT) {
			struct ut_frag6hdr fh;

			bpf_probe_read_kernel(&fh, sizeof(fh), head + *l4);
			next = fh.nexthdr;
			r->flags |= UT_F_FRAGMENT;
			*first = (bpf_ntohs(fh.frag_off) & 0xFFF8) == 0;
			*l4 += sizeof(fh);
		}
		if (next != IPPROTO_UDP)
			return false;
		r->family = AF_INET6;
		__builtin_memcpy(r->saddr, ip6->saddr, 16);
		__builtin_memcpy(r->daddr, ip6->daddr, 16);
	} else {
		return false;
	}
	if (!*first)
		return true;
	if (*l4 - nh == sizeof(h.ip)) /* no IPv4 options: in the buffer */
		__builtin_memcpy(&udp, h.bytes + sizeof(h.ip), sizeof(udp));
	else if (*l4 - nh == sizeof(h.ip6)) /* no extension header */
		__builtin_memcpy(&udp, h.bytes + sizeof(h.ip6), sizeof(udp));
	else
		bpf_probe_read_kernel(&udp, sizeof(udp), head + *l4);
	put_udp_header(&udp, r);
	return true;
}

#define UT_FP_K 0x9E3779B97F4A7C15ULL /* 2^64 / the golden ratio, odd */

/* xorshift-multiply-xorshift: a bijection that spreads every bit over the word */
static __always_inline __u64 fp_mix(__u64 h)
{
	h ^= h >> 32;
	h *= UT_FP_K;
	return h ^ (h >> 29);
}

/*
 * The datagram's fingerprint, from its UDP header's ports and length L and
 * its first n = min(UT_FINGERPRINT_BYTES, L - 8) payload bytes, already read
 * into r->payload: the same on both paths and every kernel, whatever trails
 * the datagram in the buffer (Ethernet padding, the next fragment). Those
 * bytes go in as 64-bit big-endian words, the last one's bytes past n as
 * zeros, each word through a step that is a bijection of the state for a
 * given word and of the word for a given state: two datagrams that differ in
 * one word of these always differ. 0 when fewer than n bytes are in the
 * linear data (`avail`): a driver left them in page fragments, which a hook
 * cannot read; and for a UDP GSO send, one record for several datagrams, each
 * with its own bytes on the wire, whose payload the kernel keeps in page
 * fragments on any device that can scatter-gather. A global function: checked once.
 */
__noinline __u64 fingerprint(struct ut_record *r, __u32 avail)
{
	const __u64 *words = __builtin_assume_aligned(r->payload, 8);
	__u64 len, n, h, w; /* 64-bit: no zero-extension at each use */

	if (!r) /* a global function's pointer may be null, for the verifier */
		return 0;
	len = r->udp_len;
	if (r->gso_size || len < 8)
		return 0;
	n = len - 8 < UT_FINGERPRINT_BYTES ? len - 8 : UT_FINGERPRINT_BYTES;
	if (avail < n)
		return 0;
	h = fp_mix(UT_FP_K ^ ((__u64)r->sport << 48 | (__u64)r->dport << 32 | len));
#pragma unroll
	for (int i = 0; i < UT_FINGERPRINT_BYTES / 8; i++) {
		if (8 * i >= n)
			break;
		w = bpf_be64_to_cpu(words[i]);
		if (n < 8 * i + 8)
			w &= ~0ULL << (8 * (8 * i + 8 - n));
		h = (h ^ w) * UT_FP_K;
		h = h << 31 | h >> 33;
	}
	h = fp_mix(fp_mix(h));
	return h ?: 1;
}

/*
 * A streamed record's first payload bytes and fingerprint, for the first
 * fragment of a datagram (later ones have neither): its UDP header at head +
 * l4, its linear data ending at head + tail. The payload is kept for user
 * space (UT_F_PAYLOAD) on the --pubsub port.
 */
static __always_inline void describe_payload(unsigned char *head, __u32 l4, __u32 tail,
					     struct ut_record *r)
{
	__u32 start = l4 + 8, avail = tail > start ? tail - start : 0;

	/* a fixed-size read (the buffer's shared info follows its data): what lies past
	 * the datagram is masked by the fingerprint and left out by payload_len */
	if (bpf_probe_read_kernel(r->payload, UT_PAYLOAD_BYTES, head + start))
		return;
	r->fingerprint = fingerprint(r, avail);
	if (avail && cfg.payload_port &&
	    (r->sport == cfg.payload_port || r->dport == cfg.payload_port)) {
		r->payload_len = avail < UT_PAYLOAD_BYTES ? avail : UT_PAYLOAD_BYTES;
		r->flags |= UT_F_PAYLOAD;
	}
}

#define UT_NO_MAC_HEADER 0xFFFF /* skb->mac_header unset: (typeof(mac_header))~0U */

/*
 * --snaplen: the first cfg.snaplen bytes of the frame as the skb holds it now,
 * from its link header where it has one (from the device queue on when sent,
 * set by the driver when received), else from its IP header (a packet parked
 * for ARP, a raw-IP device); its whole length, where the IP header starts in
 * it, and the device's link type for the pcapng interface. Only the linear
 * data: what lies in page fragments no hook can read. Every caller holds the
 * skb its tracepoint was handed, so typed hooks read it with plain loads.
 */
static __always_inline void describe_frame(struct sk_buff *skb, struct ut_record *r)
{
	struct net_device *dev;
	unsigned char *head;
	__u32 start, tail, data, n;
	__u16 mac, nh;

	if (!cfg.snaplen)
		return;
	head = UT_READ(skb, head);
	data = (__u64)UT_READ(skb, data) - (__u64)head;
	mac = UT_READ(skb, mac_header);
	nh = UT_READ(skb, network_header);
	tail = UT_READ(skb, tail);
	start = mac != UT_NO_MAC_HEADER && mac <= nh ? mac : nh;
	n = tail > start ? tail - start : 0;
	if (n > cfg.snaplen)
		n = cfg.snaplen;
	if (n > UT_FRAME_BYTES)
		n = UT_FRAME_BYTES;
	r->frame_l3 = nh - start;
	r->frame_len = UT_READ(skb, len) + data - start; /* skb->len counts from data */
	dev = UT_READ(skb, dev);
	r->dev_type = UT_READ(dev, type);
	r->frame_caplen = bpf_probe_read_kernel(r->frame, n, head + start) ? 0 : n;
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

/* Each stage's histogram holds the time since the stage reached before it; stages before
 * `first` are left out (the send side counted them when it ended). */
static __always_inline void add_stage_hists(struct ut_record *r, int first)
{
	__u64 prev = 0;

#pragma unroll
	for (int i = 0; i < UT_STAGE_COUNT; i++) {
		__u64 t = r->ts[i];

		if (t && t >= prev) {
			if (prev && i >= first)
				hist_add(i, t - prev);
			prev = t;
		}
	}
}

/*
 * Spans, from one stage role (enum ut_role) to another: each role is the
 * first of its stages the record reached; 0: it reached none.
 */
static __always_inline __u64 wire_time(struct ut_record *r)
{
	return r->ts[UT_ROLE_WIRE_1] ?: r->ts[UT_ROLE_WIRE_2];
}

static __always_inline __u64 rx_start_time(struct ut_record *r)
{
	return r->ts[UT_ROLE_RX_START_1] ?: r->ts[UT_ROLE_RX_START_2] ?: r->ts[UT_ROLE_RX_START_3];
}

static __always_inline __u64 rx_end_time(struct ut_record *r)
{
	return r->ts[UT_ROLE_RX_END_1] ?: r->ts[UT_ROLE_RX_END_2];
}

static __always_inline __u64 cycle_start_time(struct ut_record *r)
{
	return r->timer_expires ?: r->ts[UT_ROLE_CYCLE_START_2] ?: r->ts[UT_ROLE_CYCLE_START_3];
}

static __always_inline void add_span(enum ut_span span, __u64 start, __u64 end)
{
	if (start && end)
		hist_add(SPAN_SLOT(span), end - start);
}

/* A packet that left the device: the spans that end there. */
static __always_inline void add_sent_spans(struct ut_record *r)
{
	__u64 wire = wire_time(r);

	add_span(UT_SPAN_TOTAL, r->ts[UT_ROLE_TIME_ZERO_1], wire);
	add_span(UT_SPAN_APP_TO_WIRE, r->ts[UT_ROLE_CALLBACK_1], wire);
	add_span(UT_SPAN_CYCLE, cycle_start_time(r), wire);
}

/* A datagram a reader received: the spans that end at its read. */
static __always_inline void add_received_spans(struct ut_record *r)
{
	__u64 end = rx_end_time(r);

	add_span(UT_SPAN_RX, rx_start_time(r), end);
	add_span(UT_SPAN_E2E, r->ts[UT_ROLE_TIME_ZERO_1], end);
}


/* A kernel function hook, written once and wrapped twice, as fentry and kprobe. */
#ifdef UT_NO_KPROBES
#define UT_KPROBE(fn, call, ...)
#else
#define UT_KPROBE(fn, call, ...)                                                 \
	SEC("kprobe/" #fn) int BPF_KPROBE(ut_kprobe_##fn, __VA_ARGS__) { return call; }
#endif
#define UT_FUNCTION(fn, call, ...)                                               \
	SEC("fentry/" #fn) int BPF_PROG(ut_fentry_##fn, __VA_ARGS__) { return call; } \
	UT_KPROBE(fn, call, __VA_ARGS__)

#endif /* UT_COMMON_BPF_H */
