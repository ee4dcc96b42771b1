"""Load: open-loop HTTP at a constant rate (latency), wrk closed-loop (throughput), SSE stream readers.

Open loop: request ``i`` is due at ``start + i / rate`` whether or not earlier ones finished, and its
latency counts from that due time, so a server that falls behind shows it in the tail instead of
slowing the client down (no coordinated omission). Every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.procs import BenchError, need
from bench.stats import latency_ms

_MAX_IN_FLIGHT = 2000


@dataclass
class OpenLoopResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    late: int = 0  # not sent: too many requests already in flight
    wall_s: float = 0.0

    def figures(self) -> dict[str, Any]:
        done = len(self.latencies_s)
        return {
            **latency_ms(self.latencies_s),
            "ok": done,
            "errors": self.errors + self.late,
            "achieved_rps": done / self.wall_s if self.wall_s else 0.0,
        }


async def open_loop(
    session: aiohttp.ClientSession,
    rate: float,
    duration_s: float,
    request: Callable[[aiohttp.ClientSession, int], Any],
    *,
    timeout_s: float = 10.0,
) -> OpenLoopResult:
    """Call ``request(session, i)`` (an awaitable that raises on failure) ``rate`` times a second."""
    result = OpenLoopResult()
    total = max(1, int(rate * duration_s))
    loop = asyncio.get_running_loop()
    clock = time.perf_counter  # the loop's own clock (uvloop) ticks in whole milliseconds
    start = clock() + 0.01
    in_flight: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await request(session, i)
        except (aiohttp.ClientError, TimeoutError, OSError, BenchError):
            result.errors += 1
            return
        result.latencies_s.append(clock() - due)

    for i in range(total):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= _MAX_IN_FLIGHT:
            result.late += 1
            continue
        task = loop.create_task(one(i, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=timeout_s + 1)
    result.wall_s = clock() - start
    return result


def expect_ok(status: int) -> None:
    if status >= 400:
        raise BenchError(f"HTTP {status}")


@dataclass
class WrkResult:
    rps: float
    errors: int
    requests: int


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL = re.compile(r"(\d+) requests in")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


async def wrk(url: str, *, connections: int, duration_s: float, headers: Sequence[str] = ()) -> WrkResult:
    """Closed loop: wrk with one thread and ``connections`` keep-alive connections (on this core)."""
    binary = need("wrk", "wrk")
    cmd = [binary, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s"]
    for header in headers:
        cmd += ["-H", header]
    proc = await asyncio.create_subprocess_exec(*cmd, url, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), duration_s + 30)
    text = out.decode(errors="replace")
    rps, total = _RPS.search(text), _TOTAL.search(text)
    if proc.returncode != 0 or rps is None or total is None:
        raise BenchError(f"wrk failed (status {proc.returncode}):\n{text[-2000:]}")
    errors = int(m.group(1)) if (m := _NON_2XX.search(text)) else 0
    if m := _SOCKET.search(text):
        errors += sum(int(g) for g in m.groups())
    return WrkResult(float(rps.group(1)), errors, int(total.group(1)))


@dataclass
class StreamTiming:
    """One streamed reply as the client saw it: when each token arrived, relative to the request."""

    ttft_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)
    total_s: float = 0.0
    ended_with: bytes | None = None

    @property
    def gaps_s(self) -> list[float]:
        t = self.token_times_s
        return [b - a for a, b in itertools.pairwise(t)]

    @property
    def per_token_s(self) -> float | None:
        """Mean time between tokens after the first (how fast the stream flows once started)."""
        t = self.token_times_s
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else None


async def read_sse(
    resp: aiohttp.ClientResponse,
    token_marker: bytes,
    end_markers: tuple[bytes, ...],
    started: float,
    deadline_s: float,
) -> StreamTiming:
    """Read an SSE body; an event containing ``token_marker`` is a token, one of ``end_markers`` ends it
    (``ended_with`` says which; None: the body ended without one)."""
    timing = StreamTiming()
    clock = time.perf_counter
    buffer = b""
    async with asyncio.timeout(deadline_s):
        async for chunk in resp.content.iter_any():
            now = clock() - started
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if token_marker in event:
                    if timing.ttft_s is None:
                        timing.ttft_s = now
                    timing.token_times_s.append(now)
                    continue
                timing.ended_with = next((m for m in end_markers if m in event), None)
                if timing.ended_with is not None:
                    break
            if timing.ended_with is not None:
                break
    timing.total_s = clock() - started
    return timing
