"""The kernel side: BPF C sources and the objects compiled from them at install time."""

from __future__ import annotations

from importlib import resources

from udptrace.errors import BpfUnavailableError


def object_bytes(name: str) -> bytes:
    """The compiled object ``<name>.bpf.o`` shipped in this package."""
    path = resources.files(__name__) / f"{name}.bpf.o"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BpfUnavailableError(
            f"the BPF object {name}.bpf.o is missing: reinstall udptrace with "
            "'pip install .' (needs clang and libbpf-dev)"
        ) from None
