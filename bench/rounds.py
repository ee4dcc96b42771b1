"""Targets measured in alternating rounds, and what a scenario hands to the report.

``alternate`` warms every target up once (figures discarded), then runs ``rounds`` rounds, each
measuring every target in turn (anchors first, Coca last): anchor / Coca / anchor / Coca ... so a
slow drift of the machine touches all of them alike. Each figure is then reduced to its median and
spread over the rounds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.stats import summarize

Measure = Callable[[float], Awaitable[dict[str, Any]]]


@dataclass
class Target:
    name: str
    role: str  # "anchor" or "coca"
    measure: Measure  # one round of ``duration_s`` seconds -> figures
    about: str = ""


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    digits: int = 1


@dataclass
class Outcome:
    """One scenario's result: per target its rounds and their summary; the derived ratios and goals."""

    name: str
    title: str
    params: dict[str, Any]
    columns: list[Column]
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, target: Target, rounds: list[dict[str, Any]], **extra: Any) -> None:
        entry = self.targets.setdefault(
            target.name, {"role": target.role, "about": target.about, "rounds": []}
        )
        entry["rounds"] += rounds
        entry["summary"] = summarize(entry["rounds"])
        entry.update(extra)

    def median(self, target: str, key: str) -> float | None:
        found = self.targets.get(target, {}).get("summary", {}).get(key)
        return None if found is None else found["median"]

    def ratio(self, label: str, num: str, den: str, key: str, *, unit: str = "x") -> float | None:
        """``num``'s median of ``key`` over ``den``'s (unit "x"), or minus it (unit "ms": added time)."""
        a, b = self.median(num, key), self.median(den, key)
        value: float | None = None
        if a is not None and b is not None:
            value = a - b if unit == "ms" else (a / b if b else None)
        self.ratios.append(
            {"label": label, "of": num, "vs": den, "metric": key, "unit": unit, "value": value}
        )
        return value

    def goal(self, text: str, value: float | None, limit: float, *, at_most: bool = True) -> None:
        met = None if value is None else (value <= limit if at_most else value >= limit)
        self.goals.append({"goal": text, "value": value, "limit": limit, "at_most": at_most, "met": met})


async def alternate(
    targets: list[Target], *, rounds: int, duration_s: float, warmup_s: float
) -> dict[str, list[dict[str, Any]]]:
    for target in targets if warmup_s > 0 else []:
        await target.measure(warmup_s)
    results: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for _ in range(rounds):
        for target in targets:
            results[target.name].append(await target.measure(duration_s))
    return results
