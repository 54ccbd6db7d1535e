"""`--uprobe BINARY:SYMBOL`: the user-space function whose entry starts a datagram's record.

Accepted forms: ``BINARY:SYMBOL``, ``BINARY:SYMBOL+OFFSET`` and ``BINARY:0xADDRESS``
(an address as the ELF file numbers it, like ``nm`` prints). BINARY is a path, a
program on PATH, or a shared library by name; with ``-p`` a library is found among
the traced process's mappings first. The ELF file is read with pyelftools to turn
the symbol into the file offset the kernel's uprobe needs, and to suggest close
names when the symbol is wrong.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from udptrace.errors import UsageError

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

FUNCTION_TYPES = {"STT_FUNC", "STT_GNU_IFUNC"}
SUGGESTIONS = 5
PF_X = 1


@dataclass(frozen=True)
class UprobeTarget:
    spec: str  # as the user wrote it
    binary: str  # the file the uprobe is placed in
    function: str  # symbol name, or the address as text
    offset: int  # file offset of the probed instruction

    def __str__(self) -> str:
        return f"{self.binary}:{self.function}"


def _split(spec: str) -> tuple[str, str, int]:
    """BINARY, SYMBOL (or 0xADDRESS) and the offset added to it."""
    binary, sep, where = spec.rpartition(":")
    if not sep or not binary or not where:
        raise UsageError(f"--uprobe '{spec}': give BINARY:SYMBOL, BINARY:SYMBOL+OFFSET "
                         "or BINARY:0xADDRESS")
    symbol, plus, extra = where.partition("+")
    try:
        offset = int(extra, 0) if plus else 0
    except ValueError:
        raise UsageError(f"--uprobe '{spec}': '{extra}' is not an offset (e.g. +0x10)") from None
    return binary, symbol, offset


def _mapped_files(pid: int) -> list[str]:
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []
    files = []
    for line in lines:
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("/"):
            files.append(fields[5])
    return list(dict.fromkeys(files))


def _library_paths() -> dict[str, str]:
    """ld.so's cache: library name → path."""
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return {}
    paths = {}
    for line in out.splitlines()[1:]:
        name, _, path = line.strip().partition(" => ")
        paths.setdefault(name.split(" (")[0], path)
    return paths


def _matches(name: str, path: str) -> bool:
    base = os.path.basename(path)
    return base == name or base.startswith(name + ".")


def resolve_binary(name: str, pids: tuple[int, ...] = ()) -> str:
    if "/" in name:
        if not Path(name).is_file():
            raise UsageError(f"--uprobe: no file '{name}'")
        return str(Path(name).resolve())
    for pid in pids:
        found = [p for p in _mapped_files(pid) if _matches(name, p)]
        if found:
            return found[0]
    on_path = shutil.which(name)
    if on_path:
        return str(Path(on_path).resolve())
    for library, path in _library_paths().items():
        if _matches(name, library):
            return path
    where = " in the traced process's mappings," if pids else ""
    raise UsageError(f"--uprobe: no binary or library '{name}'{where} on PATH or in ld.so's "
                     "cache: give its path")


def _functions(elf: ELFFile) -> tuple[dict[str, tuple[int, int]], bool]:
    """Defined functions (name → address, size), and whether a full symbol table exists."""
    from elftools.elf.sections import SymbolTableSection

    functions: dict[str, tuple[int, int]] = {}
    has_symtab = False
    for section in elf.iter_sections():
        if not isinstance(section, SymbolTableSection):
            continue
        has_symtab |= section.name == ".symtab"
        for sym in section.iter_symbols():
            if sym["st_info"]["type"] in FUNCTION_TYPES and sym["st_value"] and sym.name:
                functions.setdefault(sym.name.split("@")[0], (sym["st_value"], sym["st_size"]))
    return functions, has_symtab


def _close_names(symbol: str, names: list[str]) -> list[str]:
    containing = sorted((n for n in names if symbol.lower() in n.lower()), key=len)
    similar = difflib.get_close_matches(symbol, names, n=SUGGESTIONS, cutoff=0.6)
    return list(dict.fromkeys(containing + similar))[:SUGGESTIONS]


def _file_offset(elf: ELFFile, address: int) -> int | None:
    for segment in elf.iter_segments():
        header = segment.header
        if header["p_type"] != "PT_LOAD" or not header["p_flags"] & PF_X:
            continue
        if header["p_vaddr"] <= address < header["p_vaddr"] + header["p_filesz"]:
            return address - header["p_vaddr"] + header["p_offset"]
    return None


def resolve(spec: str, pids: tuple[int, ...] = ()) -> UprobeTarget:
    # pyelftools only when asked: importing it is 0.08 s of every trace's start
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    name, symbol, extra = _split(spec)
    binary = resolve_binary(name, pids)
    try:
        with open(binary, "rb") as f:
            elf = ELFFile(f)
            if symbol.lower().startswith("0x"):
                address = int(symbol, 16) + extra
                function = symbol
            else:
                functions, has_symtab = _functions(elf)
                if symbol not in functions:
                    close = _close_names(symbol, sorted(functions))
                    hint = f"; close: {', '.join(close)}" if close else ""
                    if not functions:
                        raise UsageError(f"--uprobe: {binary} is stripped (no symbols): "
                                         "give an address, BINARY:0xADDRESS")
                    what = "" if has_symtab else " (stripped: only exported functions)"
                    raise UsageError(f"--uprobe: no function '{symbol}' in {binary}{what}{hint}")
                start, size = functions[symbol]
                if size and extra >= size:
                    raise UsageError(f"--uprobe: +{extra} is past the end of {symbol} "
                                     f"({size} bytes)")
                address = start + extra
                function = symbol + (f"+{extra:#x}" if extra else "")
            offset = _file_offset(elf, address)
    except ELFError:
        raise UsageError(f"--uprobe: {binary} is not an ELF file (give a program or a "
                         "shared library)") from None
    except OSError as e:
        raise UsageError(f"--uprobe: cannot read {binary}: {e.strerror}") from None
    if offset is None:
        raise UsageError(f"--uprobe: {function} is not in an executable segment of {binary}")
    return UprobeTarget(spec, binary, function, offset)
