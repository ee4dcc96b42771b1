"""Scenario 4: one agent turn end to end, one at a time.

client → gateway → agent → LLM stand-in (``tokens`` tokens, ``paced_ms`` apart) → SSE back, with the
billing quota reservation, the Redis event log, the Kafka produce (and its acknowledgement before the
reply commits) and the PostgreSQL persistence all on; gateway, agent and billing on the SUT core.
Anchor: the same completion streamed from the stand-in directly. Time to first token is to the first
``message.delta``; the turn's total is to ``run.completed`` (the reply is durable by then), against
``[DONE]`` for the stand-in.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp

from bench import chat
from bench.loadgen import StreamTiming
from bench.procs import BenchError, Cpu, Proc
from bench.rounds import Column, Outcome, Target, alternate
from bench.stack import Bench
from bench.stats import percentile

NAME = "agent_turn"
TITLE = "Agent turn end to end (gateway, agent, Redis log, Kafka, PostgreSQL)"
PARAMS: dict[str, Any] = {"tokens": 32, "paced_ms": 8, "conversations": 8}
SMOKE: dict[str, Any] = {"tokens": 8, "paced_ms": 8, "conversations": 2}
COLUMNS = [
    Column("turns", "turns", 0),
    Column("ttft_p50_ms", "TTFT p50 ms", 2),
    Column("ttft_p99_ms", "TTFT p99 ms", 2),
    Column("total_p50_ms", "total p50 ms", 1),
    Column("total_p99_ms", "total p99 ms", 1),
    Column("cpu_ms_per_turn", "CPU ms/turn", 2),
    Column("peak_rss_mib", "peak RSS MiB", 1),
]
_MAX_TURNS = 10_000

Turn = Callable[[aiohttp.ClientSession, int], Awaitable[StreamTiming]]


def _target(
    name: str, role: str, turn: Turn, sut: list[Proc], about: str
) -> tuple[Target, aiohttp.ClientSession]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))

    async def measure(duration_s: float) -> dict[str, Any]:
        timings: list[StreamTiming] = []
        errors = 0
        first_error: str | None = None
        cpu = Cpu(*sut)
        cpu.start()
        deadline = time.perf_counter() + duration_s
        for i in range(_MAX_TURNS):
            try:
                timings.append(await turn(session, i))
            except (aiohttp.ClientError, TimeoutError, BenchError) as exc:
                errors += 1
                first_error = first_error or repr(exc)
            if time.perf_counter() >= deadline:
                break
        cpu.stop()
        for proc in sut:
            proc.check()
        ttfts = [t.ttft_s * 1000 for t in timings if t.ttft_s is not None]
        totals = [t.total_s * 1000 for t in timings]
        return {
            "turns": len(timings),
            "errors": errors,
            "first_error": first_error,
            "ttft_p50_ms": percentile(ttfts, 50),
            "ttft_p99_ms": percentile(ttfts, 99),
            "total_p50_ms": percentile(totals, 50),
            "total_p99_ms": percentile(totals, 99),
            "cpu_ms_per_turn": cpu.cpu_s / len(timings) * 1000 if sut and timings else None,
            "peak_rss_mib": sum(p.peak_rss_mib() for p in sut) if sut else None,
        }

    return Target(name, role, measure, about), session


async def run(bench: Bench, p: dict[str, Any], *, rounds: int, duration_s: float, warmup_s: float) -> Outcome:
    outcome = Outcome(NAME, TITLE, p, COLUMNS)
    async with AsyncExitStack() as stack:
        stack_ = await chat.start(bench, stack, conversations=p["conversations"], billing=True)
        tokens, delay = p["tokens"], p["paced_ms"]

        def direct(s: aiohttp.ClientSession, _i: int) -> Awaitable[StreamTiming]:
            return chat.stream_direct(s, stack_.standin, tokens, delay)

        def coca(s: aiohttp.ClientSession, i: int) -> Awaitable[StreamTiming]:
            conversation = stack_.conversations[i % len(stack_.conversations)]
            return chat.stream_coca(s, stack_, conversation, tokens, delay)

        targets = []
        for name, role, turn, sut, about in (
            ("direct", "anchor", direct, [], "the stand-in's stream, called directly"),
            (
                "coca",
                "coca",
                coca,
                stack_.procs,
                "client -> gateway -> agent (+ billing quota) -> stand-in, SSE back",
            ),
        ):
            target, session = _target(name, role, turn, sut, about)
            stack.push_async_callback(session.close)
            targets.append(target)
        results = await alternate(targets, rounds=rounds, duration_s=duration_s, warmup_s=warmup_s)
    for target in targets:
        outcome.add(target, results[target.name])
    ttft = outcome.ratio("a turn adds to first token (p50)", "coca", "direct", "ttft_p50_ms", unit="ms")
    outcome.ratio("a turn adds to first token (p99)", "coca", "direct", "ttft_p99_ms", unit="ms")
    outcome.ratio("a turn adds to the total (p50)", "coca", "direct", "total_p50_ms", unit="ms")
    outcome.ratio("a turn adds to the total (p99)", "coca", "direct", "total_p99_ms", unit="ms")
    outcome.goal("a full agent turn adds <= 15 ms to first token (p50)", ttft, 15.0)
    return outcome
