"""The guest's side of tests/test_two_hosts.py: the publisher's host.

Run by the VM as a step. Brings up the virtio-net NIC (its other end a tap in a
namespace of the host's test), records what it sends and what it receives on it, runs a
cyclic UADP publisher to the subscriber on the host, drains the host's traffic back on
a plain socket, and leaves the two recordings on the share the test mounted (9p tag
OUT_TAG). The host paces itself by the lines this prints (MARK ...).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

BUSYBOX = "/run/udptrace-vm/busybox"  # init.sh's copy, the guest's own modprobe
OUT_TAG = "udptrace-out"
MARK = "UDPTRACE-TWO-HOSTS"
UDPTRACE = [sys.executable, "-m", "udptrace"]


def say(*words: object) -> None:
    print(MARK, *words, flush=True)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def nic() -> str:
    subprocess.run([BUSYBOX, "modprobe", "virtio_net"], check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo"]
        if found:
            return found[0]
        time.sleep(0.1)
    raise SystemExit("no NIC appeared after modprobe virtio_net")


def record(out: Path, ifname: str, *extra: str) -> subprocess.Popen:
    process = subprocess.Popen([*UDPTRACE, "record", "-o", str(out), "-i", ifname, "--pubsub",
                                "-d", "600", *extra], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    return process


def ready(process: subprocess.Popen) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("recording"):
        raise SystemExit(f"a recorder did not start: {line}{process.stderr.read()}")


def drain(sock: socket.socket, until: float, got: list[int]) -> None:
    """The host's datagrams, read as they come (so none waits in a queue at the end)."""
    while time.monotonic() < until:
        try:
            sock.recv(2048)
            got[0] += 1
        except TimeoutError:
            continue


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--interval-ms", type=float, required=True)
    parser.add_argument("--back-port", type=int, required=True)
    parser.add_argument("--back-seconds", type=float, required=True)
    args = parser.parse_args()
    sh(BUSYBOX, "hostname", "guest")
    ifname = nic()
    sh("ip", "link", "set", ifname, "up")
    sh("ip", "addr", "add", f"{args.address}/24", "dev", ifname)
    share = Path("/mnt") / OUT_TAG
    share.mkdir(parents=True, exist_ok=True)
    sh(BUSYBOX, "mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L", OUT_TAG, str(share))
    work = Path("/tmp/two-hosts")
    work.mkdir()
    started = time.monotonic()
    recorders = [record(work / "guest-tx.parquet", ifname),
                 record(work / "guest-rx.parquet", ifname, "--rx")]
    for process in recorders:
        ready(process)
    # bound before "recording" is said: that word starts the host's flow back, and a
    # datagram that came before the bind was dropped NO_SOCKET (CI saw it once)
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind((args.address, args.back_port))
    back.settimeout(0.2)
    say("recording", f"{time.monotonic() - started:.1f}")
    got = [0]
    sink = threading.Thread(target=drain, args=(back, time.monotonic() + args.back_seconds,
                                                got))
    sink.start()
    publisher = subprocess.Popen([*UDPTRACE, "publish", f"opc.udp://{args.peer}:4840/",
                                  "--sequence-numbers", "--interval-ms", str(args.interval_ms),
                                  "--count", str(args.count), "--json"],
                                 stdout=subprocess.PIPE, text=True)
    say("publishing")
    published = json.loads(publisher.communicate(timeout=300)[0])
    say("published", published["messages_sent"])
    sink.join()
    for process in recorders:
        process.send_signal(signal.SIGINT)
    for process in recorders:
        _, err = process.communicate(timeout=120)
        if process.returncode:
            raise SystemExit(f"a recorder failed: {err}")
    for name in ("guest-tx.parquet", "guest-rx.parquet"):
        shutil.copytree(work / name, share / name)
    print(json.dumps({"published": published, "received_back": got[0],
                      "seconds": round(time.monotonic() - started, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
