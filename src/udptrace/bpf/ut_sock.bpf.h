/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * From a file descriptor of the current task to its socket, shared by every
 * udptrace BPF object.
 */
#ifndef UT_SOCK_BPF_H
#define UT_SOCK_BPF_H

#include "ut_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define UT_S_IFMT 0170000
#define UT_S_IFSOCK 0140000

/*
 * The socket behind `fd` in the current task, or 0 when the fd is not a
 * socket. A socket file is told by its inode's mode: the kernel's
 * socket_file_ops is not in kallsyms without CONFIG_KALLSYMS_ALL.
 */
static __always_inline struct sock *ut_fd_sock(__u32 fd)
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
	if (!file || (BPF_CORE_READ(file, f_inode, i_mode) & UT_S_IFMT) != UT_S_IFSOCK)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	return BPF_CORE_READ(sock, sk);
}

#endif /* UT_SOCK_BPF_H */
