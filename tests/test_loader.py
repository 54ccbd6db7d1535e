"""The libbpf binding against the real kernel: load, configure, attach, count, fail clearly."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from udptrace import bpf
from udptrace.errors import BpfLoadError
from udptrace.loader.bpf_object import BpfObject
from udptrace.loader.btf import Btf
from udptrace.loader.ringbuf import RingBufferReader
from udptrace.stages import ROLES, SPAN_NAMES, SPANS, STAGE_NAMES
from udptrace.trace.layout import Layout

BPF_DIR = Path(bpf.__file__).parent


def probe_object(program: str) -> BpfObject:
    obj = BpfObject(bpf.object_bytes("ut_probe"), "ut_probe")
    for name, prog in obj.programs.items():
        prog.autoload = name == program
    obj.write_global(".rodata", "target_tgid", struct.pack("<I", os.getpid()))
    return obj


def test_a_tracepoint_program_counts_real_syscalls() -> None:
    with probe_object("ut_probe_tp") as obj:
        obj.load()
        obj.programs["ut_probe_tp"].attach()
        for _ in range(100):
            os.getppid()
        hits = struct.unpack("<Q", obj.maps["hits"].lookup(struct.pack("<I", 0)))[0]
    assert hits == 100


def test_closing_the_object_detaches_it() -> None:
    obj = probe_object("ut_probe_tp")
    obj.load()
    obj.programs["ut_probe_tp"].attach()
    obj.close()
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True).stdout
    assert "ut_probe_tp" not in out


def test_ring_buffer_records_arrive_in_one_numpy_batch() -> None:
    with probe_object("ut_probe_ringbuf") as obj:
        obj.load()
        obj.programs["ut_probe_ringbuf"].attach()
        ring = obj.maps["probe_ring"]
        reader = RingBufferReader(ring.fd, ring.max_entries, np.dtype("<u4"))
        for _ in range(50):
            os.getppid()
        batch = reader.read()
        reader.close()
    assert len(batch) == 50 and (batch == os.getpid()).all()


INVALID = r"""
#include "ut_types.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
SEC("tracepoint/syscalls/sys_enter_getppid")
int ut_invalid(void *ctx)
{
	__u64 *p = (__u64 *)0x1234;   /* a made-up pointer: the verifier must refuse it */
	return *p;
}
"""


def test_an_invalid_program_fails_with_the_verifier_log(tmp_path: Path) -> None:
    source = tmp_path / "invalid.bpf.c"
    source.write_text(INVALID)
    target = tmp_path / "invalid.bpf.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-I", str(BPF_DIR), "-c",
                    str(source), "-o", str(target)], check=True)
    with BpfObject(target.read_bytes(), "invalid") as obj, pytest.raises(BpfLoadError) as err:
        obj.load()
    assert "ut_invalid" in str(err.value)
    assert "invalid mem access" in err.value.verifier_log


def test_the_stage_span_and_role_catalogues_and_the_c_enums_agree() -> None:
    with BpfObject(bpf.object_bytes("ut_trace"), "ut_trace") as obj:
        layout = Layout.from_object(obj)
        roles = obj.btf().enum_values("ut_role")
    assert layout.stages == STAGE_NAMES
    assert layout.spans == SPAN_NAMES
    assert layout.record["ts"].shape[0] == len(STAGE_NAMES)
    assert layout.hist_slots == len(STAGE_NAMES) + len(SPAN_NAMES)
    # UT_ROLE_<ROLE>_<n> is the n-th of the role's times, where that is a stage; the others
    # are fields of the record
    expected = {}
    for role in ROLES:
        for n, name in enumerate(role.times, start=1):
            if name not in STAGE_NAMES:
                assert name in layout.record.names, f"{role.name}: {name} is no stage or field"
            elif role.kernel:
                expected[f"UT_ROLE_{role.name.upper()}_{n}"] = STAGE_NAMES.index(name)
    assert roles == expected
    assert {s.start for s in SPANS} | {s.end for s in SPANS} <= set(ROLES)


def test_btf_reads_kernel_prototypes_and_drop_reasons() -> None:
    btf = Btf.vmlinux()
    assert btf.function_prototype("__sys_sendto") == (
        "int __sys_sendto(int fd, void *buff, size_t len, unsigned int flags, "
        "struct sockaddr *addr, int addr_len)")
    reasons = btf.enum_values("skb_drop_reason")
    assert "SKB_DROP_REASON_NO_SOCKET" in reasons and "SKB_DROP_REASON_QDISC_DROP" in reasons


def test_explicit_tracepoint_and_raw_tracepoint_attach_count_the_same_events() -> None:
    for program, attach in (
            ("ut_probe_tp", lambda p: p.attach_tracepoint("syscalls", "sys_enter_getppid")),
            ("ut_probe_raw_tp", lambda p: p.attach_raw_tracepoint("sys_enter"))):
        with probe_object(program) as obj:
            obj.load()
            link = attach(obj.programs[program])
            assert program in link.program
            before = struct.unpack("<Q", obj.maps["hits"].lookup(struct.pack("<I", 0)))[0]
            for _ in range(20):
                os.getppid()
            after = struct.unpack("<Q", obj.maps["hits"].lookup(struct.pack("<I", 0)))[0]
        # raw sys_enter also sees this process's other syscalls: at least the 20 getppid
        assert after - before >= 20 if program == "ut_probe_raw_tp" else after - before == 20
