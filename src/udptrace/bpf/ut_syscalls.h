/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The layout `udptrace syscalls` and ut_syscalls.bpf.c agree on. The Python
 * side (udptrace.trace.syscalls) reads every struct here from the compiled
 * object's BTF, so this file is the only definition.
 */
#ifndef UT_SYSCALLS_H
#define UT_SYSCALLS_H

#include "ut_record.h"             /* struct ut_hist */

enum ut_sc_limits {
	UT_SC_ARGS = 6,
	UT_SC_MAX_NR = 1024,       /* syscall numbers with argument roles */
};

/* One syscall, written to the ring buffer at its exit. */
struct ut_sc_record {
	__u64 start;               /* CLOCK_MONOTONIC ns at entry */
	__u64 duration;            /* ns from entry to exit */
	__s64 ret;                 /* return value; -4095..-1 is -errno */
	__u64 args[UT_SC_ARGS];    /* as the thread passed them */
	__u32 tid;
	__u32 nr;                  /* syscall number of this architecture */
	/* the socket behind the fd argument, at exit; family 0: not a socket (or no fd) */
	__u16 sock_family;
	__u16 sock_type;
	__u16 sock_protocol;
	__u16 local_port;
	__u16 peer_port;           /* 0: not connected */
	/* the address given in the call (sendto, recvfrom, connect, msghdr's msg_name) */
	__u16 call_family;         /* 0: none */
	__u16 call_port;
	__u16 pad;
	__u8 local_addr[16];       /* IPv4 as ::ffff:a.b.c.d */
	__u8 peer_addr[16];
	__u8 call_addr[16];
};

/*
 * Which argument plays which part, per syscall number, as 1 + its index in
 * args[], so that 0 (an entry Python never wrote) means none.
 */
struct ut_sc_roles {
	__u8 fd;                   /* a file descriptor: described when it is a socket */
	__u8 sockaddr;             /* a struct sockaddr * */
	__u8 msghdr;               /* a struct user_msghdr * (or mmsghdr: the first one) */
	__u8 output;               /* the address is filled by the kernel: only valid on success */
};

/* Per syscall number, summed over CPUs by Python. */
struct ut_sc_stats {
	__u64 errors;              /* returns of -4095..-1 */
	struct ut_hist hist;       /* duration: exact count, sum, min, max; log-linear buckets */
};

struct ut_sc_counters {
	__u64 syscalls;            /* syscalls seen from entry to exit */
	__u64 lost;                /* records the ring buffer had no room for */
	__u64 unmatched;           /* exits without their entry (entered before tracing began) */
	__u64 stats_full;          /* syscalls not counted: the stats map was full */
};

/* Set by Python in .rodata before load: constant to the verifier. */
struct ut_sc_config {
	__u32 tgid;                /* the traced process; all its threads */
	__u32 stream;              /* write a record per syscall to the ring buffer */
};

#endif /* UT_SYSCALLS_H */
