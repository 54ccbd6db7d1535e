"""A join's datagrams into files, written by DuckDB itself: one row (or JSON line) per
datagram and receiving recording, and the summary (Parquet key-value metadata
``udptrace``, or the JSON stream's last line). Each appears whole or not at all."""

from __future__ import annotations

import json

from udptrace.join.engine import JoinEngine
from udptrace.report.atomic import AtomicFile

ORDER = "ORDER BY sent_at_ns, receiver_rec"


def _quoted(path: object) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _text(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def write_parquet(engine: JoinEngine, out: AtomicFile, summary: dict) -> None:
    metadata = _text(summary).replace("'", "''")
    engine.con.execute(f"""COPY (SELECT * FROM datagrams {ORDER}) TO {_quoted(out.temporary)}
                           (FORMAT parquet, COMPRESSION zstd,
                            KV_METADATA {{udptrace: '{metadata}'}})""")
    out.commit()


def write_json(engine: JoinEngine, out: AtomicFile, summary: dict) -> None:
    engine.con.execute(f"""COPY (SELECT 'datagram' AS type, * FROM datagrams {ORDER})
                           TO {_quoted(out.temporary)} (FORMAT json)""")
    with open(out.temporary, "a") as tail:
        tail.write(_text(summary) + "\n")
    out.commit()
