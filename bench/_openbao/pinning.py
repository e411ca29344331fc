"""``--pin``: the servers on one CPU set, the load clients on the other.

Every server under test (the vault with its embedded PostgreSQL, the floor with its
own, the echo server, OpenBao) runs on :attr:`CpuPlan.servers`; this driver and every
client process it starts run on :attr:`CpuPlan.clients`. Each row then counts calls/s
per server core, and the clients' own cost (grpc.aio's client is heavier than aiohttp)
no longer takes CPU from the server it loads.

How each process gets there, and why that covers PostgreSQL: a CPU affinity mask is
inherited by every thread and process created after it is set (``clone`` copies it)
and survives ``execve``. So

- a server is started through :func:`pinned_argv`, which sets the mask and then execs
  the server, so it holds from the server's first instruction: the vault's
  ``pg_ctl start`` and the postmaster it daemonizes, and every backend, checkpointer
  or autovacuum worker the postmaster forks later, inherit it (the postmaster is
  reparented away from the vault, but the mask was copied when it was forked). OpenBao
  is a Go program: its runtime sizes GOMAXPROCS from the mask at start-up.
- the driver pins all its own threads (:func:`pin_process`) before it starts
  anything; client processes, started later from it, inherit its mask.

:func:`affinities` reads the masks back, per thread, of a process tree and of a
postmaster's children (which are not in the vault's tree), so the report states what
was checked rather than what was intended.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Run as ``python -c _EXEC_PINNED <cpus> <program> <args...>``: set the mask, then
# become the program (the same as ``taskset -c <cpus>``, without needing util-linux).
_EXEC_PINNED = (
    "import os, sys; "
    "os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')}); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


@dataclass(frozen=True)
class CpuPlan:
    servers: frozenset[int]
    clients: frozenset[int]

    def describe(self) -> str:
        return (
            f"servers (vault + its PostgreSQL, floor + its PostgreSQL, echo, OpenBao) on "
            f"{cpu_list(self.servers)}, load clients and this driver on {cpu_list(self.clients)}"
        )


def cpu_list(cpus: Iterable[int]) -> str:
    ordered = sorted(cpus)
    return ("CPU " if len(ordered) == 1 else "CPUs ") + ",".join(str(c) for c in ordered)


def plan(usable: Iterable[int]) -> CpuPlan:
    """Split the usable CPUs: the lower half (at least one) for the clients, the rest
    for the servers. With 2 CPUs: clients on CPU 0, servers on CPU 1."""
    ordered = sorted(usable)
    if len(ordered) < 2:
        raise ValueError("pinning needs at least 2 usable CPUs")
    half = len(ordered) // 2
    return CpuPlan(servers=frozenset(ordered[half:]), clients=frozenset(ordered[:half]))


def usable_cpus() -> set[int]:
    return set(os.sched_getaffinity(0))


def pinned_argv(argv: list[str], cpus: frozenset[int] | None) -> list[str]:
    """``argv`` run on ``cpus`` from its first instruction on (``argv`` unchanged if None)."""
    if cpus is None:
        return argv
    return [sys.executable, "-c", _EXEC_PINNED, ",".join(map(str, sorted(cpus))), *argv]


def _tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def pin_process(pid: int, cpus: frozenset[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (``sched_setaffinity`` acts on one thread;
    threads created later inherit their creator's mask)."""
    for tid in _tasks(pid):
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.sched_setaffinity(tid, cpus)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for tid in _tasks(pid):
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            found.extend(int(c) for c in text.split())
    return found


def process_tree(roots: Iterable[int | None]) -> set[int]:
    """The given processes and all their live descendants."""
    seen: set[int] = set()
    pending = [pid for pid in roots if pid is not None]
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        pending.extend(_children(pid))
    return seen


def affinities(roots: Iterable[int | None]) -> Counter[frozenset[int]]:
    """How many threads of the trees under ``roots`` have each CPU mask."""
    masks: Counter[frozenset[int]] = Counter()
    for pid in process_tree(roots):
        for tid in _tasks(pid):
            with contextlib.suppress(OSError):  # exited meanwhile
                masks[frozenset(os.sched_getaffinity(tid))] += 1
    return masks


def check(what: str, masks: Counter[frozenset[int]], cpus: frozenset[int]) -> str:
    """A line for the report, or RuntimeError if a thread is not on ``cpus``."""
    stray = {mask: n for mask, n in masks.items() if mask != cpus}
    if stray:
        found = ", ".join(f"{n} on {cpu_list(mask)}" for mask, n in stray.items())
        raise RuntimeError(f"--pin: {what}: threads not on {cpu_list(cpus)}: {found}")
    return f"{what}: {sum(masks.values())} threads, all on {cpu_list(cpus)}"
