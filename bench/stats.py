"""Percentiles of one round, and the median and spread of a figure over rounds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def latency_ms(samples_s: Sequence[float], prefix: str = "") -> dict[str, float | None]:
    """p50/p99/max of latencies given in seconds, as milliseconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        f"{prefix}p50_ms": percentile(ms, 50),
        f"{prefix}p99_ms": percentile(ms, 99),
        f"{prefix}max_ms": max(ms) if ms else None,
    }


def summarize(rounds: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """For every numeric figure of the rounds: median, min, max and spread (half the range, % of median)."""
    keys = list(
        dict.fromkeys(
            k for r in rounds for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)
        )
    )
    out: dict[str, dict[str, float | None]] = {}
    for key in keys:
        values = [float(r[key]) for r in rounds if isinstance(r.get(key), int | float)]
        if not values:
            out[key] = {"median": None, "min": None, "max": None, "spread_pct": None, "n": 0}
            continue
        median = statistics.median(values)
        spread = (max(values) - min(values)) / 2 / abs(median) * 100 if median else None
        out[key] = {
            "median": median,
            "min": min(values),
            "max": max(values),
            "spread_pct": spread,
            "n": len(values),
        }
    return out
