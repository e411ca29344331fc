"""Formatting what the benchmarks print: percentiles, Markdown tables and their cells,
and the machine-and-software summary line."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence

import asyncpg

from .loop import loop_name


def machine_summary(pg_version: str) -> str:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    import grpc

    return (
        f"machine: {os.cpu_count()} cores ({usable} usable), {platform.machine()}, "
        f"Linux {platform.release()}\n"
        f"software: Python {platform.python_version()}, PostgreSQL {pg_version} (embedded, "
        f"fsync on), grpcio {grpc.__version__}, asyncpg {asyncpg.__version__}, "
        f"event loop {loop_name()}"
    )


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A small Markdown table (pastes into bench/README.md as is)."""
    cells = [[str(h) for h in headers], *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *[line(r) for r in cells[1:]]])


def cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
