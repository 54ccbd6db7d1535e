// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * udptrace's kernel side: one object, so every path shares the packet state.
 * Its parts, in the order a datagram meets them:
 */
#include "ut_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "ut_record.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#include "ut_common.bpf.h"    /* configuration, output maps, histograms, filters */
#include "ut_syscall.bpf.h"   /* send syscalls: the per-thread state packets are tied to */
#include "ut_interval.bpf.h"  /* the time between successive sends of a flow */
#include "ut_app.bpf.h"       /* the application's callback (uprobes) */
#include "ut_context.bpf.h"   /* softirqs: the context a packet's steps run in */
#include "ut_send.bpf.h"      /* the send path, from the syscall to the wire */
#include "ut_functions.bpf.h" /* finer send stages at kernel functions (fentry, kprobe) */
