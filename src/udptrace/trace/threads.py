"""PREEMPT_RT: the threads that ran packets' steps, named as `ps` would (comm, pid, policy).

On PREEMPT_RT a softirq is work some thread does (irq/NN-name, ksoftirqd/N, the sender
leaving a bh-disabled section), so "NET_TX softirq" alone no longer says who ran it or at
which priority. The kernel records each step's thread id and scheduling (struct ut_thread);
the name comes from /proc, read once per thread: kernel threads live as long as the system.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

# linux/sched.h's policy numbers, as chrt names them
POLICIES = {0: "OTHER", 1: "FIFO", 2: "RR", 3: "BATCH", 5: "IDLE", 6: "DEADLINE"}
STEPS = ("xmit", "completion")  # struct ut_thread's `step` in the context_threads key


@functools.lru_cache(maxsize=4096)
def comm(tid: int) -> str:
    try:
        return Path(f"/proc/{tid}/comm").read_text().strip()
    except OSError:
        return "?"  # gone before it was named: a thread that exited


def title(tid: int, policy: int, rt_priority: int) -> str:
    """`irq/24-virtio0 (pid 95, FIFO 50)`, `ksoftirqd/0 (pid 14, OTHER)`."""
    sched = POLICIES.get(policy, f"policy {policy}")
    if policy in (1, 2):
        sched += f" {rt_priority}"
    return f"{comm(tid)} (pid {tid}, {sched})"


@dataclass(frozen=True)
class StepThread:
    """Sent packets whose driver call (`xmit`) or TX completion ran in this thread."""

    step: str  # "xmit" or "completion"
    context: str  # enum ut_context's name: what the thread was doing ("net_tx", ...)
    tid: int
    policy: int
    rt_priority: int
    packets: int

    @property
    def title(self) -> str:
        return title(self.tid, self.policy, self.rt_priority)

    def as_dict(self) -> dict[str, object]:
        return {"step": self.step, "context": self.context, "thread": comm(self.tid),
                "tid": self.tid, "policy": POLICIES.get(self.policy, str(self.policy)),
                "rt_priority": self.rt_priority, "packets": self.packets}
