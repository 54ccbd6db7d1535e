"""Which libbpf and which BPF objects this udptrace runs with (`--version`, `check`).

A wheel carries its own libbpf (vendored by auditwheel into ``udptrace.libs/``) and objects
compiled when it was built; a source install uses the system's libbpf and objects compiled
at install. Both say so here, from what is loaded, not from what should be.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from udptrace import __version__
from udptrace.errors import BpfUnavailableError

VENDORED = Path(__file__).resolve().parent.parent / "udptrace.libs"


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


@dataclass(frozen=True)
class Libbpf:
    version: str  # libbpf's own libbpf_major_version().libbpf_minor_version()
    path: str  # the file the dynamic loader mapped, symlinks resolved
    vendored: bool  # the wheel's own copy

    def describe(self) -> str:
        whose = "the wheel's own" if self.vendored else "the system's"
        return f"libbpf {self.version} ({whose}): {self.path}"


@dataclass(frozen=True)
class Objects:
    """bpf/objects.json, written when the objects were compiled (setup.py)."""

    version: str  # the udptrace they were built with
    compiler: str
    build_ids: dict[str, str]  # object file → the first 16 hex digits of its SHA-256
    changed: list[str]  # objects whose bytes no longer match their build id

    def describe(self) -> str:
        ids = ", ".join(f"{name.removesuffix('.bpf.o')} {build_id}"
                        + (" (changed since)" if name in self.changed else "")
                        for name, build_id in self.build_ids.items())
        return f"BPF objects of udptrace {self.version}, built by {self.compiler}: {ids}"


def libbpf_in_use() -> Libbpf:
    """The libbpf the loader bound (raises BpfUnavailableError when there is none)."""
    from udptrace.loader.libbpf import lib  # opening libbpf is what may fail

    for name, restype in (("libbpf_major_version", ctypes.c_uint32),
                          ("libbpf_minor_version", ctypes.c_uint32)):
        getattr(lib, name).restype = restype
    info = _DlInfo()
    libc = ctypes.CDLL(None)
    libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    if not libc.dladdr(ctypes.cast(lib.libbpf_major_version, ctypes.c_void_p), info):
        raise BpfUnavailableError("cannot tell which file libbpf was loaded from (dladdr)")
    path = os.path.realpath(os.fsdecode(info.dli_fname))
    return Libbpf(version=f"{lib.libbpf_major_version()}.{lib.libbpf_minor_version()}",
                  path=path, vendored=Path(path).parent == VENDORED)


def objects_in_use() -> Objects | None:
    """The objects' build record, checked against their bytes; None when none was written."""
    package = resources.files("udptrace.bpf")
    try:
        record = json.loads((package / "objects.json").read_text())
    except FileNotFoundError:
        return None
    changed = [name for name, build_id in record["objects"].items()
               if hashlib.sha256((package / name).read_bytes()).hexdigest()[:len(build_id)]
               != build_id]
    return Objects(record["version"], record["compiler"], record["objects"], changed)


def as_dict() -> dict[str, object]:
    """For `check --json`: {"libbpf": {...} or {"error": ...}, "objects": {...} or None}."""
    try:
        libbpf: dict[str, object] = asdict(libbpf_in_use())
    except BpfUnavailableError as e:
        libbpf = {"error": str(e)}
    objects = objects_in_use()
    return {"libbpf": libbpf, "objects": asdict(objects) if objects else None}


def describe() -> str:
    """`udptrace --version`: this udptrace, its libbpf and its objects, a line each."""
    try:
        libbpf = libbpf_in_use().describe()
    except BpfUnavailableError as e:
        libbpf = f"libbpf: {e}"
    objects = objects_in_use()
    return "\n".join([f"udptrace {__version__}", libbpf,
                      objects.describe() if objects else "BPF objects: no build record "
                      "(bpf/objects.json); reinstall udptrace"])
