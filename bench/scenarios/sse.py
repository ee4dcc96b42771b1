"""Scenario 2: SSE relay of a token stream, gateway → agent, from the LLM stand-in.

Two pacings: like a GPU (``paced_ms`` between tokens; a ladder of ``paced_streams`` concurrent
streams, to find how many are sustained without stalls) and at full speed (no delay,
``full_streams`` concurrent streams). Targets: the stand-in called directly;
nginx relaying it (unbuffered); Coca (gateway → agent → stand-in, every token appended to the Redis
event log and produced to Kafka, the reply persisted). Each client runs streams back to back for
the round. A stall is a gap between two tokens longer than ``stall_ms`` (or 5 pacing intervals).
"""

from __future__ import annotations

import asyncio
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

NAME = "sse"
TITLE = "SSE token relay: gateway -> agent from the LLM stand-in"
PARAMS: dict[str, Any] = {
    "tokens": 100,
    "paced_ms": 8,
    "paced_streams": [1, 8, 32],
    "full_streams": 4,
    "stall_ms": 100,
}
SMOKE: dict[str, Any] = {"tokens": 10, "paced_ms": 8, "paced_streams": 2, "full_streams": 1, "stall_ms": 100}
COLUMNS = [
    Column("streams", "streams", 0),
    Column("ttft_p50_ms", "TTFT p50 ms", 2),
    Column("ttft_p99_ms", "TTFT p99 ms", 2),
    Column("token_ms", "ms/token", 3),
    Column("gap_p99_ms", "gap p99 ms", 2),
    Column("stalls", "stalls", 0),
    Column("tokens_per_s", "tokens/s", 0),
    Column("tokens_per_core", "tokens/core-s", 0),
    Column("peak_rss_mib", "peak RSS MiB", 1),
]
_MAX_STREAMS_PER_CLIENT = 10_000
_PACE_SLACK_MS = 0.5

Stream = Callable[[aiohttp.ClientSession, int], Awaitable[StreamTiming]]


def _target(
    name: str, role: str, stream: Stream, clients: int, sut: list[Proc], stall_s: float, about: str
) -> tuple[Target, aiohttp.ClientSession]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients + 8), timeout=aiohttp.ClientTimeout(total=120)
    )

    async def measure(duration_s: float) -> dict[str, Any]:
        timings: list[StreamTiming] = []
        errors = 0
        first_error: str | None = None
        cpu = Cpu(*sut)
        cpu.start()
        deadline = time.perf_counter() + duration_s

        async def client(k: int) -> None:
            nonlocal errors, first_error
            for _ in range(_MAX_STREAMS_PER_CLIENT):
                try:
                    timings.append(await stream(session, k))
                except (aiohttp.ClientError, TimeoutError, BenchError) as exc:
                    errors += 1
                    first_error = first_error or repr(exc)
                if time.perf_counter() >= deadline:
                    return

        await asyncio.gather(*(client(k) for k in range(clients)))
        cpu.stop()
        tokens = sum(len(t.token_times_s) for t in timings)
        gaps = [g for t in timings for g in t.gaps_s]
        ttfts = [t.ttft_s * 1000 for t in timings if t.ttft_s is not None]
        per_token = [p * 1000 for t in timings if (p := t.per_token_s) is not None]
        for proc in sut:
            proc.check()
        return {
            "streams": len(timings),
            "errors": errors,
            "first_error": first_error,
            "ttft_p50_ms": percentile(ttfts, 50),
            "ttft_p99_ms": percentile(ttfts, 99),
            "token_ms": percentile(per_token, 50),
            "gap_p50_ms": percentile([g * 1000 for g in gaps], 50),
            "gap_p99_ms": percentile([g * 1000 for g in gaps], 99),
            "stalls": sum(1 for g in gaps if g > stall_s),
            "tokens_per_s": tokens / cpu.wall_s if cpu.wall_s else 0.0,
            "tokens_per_core": tokens / cpu.cpu_s if sut and cpu.cpu_s else None,
            "sut_cpu_util": cpu.utilisation if sut else None,
            "peak_rss_mib": sum(p.peak_rss_mib() for p in sut) if sut else None,
        }

    return Target(name, role, measure, about), session


