// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libbpf's messages minus its debug lines, for udptrace's Python callback.
 *
 * libbpf calls its print callback for every message, and a load of ut_trace tells
 * ~9000 debug lines (one per relocation). Each call into Python takes the
 * interpreter's lock, which the modules imported while the verifier runs hold:
 * that cost 60 ms of every load. Here the debug lines stop in C.
 */
#include <stdarg.h>

enum { UT_LIBBPF_DEBUG = 2 }; /* enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2 */

typedef int (*ut_print_fn)(int level, const char *format, va_list args);

ut_print_fn libbpf_set_print(ut_print_fn fn);

static ut_print_fn forward;

static int without_debug(int level, const char *format, va_list args)
{
	if (level >= UT_LIBBPF_DEBUG || !forward)
		return 0;
	return forward(level, format, args);
}

/* libbpf's warnings and information go to `fn`; its debug lines nowhere. */
void udptrace_libbpf_print(ut_print_fn fn)
{
	forward = fn;
	libbpf_set_print(without_debug);
}
