"""How fast udptrace attaches to a running publisher, and how fast Ctrl-C gives the shell back.

    sudo .venv/bin/python bench/attach.py [--runs 5] [--sets default,e2e,...] [--cold]
                                          [--before DIR]

A cyclic publisher (tests/programs/cyclic_publisher.c, one datagram to 127.0.0.1 every
millisecond, sent from its function publish_cb) runs throughout. For each option set,
`udptrace` is started on it `--runs` times; a run reports

- attach: from the exec of `udptrace` until its last BPF link was made (its fds are
  watched every 2 ms until it prints that it is tracing), and `started`, until that line;
- exit: from SIGINT until the process has exited, its report printed and every link of
  the run gone (the link ids it held, read from /proc/PID/fdinfo while it traced, are
  looked up again with bpftool: a run with one still present is flagged).

Each set's medians go to stdout and, with the machine, kernel and load, to
bench/results/attach-DATE.json. Feature probes are kept per boot (/run/udptrace):
`--cold` removes that cache before every run, for a first run after boot. `--before DIR`
also runs the udptrace of another checkout (its BPF objects built), alternating with this
one run by run, so both meet the same load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
PUBLISHER = ROOT / "tests" / "programs" / "cyclic_publisher.c"
UDPTRACE = [sys.executable, "-m", "udptrace"]
PORT = 47211
STARTED = ("tracing UDP", "recording UDP", "serving Prometheus")
TRACE_S = 1.0  # traced before SIGINT: long enough for status lines and records
CACHE = Path("/run/udptrace")


def option_sets(publisher: str, pid: int, out: Path) -> dict[str, list[str]]:
    uprobe = ["--uprobe", f"{publisher}:publish_cb"]
    every = ["--e2e", *uprobe, "--interval", "--wakeup", "--pubsub"]
    target = ["-p", str(pid)]
    return {
        "default": ["trace", *target],
        "e2e": ["trace", *target, "--e2e"],
        "uprobe-interval": ["trace", *target, *uprobe, "--interval"],
        "wakeup": ["trace", *target, "--wakeup"],
        "pubsub": ["trace", *target, "--pubsub", "--uadp-port", str(PORT)],
        "json": ["trace", *target, "--json", str(out / "RUN.jsonl")],
        "all": ["trace", *target, *every],
        "record": ["record", *target, "-o", str(out / "RUN.parquet")],
        "record-all": ["record", *target, *every, "-o", str(out / "all-RUN.parquet")],
        "exporter": ["exporter", *target, "--listen", "127.0.0.1:0"],
    }


def _read_until_started(out: IO[str], seen: list[str]) -> None:
    for line in out:
        seen.append(line)
        if line.startswith(STARTED):
            return


def link_ids(pid: int) -> set[int]:
    ids: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except OSError:
        return ids
    for fd in fds:
        try:
            text = fd.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("link_id:"):
                ids.add(int(line.split()[1]))
    return ids


def links_present(ids: set[int]) -> int:
    present = 0
    for link in ids:
        shown = subprocess.run(["bpftool", "link", "show", "id", str(link)],
                               capture_output=True, check=False)
        present += shown.returncode == 0
    return present


def one_run(argv: list[str], cold: bool, env: dict[str, str]) -> dict[str, float | int]:
    if cold:
        subprocess.run(["rm", "-rf", str(CACHE)], check=True)
    start = time.monotonic()
    p = subprocess.Popen([*UDPTRACE, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, cwd=ROOT, env=env)
    assert p.stdout is not None
    seen: list[str] = []
    reader = threading.Thread(target=_read_until_started, args=(p.stdout, seen))
    reader.start()
    links, attached = 0, 0.0
    while reader.is_alive():
        now = len(link_ids(p.pid))
        if now > links:
            links, attached = now, time.monotonic() - start
        reader.join(0.002)
    started = time.monotonic() - start
    if not seen or not seen[-1].startswith(STARTED):
        p.wait()
        raise SystemExit(f"udptrace {' '.join(argv)} did not start:\n{''.join(seen)}")
    time.sleep(TRACE_S)
    ids = link_ids(p.pid)
    interrupt = time.monotonic()
    p.send_signal(signal.SIGINT)
    p.stdout.read()
    code = p.wait()
    gone = time.monotonic() - interrupt
    return {"attach_s": attached, "started_s": started, "exit_s": gone, "links": len(ids),
            "links_left": links_present(ids), "exit_code": code}


def summarise(argv: list[str], runs: list[dict[str, float | int]]) -> dict[str, object]:
    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 3)

    return {"argv": argv, "attach_s": median("attach_s"), "started_s": median("started_s"),
            "exit_s": median("exit_s"), "links": runs[0]["links"],
            "links_left": max(r["links_left"] for r in runs),
            "runs": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                     for r in runs]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sets", default="", help="comma-separated option sets (default: all)")
    ap.add_argument("--cold", action="store_true", help="no per-boot feature cache")
    ap.add_argument("--before", type=Path, default=None,
                    help="a checkout to compare with, run by run")
    ap.add_argument("--out", type=Path, default=None, help="result file")
    args = ap.parse_args()
    trees = {"after": dict(os.environ)}
    if args.before:
        trees["before"] = {**os.environ, "PYTHONPATH": str(args.before.resolve() / "src")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        publisher = work / "cyclic_publisher"
        subprocess.run(["gcc", "-O2", "-o", str(publisher), str(PUBLISHER)], check=True)
        pub = subprocess.Popen([str(publisher), "127.0.0.1", str(PORT), str(10**9), "1000"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert pub.stdin is not None
        pub.stdin.write(b"go\n")
        pub.stdin.flush()
        try:
            sets = option_sets(str(publisher), pub.pid, work)
            chosen = args.sets.split(",") if args.sets else list(sets)
            results: dict[str, dict[str, object]] = {tree: {} for tree in trees}
            for name in chosen:
                runs: dict[str, list[dict[str, float | int]]] = {tree: [] for tree in trees}
                for i in range(args.runs):
                    for tree, env in trees.items():
                        argv = [a.replace("RUN", f"{tree}{i}") for a in sets[name]]
                        runs[tree].append(one_run(argv, args.cold, env))
                for tree in trees:
                    r = summarise(["udptrace", *sets[name]], runs[tree])
                    results[tree][name] = r
                    flag = f"  {r['links_left']} LINKS LEFT" if r["links_left"] else ""
                    print(f"{name:16} {tree:6} attach {r['attach_s']:.2f} s  started "
                          f"{r['started_s']:.2f} s  exit {r['exit_s']:.2f} s  "
                          f"({r['links']} links){flag}", flush=True)
        finally:
            pub.kill()
            pub.wait()
    now = datetime.datetime.now(datetime.UTC)
    out = args.out or ROOT / "bench" / "results" / f"attach-{now:%Y-%m-%d}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "date": now.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "kernel": platform.release(),
        "load": "load average {:.2f} {:.2f} {:.2f} at the end".format(*os.getloadavg()),
        "cold": args.cold, "runs": args.runs,
        "before": str(args.before) if args.before else None,
        "sets": results,
    }, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
