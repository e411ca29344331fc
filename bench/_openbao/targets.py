"""The targets of issue #26 for this benchmark's rows, and whether a run meets them.

Ratios of medians (over the alternated runs) of calls/s; ``token / reveal`` is
GetAccessToken's rate over RevealCredential's (within 10%: at least 0.9). The open-loop
target holds for every vault row measured open-loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

OPEN_LOOP_FRACTION = 0.5
OPEN_LOOP_P99_MS = 10.0


@dataclass(frozen=True)
class Target:
    text: str
    measured: float
    """The ratio (or p99 in ms); nan when the rows it needs were not measured."""
    goal: float
    at_most: bool = False
    """True for a ceiling (latency), False for a floor (ratio)."""

    @property
    def verdict(self) -> str:
        if math.isnan(self.measured):
            return "not measured"
        met = self.measured <= self.goal if self.at_most else self.measured >= self.goal
        return "met" if met else "missed"


def _ratio(numerator: float | None, denominator: float | None) -> float:
    if numerator is None or not denominator:
        return math.nan
    return numerator / denominator


def evaluate(
    vault: Mapping[str, float],
    bao: Mapping[str, float],
    echo: float | None,
    open_p99_ms: Mapping[str, float],
) -> list[Target]:
    """``vault`` and ``bao``: median calls/s by row key (the batch row per credential);
    ``echo``: the echo's median; ``open_p99_ms``: the vault's open-loop p99 at
    :data:`OPEN_LOOP_FRACTION` of its peak, by row key."""
    found = [
        Target("RevealCredential >= 0.4x echo", _ratio(vault.get("reveal"), echo), 0.4),
        Target("GetCredential >= 0.5x echo", _ratio(vault.get("get"), echo), 0.5),
        Target(
            "StoreCredential >= 2x OpenBao KV write",
            _ratio(vault.get("write"), bao.get("write")),
            2.0,
        ),
        Target(
            "BatchRevealCredentials per credential >= 5x OpenBao KV read",
            _ratio(vault.get("batch"), bao.get("batch")),
            5.0,
        ),
        Target(
            "GetAccessToken (fresh) within 10% of RevealCredential (token/reveal >= 0.9)",
            _ratio(vault.get("token"), vault.get("reveal")),
            0.9,
        ),
    ]
    percent = f"{OPEN_LOOP_FRACTION:.0%}"
    found.extend(
        Target(f"{key}: open-loop p99 at {percent} of peak <= 10 ms", p99, OPEN_LOOP_P99_MS, True)
        for key, p99 in open_p99_ms.items()
    )
    if not open_p99_ms:
        found.append(
            Target(f"open-loop p99 at {percent} of peak <= 10 ms", math.nan, OPEN_LOOP_P99_MS, True)
        )
    return found
