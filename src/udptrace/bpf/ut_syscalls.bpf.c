// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * udptrace syscalls: every syscall of one process (all its threads), like
 * `perf trace -p PID`.
 *
 * The entry is kept per thread; at the exit the syscall's duration goes into
 * its per-syscall histogram, and when streaming a record goes to the ring
 * buffer with the socket behind its fd and the address given in the call.
 * Every hook is written once and wrapped as tp_btf, raw_tp and tracepoint;
 * user space autoloads the first this kernel allows.
 */
#include "ut_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "ut_hist.bpf.h"
#include "ut_sock.bpf.h"
#include "ut_syscalls.h"
#include "ut_raw_syscalls.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define MAX_ERRNO 4095

const volatile struct ut_sc_config cfg = {};

/* Puts the record in the object's BTF, where user space reads its layout: ring buffers are untyped. */
const struct ut_sc_record *const record_layout = 0;

/* The template a syscall's first stats entry starts from (too big for the stack). */
static const struct ut_sc_stats empty_stats;

struct ut_sc_inflight {
	__u64 entry;               /* 0: no syscall in flight on this thread */
	__u64 args[UT_SC_ARGS];
	__u32 nr;
};

/* One entry per thread, rewritten in place by every syscall. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, __u32);        /* tid */
	__type(value, struct ut_sc_inflight);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, UT_SC_MAX_NR);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* a process uses a few dozen syscalls, not 1024 */
	__type(key, __u32);        /* syscall number */
	__type(value, struct ut_sc_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UT_SC_MAX_NR);
	__type(key, __u32);        /* syscall number */
	__type(value, struct ut_sc_roles);
} roles SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ut_sc_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

#define COUNT(field)                                          \
	do {                                                      \
		__u32 zero__ = 0;                                     \
		struct ut_sc_counters *c__ =                          \
			bpf_map_lookup_elem(&counters, &zero__);          \
		if (c__)                                              \
			c__->field++;                                     \
	} while (0)

/* ---- entry ---------------------------------------------------------------------- */

/* This thread's slot when it belongs to the traced process, or 0. */
static __always_inline struct ut_sc_inflight *traced_thread(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct ut_sc_inflight *s;

	if ((pid_tgid >> 32) != cfg.tgid)
		return 0;
	s = bpf_map_lookup_elem(&inflight, &tid);
	if (s)
		return s;
	{
		struct ut_sc_inflight fresh = {};

		bpf_map_update_elem(&inflight, &tid, &fresh, BPF_NOEXIST);
	}
	return bpf_map_lookup_elem(&inflight, &tid);
}

/* Arguments are read only when streaming; the entry time is taken last, after our own work. */
static __always_inline void begin(struct ut_sc_inflight *s, long nr)
{
	s->nr = nr;
	s->entry = bpf_ktime_get_ns();
}

/* A syscall entry: the thread's slot, the arguments when streaming (ARG: ut_raw_syscalls.bpf.h) */
#define on_enter(nr, ARG)                                                       \
	({                                                                      \
		struct ut_sc_inflight *s__ = traced_thread();                   \
		if (s__) {                                                      \
			if (cfg.stream) {                                       \
				s__->args[0] = ARG(0);                          \
				s__->args[1] = ARG(1);                          \
				s__->args[2] = ARG(2);                          \
				s__->args[3] = ARG(3);                          \
				s__->args[4] = ARG(4);                          \
				s__->args[5] = ARG(5);                          \
			}                                                       \
			begin(s__, nr);                                         \
		}                                                               \
		0;                                                              \
	})

/* ---- exit ----------------------------------------------------------------------- */

static __always_inline void count_syscall(__u32 nr, __u64 duration, __s64 ret)
{
	struct ut_sc_stats *st = bpf_map_lookup_elem(&stats, &nr);

	if (!st) {
		bpf_map_update_elem(&stats, &nr, &empty_stats, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&stats, &nr);
		if (!st) {
			COUNT(stats_full);
			return;
		}
	}
	hist_put(&st->hist, duration);
	if (ret < 0 && ret >= -MAX_ERRNO)
		st->errors++;
	COUNT(syscalls);
}

static __always_inline void ipv4_mapped(__u8 *dst, __be32 addr)
{
	dst[10] = dst[11] = 0xff;
	__builtin_memcpy(&dst[12], &addr, 4);
}

