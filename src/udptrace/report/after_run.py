"""`trace --html`, `trace --pcapng` and the demo: the run recorded to a temporary directory
while it goes, each output written from that recording at the end, whole or not at all."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from udptrace.report.atomic import AtomicFile
from udptrace.report.parquet import Recording, RecordingWriter, open_recording
from udptrace.report.recorder import Recorder
from udptrace.trace.run import TraceResult
from udptrace.trace.session import TraceSession
from udptrace.trace.timebase import Timebase

Writer = Callable[[Recording, IO[bytes]], None]


class AfterRun:
    def __init__(self, outputs: Sequence[tuple[str, str | Path, Writer]]) -> None:
        """``outputs``: what each is ("HTML report"), its path, what writes it."""
        # opened first: an unwritable path fails before tracing starts
        self.outputs: list[tuple[str, AtomicFile, Writer]] = []
        for what, path, write in outputs:
            self.outputs.append((what, AtomicFile(path), write))
        self.scratch = tempfile.TemporaryDirectory(prefix="udptrace-after-")
        self.writer = RecordingWriter(Path(self.scratch.name) / "run.parquet")
        self.recorder: Recorder | None = None

    def start(self, session: TraceSession, command: list[str],
              timebase: Timebase | None = None) -> Recorder:
        self.recorder = Recorder(self.writer, session, command, timebase=timebase)
        return self.recorder

    def finish(self, result: TraceResult) -> list[tuple[str, Path]]:
        assert self.recorder is not None, "start() first"
        self.recorder.finish(result)
        return self.publish()

    def publish(self) -> list[tuple[str, Path]]:
        """The outputs, from the finished recording (the demo finishes that itself)."""
        recording = open_recording(self.writer.path)
        for _, out, write in self.outputs:
            write(recording, out.file)
            out.commit()
        return [(what, out.path.resolve()) for what, out, _ in self.outputs]

    def close(self) -> None:
        for _, out, _ in self.outputs:
            out.discard()
        self.scratch.cleanup()

    def __enter__(self) -> AfterRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
