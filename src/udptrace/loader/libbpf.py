"""ctypes prototypes for libbpf.so.1: the copy vendored into a wheel, else the system's.

Written against the libbpf 1.1 ABI (Debian bookworm's libbpf1) and using
nothing newer, so any libbpf.so.1 from 1.1 on serves. Everything here is a raw
C call; the typed wrappers live in ``bpf_object``, ``btf`` and ``ringbuf``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint32,
    c_void_p,
)
from pathlib import Path

from udptrace.errors import BpfUnavailableError


def _open_library() -> ctypes.CDLL:
    # The package's link library first (setup.py's link_libbpf): the loader resolves the
    # libbpf it depends on (a wheel's own copy, or in a source install the system's), and
    # symbols looked up through its handle are found in that libbpf.
    bundled = Path(__file__).with_name("libudptrace_libbpf.so")
    for name in (str(bundled), "libbpf.so.1", ctypes.util.find_library("bpf")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    raise BpfUnavailableError(
        "libbpf.so.1 not found: install it with 'apt-get install libbpf1' (or libbpf-dev)"
    )


lib = _open_library()
libc = ctypes.CDLL(None, use_errno=True)

# libbpf_print_fn_t takes a va_list; on x86_64 and arm64 that is passed as a pointer,
# which vasprintf below turns back into text of whatever length (a verifier log can
# run to megabytes, and its last lines are the ones that matter).
PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
LIBBPF_DEBUG = 2  # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2
libc.vasprintf.argtypes = [POINTER(c_void_p), c_char_p, c_void_p]
libc.vasprintf.restype = c_int
libc.free.argtypes = [c_void_p]
libc.free.restype = None


def set_print(callback: object) -> None:
    """libbpf's messages to `callback`: without its debug lines where the package's link
    library filters them (libbpf_print.c), else all of them."""
    if hasattr(lib, "udptrace_libbpf_print"):
        lib.udptrace_libbpf_print.restype = None
        lib.udptrace_libbpf_print.argtypes = [PRINT_FN]
        lib.udptrace_libbpf_print(callback)
    else:
        lib.libbpf_set_print(callback)


def _bind(name: str, restype: object, *argtypes: object) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


class BpfObjectOpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts as of libbpf 1.1 (sz makes newer fields optional)."""

    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p),
        ("_unused_attach_prog_fd", c_uint32),
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_char_p),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]


class BpfUprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts as of libbpf 1.1."""

    _fields_ = [
        ("sz", c_size_t),
        ("ref_ctr_offset", c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("retprobe", c_bool),
        ("func_name", c_char_p),
    ]


class BtfType(ctypes.Structure):
    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size_or_type", c_uint32)]


# object lifecycle
_bind("libbpf_set_print", c_void_p, PRINT_FN)
_bind("libbpf_strerror", c_int, c_int, c_char_p, c_size_t)
_bind("libbpf_num_possible_cpus", c_int)
_bind("bpf_object__open_mem", c_void_p, c_void_p, c_size_t, POINTER(BpfObjectOpenOpts))
_bind("bpf_object__load", c_int, c_void_p)
_bind("bpf_object__close", None, c_void_p)
_bind("bpf_object__btf", c_void_p, c_void_p)
_bind("bpf_object__next_program", c_void_p, c_void_p, c_void_p)
_bind("bpf_object__next_map", c_void_p, c_void_p, c_void_p)

# programs
_bind("bpf_program__name", c_char_p, c_void_p)
_bind("bpf_program__section_name", c_char_p, c_void_p)
_bind("bpf_program__set_autoload", c_int, c_void_p, c_bool)
_bind("bpf_program__autoload", c_bool, c_void_p)
_bind("bpf_program__insn_cnt", c_size_t, c_void_p)

# attaching
_bind("bpf_program__attach", c_void_p, c_void_p)
_bind("bpf_program__attach_tracepoint", c_void_p, c_void_p, c_char_p, c_char_p)
_bind("bpf_program__attach_raw_tracepoint", c_void_p, c_void_p, c_char_p)
_bind(
    "bpf_program__attach_uprobe_opts",
    c_void_p,
    c_void_p,
    c_int,
    c_char_p,
    c_size_t,
    POINTER(BpfUprobeOpts),
)
_bind("bpf_link__destroy", c_int, c_void_p)

# maps
_bind("bpf_map__name", c_char_p, c_void_p)
_bind("bpf_map__fd", c_int, c_void_p)
_bind("bpf_map__type", c_int, c_void_p)
_bind("bpf_map__key_size", c_uint32, c_void_p)
_bind("bpf_map__value_size", c_uint32, c_void_p)
_bind("bpf_map__max_entries", c_uint32, c_void_p)
_bind("bpf_map__set_max_entries", c_int, c_void_p, c_uint32)
_bind("bpf_map__initial_value", c_void_p, c_void_p, POINTER(c_size_t))
_bind("bpf_map__reuse_fd", c_int, c_void_p, c_int)
_bind("bpf_map_lookup_elem", c_int, c_int, c_void_p, c_void_p)
_bind("bpf_map_update_elem", c_int, c_int, c_void_p, c_void_p, ctypes.c_uint64)
_bind("bpf_map_get_next_key", c_int, c_int, c_void_p, c_void_p)

# BTF
_bind("btf__load_vmlinux_btf", c_void_p)
_bind("btf__free", None, c_void_p)
_bind("btf__type_cnt", c_uint32, c_void_p)
_bind("btf__type_by_id", POINTER(BtfType), c_void_p, c_uint32)
_bind("btf__name_by_offset", c_char_p, c_void_p, c_uint32)
_bind("btf__find_by_name_kind", c_int, c_void_p, c_char_p, c_uint32)

# feature probes (libbpf >= 1.0)
_bind("libbpf_probe_bpf_prog_type", c_int, c_int, c_void_p)
_bind("libbpf_probe_bpf_map_type", c_int, c_int, c_void_p)


def strerror(err: int) -> str:
    """libbpf's text for a (positive or negative) error number."""
    buf = ctypes.create_string_buffer(256)
    lib.libbpf_strerror(-abs(err), buf, len(buf))
    text = buf.value.decode(errors="replace")
    return text or os.strerror(abs(err))


def last_errno() -> int:
    return ctypes.get_errno() or 1
