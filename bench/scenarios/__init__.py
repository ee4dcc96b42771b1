"""The scenarios, in the order ``make bench`` runs them. Each module has NAME, TITLE, PARAMS (defaults),
SMOKE (overrides for the CI smoke mode) and ``run(bench, params, rounds=, duration_s=, warmup_s=)``."""

from __future__ import annotations

from types import ModuleType

from bench.scenarios import agent_turn, fanout, gateway, login, sse

SCENARIOS: dict[str, ModuleType] = {m.NAME: m for m in (gateway, sse, fanout, agent_turn, login)}
