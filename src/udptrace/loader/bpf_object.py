"""A BPF object file opened, configured, loaded and attached through libbpf.

Lifecycle: ``BpfObject(elf_bytes)`` → set ``.rodata`` config, choose programs,
size maps → :meth:`BpfObject.load` → :meth:`Program.attach` → :meth:`BpfObject.close`
(links first, then the object). A failure at any step raises a typed
:class:`~udptrace.errors.BpfError` that names the program and the errno text.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from udptrace.errors import BpfAttachError, BpfError, BpfLoadError
from udptrace.loader import libbpf
from udptrace.loader.btf import Btf
from udptrace.loader.libbpf import lib

# BPF map types this module treats specially
MAP_TYPE_PERCPU_HASH = 5
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_PERCPU_HASH = 10
PERCPU_MAP_TYPES = {MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_LRU_PERCPU_HASH}


class _LibbpfLog:
    """Collects libbpf's own messages so a failure can quote them.

    libbpf has one process-wide print callback and calls it in the thread that called
    libbpf: each thread keeps its own lines, so objects loading side by side do not mix
    their logs.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._callback = libbpf.PRINT_FN(self._print)
        libbpf.set_print(self._callback)

    @property
    def lines(self) -> list[str]:
        if not hasattr(self._local, "lines"):
            self._local.lines = []
        return self._local.lines

    def _print(self, level: int, fmt: bytes, args: int) -> int:
        # errors come as warnings; the ~9000 debug lines of a load (relocations, one per
        # access) mostly stop before Python (libbpf.set_print), and formatting them cost
        # 0.1 s of every start
        if level >= libbpf.LIBBPF_DEBUG:
            return 0
        text = ctypes.c_void_p()
        if libbpf.libc.vasprintf(ctypes.byref(text), fmt, args) >= 0 and text.value:
            self.lines.append(ctypes.string_at(text.value).decode(errors="replace"))
            libbpf.libc.free(text)
        return 0

    def take(self) -> str:
        text = "".join(self.lines)
        self.lines.clear()
        return text


_log = _LibbpfLog()
_FAILED_PROG = re.compile(r"prog '([^']+)': (?:BPF program load failed|failed to load)")
_VERIFIER_LOG = re.compile(r"-- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --", re.S)


@dataclass
class Link:
    """An attached program; destroyed on close."""

    ptr: int
    program: str
    hook: str

    def destroy(self) -> None:
        if self.ptr:
            lib.bpf_link__destroy(self.ptr)
            self.ptr = 0


