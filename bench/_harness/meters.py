"""Memory and CPU meters of this process, of given process trees and of the whole
machine, read from ``/proc`` and ``getrusage`` (Linux only)."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Iterable

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
    """User + system CPU time of ``root_pid`` and its live children (the postmaster
    and its backends); 0 when unknown."""
    return processes_cpu_seconds([root_pid])


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
