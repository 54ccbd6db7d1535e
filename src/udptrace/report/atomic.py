"""An output file that appears whole or not at all.

Opened (so an unwritable path fails before anything is traced) under a
hidden temporary name in the target's directory, renamed over the target
only by :meth:`AtomicFile.commit`; any other way out removes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from udptrace.errors import UsageError


class AtomicFile:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise UsageError(f"cannot write {self.path}: it is a directory")
        self.temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.file: IO[bytes] = open(self.temporary, "wb")  # noqa: SIM115 (closed below)
        except OSError as e:
            raise UsageError(f"cannot write {self.path}: {e.strerror}") from None

    def commit(self) -> None:
        self.file.close()
        os.replace(self.temporary, self.path)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.temporary.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
