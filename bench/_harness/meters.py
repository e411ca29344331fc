"""Memory and CPU meters of this process, of given process trees and of the whole
machine, read from ``/proc`` and ``getrusage`` (Linux only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Iterable
from pathlib import Path

MIB = 1024 * 1024


def status_kib(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return status_kib("VmRSS") * 1024


class PeakRss:
    """Peak RSS growth of this process over a stretch of time.

    The kernel's high-water mark (VmHWM, = getrusage ru_maxrss) only ever grows;
    writing 5 to /proc/self/clear_refs resets it to the current RSS (Linux >= 4.0),
    so the peak is that of the measured stretch alone. Where that is refused, a
    thread samples VmRSS every 2 ms instead.
    """

    def __init__(self) -> None:
        self.baseline = 0
        self.peak = 0
        self.method = ""
        self._sampler: asyncio.Future[None] | None = None
        self._sampling = False

    def start(self) -> None:
        self.baseline = rss_bytes()
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
                clear.write("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "sampled VmRSS"
            self.peak = self.baseline
            self._sampling = True
            self._sampler = asyncio.get_running_loop().run_in_executor(None, self._sample)

    def _sample(self) -> None:
        while self._sampling:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    async def stop(self) -> int:
        """Stop measuring; returns peak minus baseline, in bytes."""
        if self._sampler is not None:
            self._sampling = False
            await self._sampler
        else:
            self.peak = status_kib("VmHWM") * 1024
        return max(0, self.peak - self.baseline)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_tree_cpu_seconds(root_pid: int | None) -> float:
    """User + system CPU time of ``root_pid`` (a postmaster) and its backends, exited
    ones included; 0 when unknown. See postmaster_cpu_seconds."""
    return postmaster_cpu_seconds(root_pid)


def processes_cpu_seconds(roots: Iterable[int | None]) -> float:
    """User + system CPU time of the given processes and their live children, each once."""
    wanted = {pid for pid in roots if pid is not None}
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if int(entry.name) in wanted or int(fields[1]) in wanted:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def postmaster_cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a postmaster and its backends so far, 0 when unknown.

    Those that have exited too: the postmaster reaps them, so their time is in its
    cutime and cstime. (Summing the live processes alone loses the whole lifetime of
    a backend that exits inside a window -- an idle pool connection closed, say -- and
    the window's figure can come out negative.)
    """
    if pid is None:
        return 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ticks = sum(_stat_numbers(pid, 4))  # utime, stime, cutime, cstime
    except OSError:
        return 0.0
    for child in children:
        with contextlib.suppress(OSError):  # exited meanwhile
            ticks += sum(_stat_numbers(int(child), 2))
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat_numbers(pid: int, count: int) -> list[int]:
    """``count`` fields of /proc/<pid>/stat from utime (the 14th) on."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    # The command name, in parentheses, may hold spaces: count from after it.
    return [int(v) for v in text[text.rfind(")") + 2 :].split()[11 : 11 + count]]
