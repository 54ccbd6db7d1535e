/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * io_uring sends (IORING_OP_SEND, SENDMSG and their zero-copy forms): the
 * request's submission is its time zero, as a send syscall's entry is. A send
 * issued inline runs on the submitting thread (or the SQPOLL thread), so the
 * per-thread call state ties its packets as for a syscall; the request ends at
 * the next submission or when io_uring_enter returns (ut_trace.bpf.c's syscall exit). A request punted to an
 * io-wq worker sends on another thread: its packets count as unattributed.
 */
#ifndef UT_IO_URING_BPF_H
#define UT_IO_URING_BPF_H

#include "ut_common.bpf.h"
#include "ut_syscall.bpf.h"

/* UAPI opcodes (include/uapi/linux/io_uring.h): stable numbers */
#define IORING_OP_SENDMSG 9
#define IORING_OP_SEND 26
#define IORING_OP_SEND_ZC 47
#define IORING_OP_SENDMSG_ZC 48

/* io_uring:io_uring_submit_req's record, as its format has been since 6.0 */
struct io_uring_submit_req_ctx {
	__u64 common;
	void *ctx;
	void *req;
	__u64 user_data;
	__u8 opcode;
};

SEC("tracepoint/io_uring/io_uring_submit_req")
int ut_iou_submit(struct io_uring_submit_req_ctx *ctx)
{
	__u8 op = ctx->opcode;

	if (op != IORING_OP_SEND && op != IORING_OP_SENDMSG && op != IORING_OP_SEND_ZC &&
	    op != IORING_OP_SENDMSG_ZC)
		return 0;
	syscall_exit(0); /* the thread's previous request, if any, ends where this one begins */
	syscall_enter(UT_SYS_IO_URING, UT_FD_ANY);
	return 0;
}

#endif /* UT_IO_URING_BPF_H */
