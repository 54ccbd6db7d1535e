"""BTF queries through libbpf: kernel types, enum values, function prototypes.

Used for three things: reading names the kernel assigns at build time (drop
reasons differ between versions), telling which functions and tracepoints
exist (``list``, ``check``), and reading our own object's record layout so
the Python side never restates it.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from udptrace.errors import KernelFeatureError
from udptrace.loader import libbpf
from udptrace.loader.libbpf import lib

if TYPE_CHECKING:  # NumPy is imported by the layouts that need it: 0.1-0.2 s at start
    import numpy as np


class Kind(IntEnum):
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


_MODIFIERS = {Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPEDEF, Kind.TYPE_TAG}
_QUALIFIER_WORDS = {Kind.VOLATILE: "volatile", Kind.CONST: "const", Kind.RESTRICT: "restrict"}


class _Member(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("offset", ctypes.c_uint32)]


class _Enum(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


class _Enum64(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("lo", ctypes.c_uint32), ("hi", ctypes.c_uint32)]


class _Param(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32)]


class _Array(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("index_type", ctypes.c_uint32),
                ("nelems", ctypes.c_uint32)]


class _SecInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32),
                ("size", ctypes.c_uint32)]


@dataclass(frozen=True)
class TypeInfo:
    id: int
    kind: Kind
    name: str
    vlen: int
    kflag: bool
    size_or_type: int
    address: int  # of the struct btf_type; kind-specific entries follow it


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int


def _declaration(c_type: str, name: str) -> str:
    """`int fd`, `void *buff`: C spacing for a parameter."""
    if not name:
        return c_type
    return f"{c_type}{name}" if c_type.endswith("*") else f"{c_type} {name}"


class Btf:
    """A handle on one BTF blob (vmlinux's or an object's)."""

    def __init__(self, ptr: int, owned: bool, owner: object = None) -> None:
        self.ptr = ptr
        self._owned = owned
        self._owner = owner  # keeps an object alive while its BTF is borrowed

    @classmethod
    def borrowed(cls, ptr: int, owner: object) -> Btf:
        return cls(ptr, owned=False, owner=owner)

    @staticmethod
    @functools.cache
    def vmlinux() -> Btf:
        ptr = lib.btf__load_vmlinux_btf()
        if not ptr:
            raise KernelFeatureError(
                "this kernel has no BTF (/sys/kernel/btf/vmlinux): udptrace needs a kernel "
                "built with CONFIG_DEBUG_INFO_BTF=y"
            )
        return Btf(ptr, owned=True)

    def __del__(self) -> None:
        if self._owned and self.ptr:
            lib.btf__free(self.ptr)
            self.ptr = 0

    # ---- raw access -------------------------------------------------------------------
    def count(self) -> int:
        return lib.btf__type_cnt(self.ptr)

    def name_at(self, offset: int) -> str:
        raw = lib.btf__name_by_offset(self.ptr, offset)
        return raw.decode() if raw else ""

    def type(self, type_id: int) -> TypeInfo:
        t = lib.btf__type_by_id(self.ptr, type_id)
        if not t:
            raise KeyError(type_id)
        c = t.contents
        return TypeInfo(
            id=type_id,
            kind=Kind((c.info >> 24) & 0x1F) if type_id else Kind.INT,
            name=self.name_at(c.name_off),
            vlen=c.info & 0xFFFF,
            kflag=bool(c.info >> 31),
            size_or_type=c.size_or_type,
            address=ctypes.addressof(c),
        )

    def _entries(self, t: TypeInfo, entry: type[ctypes.Structure]) -> ctypes.Array:
        base = t.address + ctypes.sizeof(libbpf.BtfType)
        return (entry * t.vlen).from_address(base)

    def _array(self, t: TypeInfo) -> _Array:
        # an ARRAY's single btf_array entry follows the header whatever vlen says
        return _Array.from_address(t.address + ctypes.sizeof(libbpf.BtfType))

    def find(self, name: str, kind: Kind) -> int | None:
        type_id = lib.btf__find_by_name_kind(self.ptr, name.encode(), int(kind))
        return type_id if type_id > 0 else None

    def skip_modifiers(self, type_id: int) -> TypeInfo:
        t = self.type(type_id)
        while t.kind in _MODIFIERS:
            t = self.type(t.size_or_type)
        return t

    # ---- structured queries -----------------------------------------------------------
    def members(self, type_id: int) -> list[Member]:
        t = self.skip_modifiers(type_id)
        out = []
        for m in self._entries(t, _Member):
            if t.kflag:
                out.append(Member(self.name_at(m.name_off), m.type, m.offset & 0xFFFFFF,
                                  m.offset >> 24))
            else:
                out.append(Member(self.name_at(m.name_off), m.type, m.offset, 0))
        return out

    def enum_values(self, name: str) -> dict[str, int]:
        """Enumerator name → value for a named enum (ENUM or ENUM64)."""
        type_id = self.find(name, Kind.ENUM) or self.find(name, Kind.ENUM64)
        if type_id is None:
            return {}
        t = self.type(type_id)
        if t.kind == Kind.ENUM64:
            return {self.name_at(e.name_off): e.lo | (e.hi << 32)
                    for e in self._entries(t, _Enum64)}
        return {self.name_at(e.name_off): e.val for e in self._entries(t, _Enum)}

    def datasec_offset(self, section: str, variable: str) -> int:
        sec_id = self.find(section, Kind.DATASEC)
        if sec_id is None:
            raise KeyError(f"no BTF datasec {section}")
        for info in self._entries(self.type(sec_id), _SecInfo):
            if self.type(info.type).name == variable:
                return info.offset
        raise KeyError(f"{variable} not in {section}")

    def iter_kind(self, kind: Kind) -> Iterator[TypeInfo]:
        for type_id in range(1, self.count()):
            t = self.type(type_id)
            if t.kind == kind:
                yield t

    def has_tracepoint(self, name: str) -> bool:
        """Raw tracepoints carry a ``btf_trace_<name>`` typedef in vmlinux BTF."""
        return self.find(f"btf_trace_{name}", Kind.TYPEDEF) is not None

    def has_function(self, name: str) -> bool:
        return self.find(name, Kind.FUNC) is not None

    # ---- C rendering ------------------------------------------------------------------
    def c_type(self, type_id: int) -> str:
        """A C spelling of a type: `struct sockaddr *`, `const void *`, `size_t`."""
        if type_id == 0:
            return "void"
        t = self.type(type_id)
        if t.kind == Kind.PTR:
            target = self.type(t.size_or_type) if t.size_or_type else None
            if target is not None and target.kind == Kind.FUNC_PROTO:
                return f"{self.c_type(target.size_or_type)} (*)({self._params(target)})"
            inner = self.c_type(t.size_or_type)
            return inner + ("*" if inner.endswith("*") else " *")
        if t.kind in _QUALIFIER_WORDS:
            return f"{_QUALIFIER_WORDS[t.kind]} {self.c_type(t.size_or_type)}"
        if t.kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FWD):
            word = {Kind.STRUCT: "struct", Kind.UNION: "union"}.get(t.kind, "enum")
            if t.kind == Kind.FWD:
                word = "union" if t.kflag else "struct"
            return f"{word} {t.name or '(anon)'}"
        if t.kind == Kind.ARRAY:
            arr = self._array(t)
            return f"{self.c_type(arr.type)}[{arr.nelems}]"
        if t.kind == Kind.TYPE_TAG:
            return self.c_type(t.size_or_type)
        return t.name

    def _params(self, proto: TypeInfo) -> str:
        params = [_declaration(self.c_type(p.type), self.name_at(p.name_off))
                  if p.type else "..." for p in self._entries(proto, _Param)]
        return ", ".join(params) if params else "void"

    def function_prototype(self, name: str) -> str | None:
        func_id = self.find(name, Kind.FUNC)
        if func_id is None:
            return None
        proto = self.type(self.type(func_id).size_or_type)
        return f"{self.c_type(proto.size_or_type)} {name}({self._params(proto)})"

    # ---- layouts ----------------------------------------------------------------------
    def _struct(self, name: str) -> int:
        type_id = self.find(name, Kind.STRUCT)
        if type_id is None:
            raise KeyError(f"no struct {name} in BTF")
        return type_id

    def member_offsets(self, name: str) -> dict[str, int]:
        """Each member of a struct at its byte offset."""
        return {m.name: m.bit_offset // 8 for m in self.members(self._struct(name))}

    def struct_ctype(self, name: str) -> type[ctypes.Structure]:
        """A ctypes Structure laid out as the compiler laid the struct out (scalars and
        arrays of them), for an image written before NumPy is imported."""
        return self._ctype(self._struct(name))

    def _ctype(self, type_id: int) -> type:
        t = self.skip_modifiers(type_id)
        if t.kind == Kind.STRUCT:
            fields: list[tuple[str, type]] = []
            end = 0
            for m in self.members(t.id):
                if m.bitfield_size:
                    raise TypeError(f"bitfield {t.name}.{m.name} has no ctypes layout")
                offset = m.bit_offset // 8
                if offset > end:
                    fields.append((f"_pad{end}", ctypes.c_uint8 * (offset - end)))
                member = self._ctype(m.type_id)
                fields.append((m.name, member))
                end = offset + ctypes.sizeof(member)
            if t.size_or_type > end:
                fields.append((f"_pad{end}", ctypes.c_uint8 * (t.size_or_type - end)))
            return type(t.name or f"btf_{t.id}", (ctypes.Structure,),
                        {"_pack_": 1, "_fields_": fields})
        if t.kind == Kind.ARRAY:
            arr = self._array(t)
            element = self.skip_modifiers(arr.type)
            if element.kind == Kind.INT and element.name == "char":
                return ctypes.c_char * arr.nelems  # char[]: NUL-padded text
            return self._ctype(arr.type) * arr.nelems
        if t.kind in (Kind.INT, Kind.ENUM, Kind.ENUM64):
            signed = t.kind == Kind.INT and bool(self._int_encoding(t) & 1)
            bits = 8 * t.size_or_type
            return getattr(ctypes, f"c_{'' if signed else 'u'}int{bits}")
        raise TypeError(f"BTF kind {t.kind.name} has no ctypes layout")

    def struct_dtype(self, name: str) -> np.dtype:
        """The NumPy dtype of a struct exactly as the compiler laid it out."""
        return self._dtype(self._struct(name))

    def _dtype(self, type_id: int) -> np.dtype:
        import numpy as np

        t = self.skip_modifiers(type_id)
        if t.kind in (Kind.STRUCT, Kind.UNION):
            names, formats, offsets = [], [], []
            for m in self.members(t.id):
                if m.bitfield_size:
                    raise TypeError(f"bitfield {t.name}.{m.name} has no NumPy layout")
                names.append(m.name)
                formats.append(self._dtype(m.type_id))
                offsets.append(m.bit_offset // 8)
            return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                             "itemsize": t.size_or_type})
        if t.kind == Kind.ARRAY:
            arr = self._array(t)
            element = self.skip_modifiers(arr.type)
            if element.kind == Kind.INT and element.name == "char":
                return np.dtype(f"S{arr.nelems}")  # char[]: NUL-padded text
            return np.dtype((self._dtype(arr.type), (arr.nelems,)))
        if t.kind in (Kind.INT, Kind.ENUM, Kind.ENUM64):
            size = t.size_or_type
            signed = t.kind == Kind.INT and bool(self._int_encoding(t) & 1)
            if t.kind == Kind.INT and size == 1 and not signed:
                return np.dtype(np.uint8)
            return np.dtype(f"{'i' if signed else 'u'}{size}")
        if t.kind == Kind.PTR:
            return np.dtype(np.uint64)
        raise TypeError(f"BTF kind {t.kind.name} has no NumPy layout")

    @staticmethod
    def _int_encoding(t: TypeInfo) -> int:
        # an INT's u32 after the header: encoding in bits 24..27 (bit 0 = signed)
        word = ctypes.c_uint32.from_address(t.address + ctypes.sizeof(libbpf.BtfType)).value
        return (word >> 24) & 0x0F