static __always_inline void describe_socket(struct ut_sc_record *r, __u32 fd)
{
	struct sock *sk = ut_fd_sock(fd);

	if (!sk)
		return;
	r->sock_family = BPF_CORE_READ(sk, __sk_common.skc_family);
	r->sock_type = BPF_CORE_READ(sk, sk_type);
	r->sock_protocol = BPF_CORE_READ(sk, sk_protocol);
	if (r->sock_family != AF_INET && r->sock_family != AF_INET6)
		return;
	r->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	r->peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (r->sock_family == AF_INET) {
		ipv4_mapped(r->local_addr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		ipv4_mapped(r->peer_addr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	} else if (bpf_core_field_exists(sk->__sk_common.skc_v6_daddr)) {
		BPF_CORE_READ_INTO(&r->local_addr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&r->peer_addr, sk, __sk_common.skc_v6_daddr);
	}
}

/* struct sockaddr_in / sockaddr_in6 as user space passes them (UAPI, fixed) */
struct ut_sockaddr {
	__u16 family;
	__be16 port;
	union {
		__be32 addr4;
		struct {
			__u32 flowinfo;
			__u8 addr6[16];
		};
	};
};

/* The start of struct user_msghdr (and of struct mmsghdr, which begins with one): UAPI. */
struct ut_msghdr {
	void *name;
	int namelen;
};

static __always_inline void read_sockaddr(struct ut_sc_record *r, const void *user)
{
	struct ut_sockaddr sa = {};

	if (!user || bpf_probe_read_user(&sa, sizeof(sa.family) + sizeof(sa.port), user))
		return;
	r->call_family = sa.family;
	if (sa.family == AF_INET) {
		bpf_probe_read_user(&sa, 8, user);
		ipv4_mapped(r->call_addr, sa.addr4);
	} else if (sa.family == AF_INET6) {
		bpf_probe_read_user(&sa, sizeof(sa), user);
		__builtin_memcpy(r->call_addr, sa.addr6, 16);
	} else {
		return;
	}
	r->call_port = bpf_ntohs(sa.port);
}

/* The argument a role names (1 + index, 0 = none): false when there is none. */
static __always_inline bool role_arg(const struct ut_sc_record *r, __u8 role, __u64 *arg)
{
	__u32 i = (__u32)role - 1; /* none wraps to a huge index */

	if (i >= UT_SC_ARGS)
		return false;
	*arg = r->args[i];
	return true;
}

static __always_inline void describe_args(struct ut_sc_record *r, const struct ut_sc_roles *role)
{
	struct ut_msghdr msg = {};
	__u64 arg;

	if (role_arg(r, role->fd, &arg))
		describe_socket(r, arg);
	if (role->output && r->ret < 0)
		return; /* the kernel wrote no address */
	if (role_arg(r, role->sockaddr, &arg))
		read_sockaddr(r, (const void *)arg);
	else if (role_arg(r, role->msghdr, &arg) &&
		 !bpf_probe_read_user(&msg, sizeof(msg), (const void *)arg) && msg.namelen > 0)
		read_sockaddr(r, msg.name);
}

static __always_inline void emit(struct ut_sc_inflight *s, __u32 tid, __u64 now, __s64 ret)
{
	struct ut_sc_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	const struct ut_sc_roles *role;
	__u32 nr = s->nr;

	if (!r) {
		COUNT(lost);
		return;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->start = s->entry;
	r->duration = now - s->entry;
	r->ret = ret;
	r->tid = tid;
	r->nr = nr;
	__builtin_memcpy(r->args, s->args, sizeof(r->args));
	role = bpf_map_lookup_elem(&roles, &nr);
	if (role)
		describe_args(r, role);
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

static __always_inline int on_exit(long nr, long ret)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct ut_sc_inflight *s;

	if ((pid_tgid >> 32) != cfg.tgid)
		return 0;
	s = bpf_map_lookup_elem(&inflight, &tid);
	if (!s || !s->entry) {
		COUNT(unmatched);
		return 0;
	}
	count_syscall(s->nr, now - s->entry, ret);
	if (cfg.stream)
		emit(s, tid, now, ret);
	s->entry = 0;
	return 0;
}

/* ---- hooks ---------------------------------------------------------------------- */

UT_RAW_SYSCALL_HOOKS(ut_sc, on_enter, on_exit)
