"""How many calls each coalesced statement served: the vault's histogram
``singura_db_batch_size{operation}``, scraped from its metrics endpoint
(``SINGURA_METRICS_LISTEN``) at the start and the end of each measured window, and the
difference summed up per operation.

Parsed with ``prometheus_client.parser``; no regular expressions. A vault without the
metric, or whose operations saw no batch in the window, gives an empty result, which
the report prints as "no coalescing".
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

METRIC = "singura_db_batch_size"
SCRAPE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Histogram:
    """One operation's histogram: cumulative counts per upper bound, count and sum."""

    buckets: tuple[tuple[float, float], ...]
    """(upper bound ``le``, cumulative count), ascending; the last bound is +Inf."""
    count: float
    total: float

    def minus(self, earlier: Histogram) -> Histogram:
        before = dict(earlier.buckets)
        return Histogram(
            tuple((le, n - before.get(le, 0.0)) for le, n in self.buckets),
            self.count - earlier.count,
            self.total - earlier.total,
        )

    def plus(self, other: Histogram) -> Histogram:
        theirs = dict(other.buckets)
        bounds = sorted({le for le, _ in self.buckets} | set(theirs))
        mine = dict(self.buckets)
        return Histogram(
            tuple((le, _at(mine, le) + _at(theirs, le)) for le in bounds),
            self.count + other.count,
            self.total + other.total,
        )

    def bucket_of(self, fraction: float) -> float:
        """The upper bound of the bucket that holds the ``fraction`` quantile (nan if empty)."""
        if self.count <= 0:
            return math.nan
        wanted = fraction * self.count
        for le, cumulative in self.buckets:
            if cumulative >= wanted:
                return le
        return math.inf


def _at(cumulative: Mapping[float, float], le: float) -> float:
    """A cumulative count at bound ``le``, from the nearest bound at or below it."""
    below = [n for bound, n in cumulative.items() if bound <= le]
    return max(below) if below else 0.0


Histograms = dict[str, Histogram]
"""By operation label."""


def parse(text: str) -> Histograms:
    """The ``singura_db_batch_size`` histograms in a Prometheus text exposition."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    counts: dict[str, float] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != METRIC or family.type != "histogram":
            continue
        for sample in family.samples:
            operation = sample.labels.get("operation", "")
            if sample.name == f"{METRIC}_bucket":
                buckets.setdefault(operation, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name == f"{METRIC}_count":
                counts[operation] = sample.value
            elif sample.name == f"{METRIC}_sum":
                sums[operation] = sample.value
    return {
        operation: Histogram(
            tuple(sorted(found)), counts.get(operation, 0.0), sums.get(operation, 0.0)
        )
        for operation, found in buckets.items()
    }


def combine(parts: Iterable[Histograms]) -> Histograms:
    """Sum per operation (the workers of ``serve --workers N``, or several windows)."""
    total: Histograms = {}
    for part in parts:
        for operation, histogram in part.items():
            known = total.get(operation)
            total[operation] = histogram if known is None else known.plus(histogram)
    return total


def window(before: Histograms, after: Histograms) -> Histograms:
    """What happened between two scrapes; operations with no batch in it left out."""
    empty = Histogram((), 0.0, 0.0)
    changed = {op: h.minus(before.get(op, empty)) for op, h in after.items()}
    return {op: h for op, h in changed.items() if h.count > 0}


def scrape(urls: Iterable[str]) -> Histograms:
    """Scrape each metrics URL (one per worker) and sum what they say."""
    texts = []
    for url in urls:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:  # noqa: S310 - a loopback http URL this script built
            texts.append(response.read().decode("utf-8"))
    return combine(parse(text) for text in texts)