@dataclass
class Program:
    ptr: int
    name: str
    section: str
    owner: BpfObject = field(repr=False)

    @property
    def autoload(self) -> bool:
        return bool(lib.bpf_program__autoload(self.ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        lib.bpf_program__set_autoload(self.ptr, value)

    def attach(self) -> Link:
        """Attach at the hook its section names (tracepoint/, raw_tp/, tp_btf/, ...)."""
        return self._attach(lib.bpf_program__attach(self.ptr), self.section)

    def attach_tracepoint(self, category: str, name: str) -> Link:
        ptr = lib.bpf_program__attach_tracepoint(self.ptr, category.encode(), name.encode())
        return self._attach(ptr, f"tracepoint:{category}:{name}")

    def attach_raw_tracepoint(self, name: str) -> Link:
        ptr = lib.bpf_program__attach_raw_tracepoint(self.ptr, name.encode())
        return self._attach(ptr, f"raw_tp:{name}")

    def attach_uprobe(self, binary: str, symbol: str = "", offset: int = 0, pid: int = -1,
                      retprobe: bool = False) -> Link:
        """A uprobe at `symbol` (libbpf resolves it) or at a file `offset` in `binary`;
        pid -1 means every process that maps the binary."""
        opts = libbpf.BpfUprobeOpts(sz=ctypes.sizeof(libbpf.BpfUprobeOpts))
        opts.retprobe = retprobe
        if symbol:
            opts.func_name = symbol.encode()
        ptr = lib.bpf_program__attach_uprobe_opts(
            self.ptr, pid, binary.encode(), offset, ctypes.byref(opts)
        )
        where = symbol or f"{offset:#x}"
        return self._attach(ptr, f"{'uretprobe' if retprobe else 'uprobe'}:{binary}:{where}")

    def _attach(self, ptr: int | None, hook: str) -> Link:
        if not ptr:
            err = libbpf.last_errno()
            raise BpfAttachError(f"attach {self.name} to {hook}", err, _log.take().strip())
        link = Link(ptr, self.name, hook)
        self.owner.links.append(link)
        return link


@dataclass
class Map:
    ptr: int
    name: str
    owner: BpfObject = field(repr=False)

    @property
    def fd(self) -> int:
        return lib.bpf_map__fd(self.ptr)

    @property
    def type(self) -> int:
        return lib.bpf_map__type(self.ptr)

    @property
    def key_size(self) -> int:
        return lib.bpf_map__key_size(self.ptr)

    @property
    def value_size(self) -> int:
        return lib.bpf_map__value_size(self.ptr)

    @property
    def max_entries(self) -> int:
        return lib.bpf_map__max_entries(self.ptr)

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        err = lib.bpf_map__set_max_entries(self.ptr, value)
        if err:
            raise BpfError(f"map {self.name}: set max_entries {value}", err)

    @property
    def percpu(self) -> bool:
        return self.type in PERCPU_MAP_TYPES

    def _value_buffer_size(self) -> int:
        if self.percpu:
            # the kernel copies one value per possible CPU, each padded to 8 bytes
            return ((self.value_size + 7) // 8 * 8) * possible_cpus()
        return self.value_size

    def lookup(self, key: bytes) -> bytes | None:
        value = ctypes.create_string_buffer(self._value_buffer_size())
        if lib.bpf_map_lookup_elem(self.fd, key, value) != 0:
            return None
        return value.raw

    def update(self, key: bytes, value: bytes) -> None:
        if lib.bpf_map_update_elem(self.fd, key, value, 0) != 0:
            raise BpfError(f"map {self.name}: update", libbpf.last_errno())

    def iter_keys(self) -> Iterator[bytes]:
        key = ctypes.create_string_buffer(self.key_size)
        next_key = ctypes.create_string_buffer(self.key_size)
        prev = None
        while lib.bpf_map_get_next_key(self.fd, prev, next_key) == 0:
            yield next_key.raw
            ctypes.memmove(key, next_key, self.key_size)
            prev = key

    def initial_value(self) -> ctypes.Array[ctypes.c_char]:
        """The writable pre-load image of a global-data map (.rodata, .bss, .data)."""
        size = ctypes.c_size_t()
        ptr = lib.bpf_map__initial_value(self.ptr, ctypes.byref(size))
        if not ptr:
            raise BpfError(f"map {self.name}: no initial value", 22)
        return (ctypes.c_char * size.value).from_address(ptr)


_possible_cpus: int | None = None


def possible_cpus() -> int:
    global _possible_cpus
    if _possible_cpus is None:
        n = lib.libbpf_num_possible_cpus()
        if n <= 0:
            raise BpfError("libbpf_num_possible_cpus", n)
        _possible_cpus = n
    return _possible_cpus


def destroy_links(links: list[Link]) -> None:
    """Detach all at once: a perf-event link (tracepoint, kprobe, uprobe) waits in the kernel
    for RCU grace periods as it goes, 35-130 ms each here; side by side those waits overlap
    (the calls release the GIL), one after the other 16 syscall tracepoints took 1.0 s."""
    pending = [link for link in links if link.ptr]
    if len(pending) < 2:
        for link in pending:
            link.destroy()
        return
    threads = [threading.Thread(target=link.destroy, name=f"detach {link.program}")
               for link in pending]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class BpfObject:
    """One BPF ELF object: its programs, maps and the links made from it."""

    def __init__(self, elf: bytes, name: str) -> None:
        self.name = name
        self.links: list[Link] = []
        self.siblings: list[BpfObject] = []  # loaded some of the programs (see load)
        self._elf = ctypes.create_string_buffer(elf, len(elf))
        opts = libbpf.BpfObjectOpenOpts(sz=ctypes.sizeof(libbpf.BpfObjectOpenOpts))
        opts.object_name = name.encode()
        _log.take()
        ptr = lib.bpf_object__open_mem(self._elf, len(elf), ctypes.byref(opts))
        if not ptr:
            raise BpfError(f"open BPF object {name}", libbpf.last_errno(), _log.take())
        self.ptr: int = ptr
        self.programs = {p.name: p for p in self._iter_programs()}
        self.maps = {m.name: m for m in self._iter_maps()}
        self.loaded = False

    def _iter_programs(self) -> Iterator[Program]:
        prog = lib.bpf_object__next_program(self.ptr, None)
        while prog:
            name = lib.bpf_program__name(prog).decode()
            section = lib.bpf_program__section_name(prog).decode()
            yield Program(prog, name, section, self)
            prog = lib.bpf_object__next_program(self.ptr, prog)

    def _iter_maps(self) -> Iterator[Map]:
        m = lib.bpf_object__next_map(self.ptr, None)
        while m:
            yield Map(m, lib.bpf_map__name(m).decode(), self)
            m = lib.bpf_object__next_map(self.ptr, m)

    def btf(self) -> Btf:
        """The object's own BTF: the record and config layouts as the compiler laid them out."""
        return Btf.borrowed(lib.bpf_object__btf(self.ptr), owner=self)

    def global_data(self, section: str) -> Map:
        """The map behind .rodata / .bss / .data (libbpf prefixes it with the object name)."""
        for m in self.maps.values():
            if m.name == section or m.name.endswith(section):
                return m
        raise BpfError(f"object {self.name} has no {section} section", 2)

    def write_global(self, section: str, variable: str, data: bytes) -> None:
        """Set a global variable before load (how `const volatile` config reaches BPF)."""
        offset = self.btf().datasec_offset(section, variable)
        image = self.global_data(section).initial_value()
        ctypes.memmove(ctypes.addressof(image) + offset, data, len(data))

    def load(self, jobs: int | None = None) -> None:
        """Load the maps and the programs chosen (autoload), with the programs shared out
        among up to `jobs` objects loading side by side (default: one per CPU).

        The kernel's verifier takes most of a load (ut_trace's default programs: 0.6 s
        of 0.7) and checks one program at a time per call; libbpf loads an object's
        programs one after the other. So this object loads only the maps, and copies
        of it opened from the same ELF, each using those maps, load a share of the
        programs each, in threads (the load releases the GIL). `programs` then names
        the loaded copies; links made from them belong to this object all the same.
        """
        chosen = [p for p in self.programs.values() if p.autoload]
        jobs = min(len(chosen), jobs or os.cpu_count() or 1)
        if jobs < 2:
            self._load()
            return
        for prog in chosen:
            prog.autoload = False
        self._load()
        shares: list[list[Program]] = [[] for _ in range(jobs)]
        sizes = [0] * jobs
        # the longest first, each to the lightest share: program size stands for its cost
        for prog in sorted(chosen, key=lambda p: -lib.bpf_program__insn_cnt(p.ptr)):
            lightest = sizes.index(min(sizes))
            shares[lightest].append(prog)
            sizes[lightest] += lib.bpf_program__insn_cnt(prog.ptr)
        for share in shares:
            self.siblings.append(self._sibling({p.name for p in share}))
        failures: list[BaseException] = []

        def load(sibling: BpfObject) -> None:
            try:
                sibling._load()
            except BaseException as e:  # re-raised below, in the caller's thread
                failures.append(e)

        threads = [threading.Thread(target=load, args=(s,), name=f"load {self.name}")
                   for s in self.siblings]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        for sibling in self.siblings:
            for name, prog in sibling.programs.items():
                if prog.autoload:
                    self.programs[name] = Program(prog.ptr, name, prog.section, self)

    def _sibling(self, programs: set[str]) -> BpfObject:
        """A copy opened from the same ELF that uses this object's maps (and so its
        global data, config included) and loads just `programs`."""
        sibling = BpfObject(self._elf.raw, self.name)
        for name, m in sibling.maps.items():
            err = lib.bpf_map__reuse_fd(m.ptr, self.maps[name].fd)
            if err:
                sibling.close()
                raise BpfError(f"map {name}: reuse in a copy of {self.name}", err)
        for name, prog in sibling.programs.items():
            prog.autoload = name in programs
        return sibling

    def _load(self) -> None:
        _log.take()
        err = lib.bpf_object__load(self.ptr)
        messages = _log.take()
        if err:
            failed = _FAILED_PROG.search(messages)
            logs = _VERIFIER_LOG.findall(messages)
            what = f"load {self.name}" + (f" program {failed.group(1)}" if failed else "")
            raise BpfLoadError(what, err, (logs[-1] if logs else messages).strip())
        self.loaded = True

    def close(self) -> None:
        destroy_links(self.links)
        self.links.clear()
        for sibling in self.siblings:
            sibling.close()
        self.siblings.clear()
        if self.ptr:
            lib.bpf_object__close(self.ptr)
            self.ptr = 0

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
