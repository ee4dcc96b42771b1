"""Scenario 3: WebSocket fan-out of agent events from Kafka to N subscribers.

For each N of the ladder (``subscribers``), N clients connect and subscribe, ``per_conversation`` to
each conversation. A round offers ``rate`` deliveries/s (events/s = rate / per_conversation), open
loop, then waits for the stragglers. Coca: the events are appended to the Redis event log and
produced to Kafka (as the agent does); ws_gateway tails Kafka and pushes them. Anchor: a bare
``websockets`` server broadcasting envelopes of the same shape generated in memory. Latency is from
the stamp put in the event when it is produced (or generated) to its receipt. Memory per connection:
the server's resident memory with the N subscriptions open minus before any client came, over N. A
round connects its N clients, measures, and disconnects them (two targets' 10,000 connections at
once would not fit this process's descriptor limit).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import orjson
from coca_platform.testing import FakeUserService, TokenIssuer

from bench.procs import BenchError, Cpu, Proc, free_port, python_module, wait_port
from bench.rounds import Column, Outcome, Target, alternate
from bench.stack import Bench
from bench.stats import latency_ms
from bench.subscribers import CocaProducer, Subscriber, Subscribers, drain
from bench.wsclient import Deliveries, connect

NAME = "fanout"
TITLE = "WebSocket fan-out of agent events from Kafka"
PARAMS: dict[str, Any] = {"subscribers": [100, 1000, 10000], "per_conversation": 100, "rate": 20000}
SMOKE: dict[str, Any] = {"subscribers": [20], "per_conversation": 10, "rate": 500}
COLUMNS = [
    Column("delivered", "delivered", 0),
    Column("lost", "lost", 0),
    Column("deliveries_per_s", "deliveries/s", 0),
    Column("p50_ms", "p50 ms", 2),
    Column("p99_ms", "p99 ms", 2),
    Column("sut_cpu_util", "SUT core use", 2),
    Column("deliveries_per_core", "deliveries/core-s", 0),
    Column("kib_per_conn", "KiB/conn", 1),
    Column("peak_rss_mib", "peak RSS MiB", 1),
]


@dataclass(frozen=True)
class Server:
    proc: Proc
    port: int
    path: str
    baseline_mib: float  # resident memory before any client connected


def _target(
    name: str, role: str, server: Server, n: int, per: int, run: Any, about: str, *, prepare: Any = None
) -> Target:
    """One round: connect and subscribe the N clients to conversations new to this round (so nothing
    is replayed from an earlier round's log), offer the events, wait for them, disconnect. (Both
    targets' N connections at once would not fit the descriptor limit at N = 10,000.)"""

    async def measure(duration_s: float) -> dict[str, Any]:
        conversations = [str(uuid.uuid4()) for _ in range(max(1, n // per))]
        if prepare is not None:
            await prepare(conversations)
        subs = Subscribers("127.0.0.1", server.port, server.path, conversations, per)
        started = time.perf_counter()
        try:
            await subs.open()
            connect_s = time.perf_counter() - started
            await asyncio.sleep(0.5)
            kib_per_conn = (server.proc.rss_mib() - server.baseline_mib) * 1024 / len(subs.subs)
            deliveries = Deliveries()
            subs.listen(deliveries)
            cpu = Cpu(server.proc)
            cpu.start()
            events = await run(duration_s, conversations)
            expected = events * per
            await drain(deliveries, expected, timeout_s=10 + duration_s)
            cpu.stop()
            subs.listen(None)
            dropped = subs.dropped()
        finally:
            await subs.close()
        server.proc.check()
        return {
            "events": events,
            "delivered": deliveries.count,
            "lost": expected - deliveries.count,
            "dropped_clients": dropped,
            "deliveries_per_s": deliveries.count / cpu.wall_s if cpu.wall_s else 0.0,
            **latency_ms([ns / 1e9 for ns in deliveries.latencies_ns]),
            "sut_cpu_util": cpu.utilisation,
            "deliveries_per_core": deliveries.count / cpu.cpu_s if cpu.cpu_s else None,
            "kib_per_conn": kib_per_conn,
            "connect_s": connect_s,
            "connect_retries": subs.retries,
            "peak_rss_mib": server.proc.peak_rss_mib(),
        }

    return Target(name, role, measure, about)


async def _level(
    p: dict[str, Any], n: int, coca: Server, anchor: Server, producer: CocaProducer, **timing: Any
) -> list[tuple[Target, list[dict[str, Any]]]]:
    per = min(p["per_conversation"], n)
    rate_events = max(1.0, p["rate"] / per)
    control = Subscriber()
    control.client = await connect("127.0.0.1", anchor.port, anchor.path, control.on_control)
    try:
        await control.expect("authenticated")

        async def run_anchor(duration_s: float, conversations: list[str]) -> int:
            assert control.client is not None
            msg = {"type": "run", "rate": rate_events, "duration": duration_s, "conversations": conversations}
            control.client.send_text(orjson.dumps(msg))
            done = await control.expect("done")
            return int(str(done["events"]))

        async def run_coca(duration_s: float, conversations: list[str]) -> int:
            return await producer.run(rate_events, duration_s, conversations)

        targets = [
            _target(
                f"websockets N={n}",
                "anchor",
                anchor,
                n,
                per,
                run_anchor,
                "bare websockets.broadcast fed from memory",
            ),
            _target(
                f"coca N={n}",
                "coca",
                coca,
                n,
                per,
                run_coca,
                "Redis log + Kafka -> ws_gateway -> WebSocket",
                prepare=producer.own,
            ),
        ]
        results = await alternate(targets, **timing)
        return [(t, results[t.name]) for t in targets]
    finally:
        control.client.close()


async def run(bench: Bench, p: dict[str, Any], *, rounds: int, duration_s: float, warmup_s: float) -> Outcome:
    outcome = Outcome(NAME, TITLE, p, COLUMNS)
    ladder = p["subscribers"] if isinstance(p["subscribers"], list) else [p["subscribers"]]
    issuer = TokenIssuer()
    tenant = str(uuid.uuid4())
    token = issuer.mint(tenant, str(uuid.uuid4()), ttl_s=7200)
    async with AsyncExitStack() as stack:
        users = await stack.enter_async_context(FakeUserService(issuer).serve())
        env = await bench.service_env(KAFKA_BOOTSTRAP=await bench.kafka(), USER_SERVICE_ADDR=users.url)
        ws_proc, ws_url = await bench.coca("ws_gateway", env)
        await asyncio.sleep(0.5)
        coca = Server(ws_proc, int(ws_url.rsplit(":", 1)[1]), f"/ws?token={token}", ws_proc.rss_mib())
        port = free_port()
        anchor = bench.start(
            "ws-broadcast", python_module("bench.anchors.ws_broadcast", "--port", str(port)), sut=True
        )
        await wait_port(anchor, port)
        await asyncio.sleep(0.5)
        bare = Server(anchor, port, "/ws", anchor.rss_mib())
        producer = await stack.enter_async_context(
            CocaProducer.open(bench.redis_url, bench.kafka_bootstrap, tenant)
        )
        for n in ladder:
            levels = await _level(
                p,
                int(n),
                coca,
                bare,
                producer,
                rounds=rounds,
                duration_s=duration_s,
                warmup_s=warmup_s,
            )
            for target, rounds_ in levels:
                outcome.add(target, rounds_)
            top = f"coca N={n}"
            outcome.ratio(
                f"Coca deliveries/core-s vs websockets (N={n})",
                top,
                f"websockets N={n}",
                "deliveries_per_core",
            )
            outcome.ratio(f"Coca p99 over websockets (N={n})", top, f"websockets N={n}", "p99_ms", unit="ms")
    if not outcome.targets:
        raise BenchError("no subscriber count to measure")
    top = f"coca N={ladder[-1]}"
    outcome.goal(
        f"fan-out >= 50,000 deliveries/s per core (N={ladder[-1]})",
        outcome.median(top, "deliveries_per_core"),
        50_000,
        at_most=False,
    )
    outcome.goal(f"delivery p99 <= 50 ms (N={ladder[-1]})", outcome.median(top, "p99_ms"), 50.0)
    outcome.goal(f"<= 30 KB per connection (N={ladder[-1]})", outcome.median(top, "kib_per_conn"), 30.0)
    return outcome
