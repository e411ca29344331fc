"""The tables of the stack's limit (issue #26): every row beside the bare echo, the
floor and OpenBao; the targets met or missed; the vault's latency at fixed offered
rates (open loop); and how many calls each coalesced database statement served."""

from __future__ import annotations

import statistics
from collections import Counter

import _harness as h

from . import batch_metrics, targets
from .measure import Row, Sample
from .wait_events import Waits


def median_rate(samples: list[Sample]) -> float | None:
    return statistics.median(s.rate for s in samples) if samples else None


def spread(values: list[float]) -> str:
    """The median, and the range (min to max) when there are several values."""
    if not values or any(v != v for v in values):  # none, or NaN: no successful call
        return "n/a"
    median = h.cell(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({h.cell(min(values))}\u2013{h.cell(max(values))})"


def errors(counters: list[Counter[str]]) -> str:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return ", ".join(f"{code} {n:,}" for code, n in sorted(total.items())) or "0"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}"


def echo_line(echo: list[Sample]) -> str:
    if not echo:
        return "echo: not measured"
    per_call = statistics.median(1000 * s.server_cores / s.rate for s in echo if s.rate)
    return (
        "The limit of one unary call (echo: bare grpc.aio generic handler on uvloop, bytes "
        f"in and out, no protobuf, no database): {spread([s.rate for s in echo])} calls/s, "
        f"p50 {spread([s.p50_ms for s in echo])} ms, p99 {spread([s.p99_ms for s in echo])} "
        f"ms, server CPU {per_call:.3f} ms/call, errors {errors([s.errors for s in echo])}"
    )


def ratio_table(rows: list[Row], echo: list[Sample]) -> str:
    """Medians of calls/s of each system on the row, and the vault's ratios to each."""
    echo_rate = median_rate(echo)
    lines: list[list[object]] = []
    for row in rows:
        vault = median_rate(row.vault)
        if vault is None:
            continue
        bao, floor = median_rate(row.bao), median_rate(row.floor)
        lines.append(
            [
                row.pair.vault_label,
                vault,
                bao if bao is not None else "-",
                floor if floor is not None else "-",
                echo_rate if echo_rate is not None else "-",
                _ratio(vault, bao),
                _ratio(vault, floor),
                _ratio(vault, echo_rate),
            ]
        )
    return h.table(
        [
            "vault row",
            "vault calls/s",
            "OpenBao",
            "floor",
            "echo",
            "vault/OpenBao",
            "vault/floor",
            "vault/echo",
        ],
        lines,
    )


def open_p99_at(rows: list[Row], fraction: float) -> dict[str, float]:
    """The vault's open-loop p99 (median over runs) at ``fraction``, by row key."""
    return {
        row.pair.key: statistics.median(s.p99_ms for s in row.open_loop[fraction])
        for row in rows
        if row.open_loop.get(fraction)
    }


def targets_table(rows: list[Row], echo: list[Sample]) -> str:
    vault = {r.pair.key: rate for r in rows if (rate := median_rate(r.vault)) is not None}
    bao = {r.pair.key: rate for r in rows if (rate := median_rate(r.bao)) is not None}
    found = targets.evaluate(
        vault, bao, median_rate(echo), open_p99_at(rows, targets.OPEN_LOOP_FRACTION)
    )
    return h.table(
        ["target (issue #26)", "measured", "verdict"],
        [[t.text, h.cell(t.measured), t.verdict] for t in found],
    )


def open_loop_table(rows: list[Row]) -> str:
    """Per vault row and offered fraction of its peak: the rate offered, latency from
    when each call was due, late starts."""
    lines: list[list[object]] = []
    for row in rows:
        for fraction, samples in sorted(row.open_loop.items()):
            peak = statistics.median(s.calls_rate for s in row.vault)
            due = sum(s.due for s in samples)
            late = sum(s.late for s in samples)
            lines.append(
                [
                    row.pair.vault_label,
                    f"{fraction:.0%}",
                    peak * fraction,
                    spread([s.calls_rate for s in samples]),
                    spread([s.p50_ms for s in samples]),
                    spread([s.p99_ms for s in samples]),
                    f"{late:,} of {due:,}",
                    errors([s.errors for s in samples]),
                ]
            )
    return h.table(
        [
            "vault row",
            "of peak",
            "offered calls/s",
            "completed OK calls/s",
            "p50 ms (from due)",
            "p99 ms (from due)",
            "late starts (> 2 ms)",
            "errors",
        ],
        lines,
    )


def _batch_lines(label: str, samples: list[Sample], seconds: float) -> list[list[object]]:
    if not samples:
        return []
    operations = sorted({op for s in samples for op in s.batches})
    if not operations:
        return [[label, "no coalescing", "-", "-", "-", "-"]]
    lines: list[list[object]] = []
    for op in operations:
        windows = [s.batches[op] for s in samples if op in s.batches]
        total = batch_metrics.combine({op: w} for w in windows)[op]
        means = [w.total / w.count for w in windows]
        lines.append(
            [
                label,
                op,
                spread([w.count / seconds for w in windows]),
                spread(means),
                h.cell(total.bucket_of(0.5)),
                h.cell(total.bucket_of(0.9)),
            ]
        )
    return lines


def batch_table(rows: list[Row], seconds: float) -> str:
    """Per vault measurement and operation: batches per second, mean calls per batch
    (medians over runs, with ranges), and the buckets holding the 50th and 90th
    percentile of all runs' batches together."""
    lines: list[list[object]] = []
    for row in rows:
        lines.extend(_batch_lines(f"{row.pair.key} closed loop", row.vault, seconds))
        for fraction, samples in sorted(row.open_loop.items()):
            lines.extend(_batch_lines(f"{row.pair.key} open {fraction:.0%}", samples, seconds))
    return h.table(
        [
            "vault measurement",
            "operation",
            "batches/s",
            "mean calls/batch",
            "p50 bucket (le)",
            "p90 bucket (le)",
        ],
        lines,
    )


WAIT_EVENTS_SHOWN = 6


def wait_table(rows: list[Row]) -> str:
    """Per vault row (closed loop, all runs together): busy PostgreSQL backends per
    sample on average, and the share of busy-backend samples of each wait event, the
    most frequent first."""
    lines: list[list[object]] = []
    for row in rows:
        total = Waits()
        for sample in row.vault:
            total.add(sample.waits)
        if not total.samples:
            continue
        busy = sum(total.busy.values())
        top = total.busy.most_common(WAIT_EVENTS_SHOWN)
        shown = ", ".join(f"{what} {100 * n / busy:.0f}%" for what, n in top) or "none busy"
        lines.append([row.pair.key, f"{total.samples:,}", f"{total.mean_busy():.2f}", shown])
    return h.table(
        ["vault row", "samples", "busy backends (mean)", "busy-backend samples by wait event"],
        lines,
    )