async def run(bench: Bench, p: dict[str, Any], *, rounds: int, duration_s: float, warmup_s: float) -> Outcome:
    outcome = Outcome(NAME, TITLE, p, COLUMNS)
    ladder = [
        int(c) for c in (p["paced_streams"] if isinstance(p["paced_streams"], list) else [p["paced_streams"]])
    ]
    levels = [("paced", float(p["paced_ms"]), c) for c in ladder] + [("full", 0.0, int(p["full_streams"]))]
    async with AsyncExitStack() as stack:
        stack_ = await chat.start(bench, stack, conversations=max(c for _, _, c in levels), billing=False)
        nginx, nginx_url = await bench.nginx_proxy("sse", stack_.standin.removeprefix("http://"))
        tokens = p["tokens"]
        targets = []
        for mode, delay, clients in levels:
            stall_s = max(p["stall_ms"], 5 * delay) / 1000

            def direct(url: str, delay: float = delay) -> Stream:
                return lambda s, _k: chat.stream_direct(s, url, tokens, delay)

            def coca(s: aiohttp.ClientSession, k: int, delay: float = delay) -> Awaitable[StreamTiming]:
                return chat.stream_coca(s, stack_, stack_.conversations[k], tokens, delay)

            specs: list[tuple[str, str, Stream, list[Proc], str]] = [
                ("direct", "anchor", direct(stack_.standin), [], "the stand-in itself"),
                ("nginx", "anchor", direct(nginx_url), [nginx], "nginx relaying the stand-in"),
                ("coca", "coca", coca, stack_.procs, "gateway -> agent (Redis log, Kafka, PostgreSQL)"),
            ]
            for name, role, stream, sut, about in specs:
                label = f"{name} {mode} x{clients}"
                target, session = _target(label, role, stream, clients, sut, stall_s, about)
                stack.push_async_callback(session.close)
                targets.append(target)
        results = await alternate(targets, rounds=rounds, duration_s=duration_s, warmup_s=warmup_s)
    for target in targets:
        outcome.add(target, results[target.name])
    goals: dict[str, float | None] = {}
    for mode, _, clients in levels:
        level = f"{mode} x{clients}"
        for key, what in (("ttft_p50_ms", "first token, p50"), ("token_ms", "per token")):
            added = outcome.ratio(
                f"Coca adds ({level}, {what})", f"coca {level}", f"direct {level}", key, unit="ms"
            )
            goals.setdefault(f"{mode}:{key}", added)
        outcome.ratio(
            f"nginx adds ({level}, first token, p50)",
            f"nginx {level}",
            f"direct {level}",
            "ttft_p50_ms",
            unit="ms",
        )
    full = f"full x{p['full_streams']}"
    outcome.ratio(f"Coca tokens/core-s vs nginx ({full})", f"coca {full}", f"nginx {full}", "tokens_per_core")
    calm = [c for c in ladder if _sustained(outcome, f"paced x{c}")]
    outcome.ratios.append(
        {
            "label": "paced streams sustained: no stall, pace kept within 0.5 ms/token (largest level tried)",
            "of": "coca",
            "vs": None,
            "metric": "stalls",
            "unit": "streams",
            "value": max(calm) if calm else 0,
        }
    )
    first = f"paced x{ladder[0]}"
    outcome.goal(f"SSE adds <= 2 ms to first token ({first}, p50)", goals["paced:ttft_p50_ms"], 2.0)
    outcome.goal(f"SSE adds <= 0.5 ms per token ({first})", goals["paced:token_ms"], 0.5)
    return outcome


def _sustained(outcome: Outcome, level: str) -> bool:
    """No stall, and the tokens keep the stand-in's pace (within the per-token goal)."""
    coca, direct = outcome.median(f"coca {level}", "token_ms"), outcome.median(f"direct {level}", "token_ms")
    stalls = outcome.median(f"coca {level}", "stalls")
    return stalls == 0 and coca is not None and direct is not None and coca - direct <= _PACE_SLACK_MS
