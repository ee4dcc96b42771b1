"""Scenario 1: a REST hop through the gateway, JWT verification and Redis rate limits on.

Upstream: nginx answering ``GET /v1/agents`` with a small JSON body (load core). Targets: the
upstream called directly; nginx proxying it; a bare aiohttp proxy; the Coca gateway (a fresh JWT
per simulated user, checked against the JWKS of a stand-in user service; every request charged to
the IP and user buckets in Redis, with limits set high enough that none is refused).

Each round: open loop at ``rate`` requests/s (latency), then wrk closed loop with ``connections``
keep-alive connections (throughput). Per core: requests per CPU-second of the process(es) under test.
"""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from coca_platform.testing import FakeUserService, TokenIssuer

from bench.loadgen import expect_ok, open_loop, wrk
from bench.procs import Cpu, Proc, free_port, python_module, wait_port
from bench.rounds import Column, Outcome, Target, alternate
from bench.stack import Bench

NAME = "gateway"
TITLE = "REST hop through the gateway (JWT + rate limits)"
PARAMS: dict[str, Any] = {"rate": 200, "connections": 64, "users": 100}
SMOKE: dict[str, Any] = {"rate": 100, "connections": 8, "users": 4}
PATH = "/v1/agents"
COLUMNS = [
    Column("p50_ms", "p50 ms", 2),
    Column("p99_ms", "p99 ms", 2),
    Column("achieved_rps", "open-loop rps", 0),
    Column("rps", "max rps", 0),
    Column("sut_cpu_util", "SUT core use", 2),
    Column("rps_per_core", "rps/core", 0),
    Column("cpu_us_per_req", "CPU us/req", 0),
    Column("peak_rss_mib", "peak RSS MiB", 1),
]


def _target(
    name: str,
    role: str,
    url: str,
    sut: Proc | None,
    headers: list[dict[str, str]],
    p: dict[str, Any],
    about: str,
) -> tuple[Target, aiohttp.ClientSession]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))

    async def request(s: aiohttp.ClientSession, i: int) -> None:
        async with s.get(url + PATH, headers=headers[i % len(headers)]) as resp:
            await resp.read()
            expect_ok(resp.status)

    async def measure(duration_s: float) -> dict[str, Any]:
        cpu = Cpu(*([sut] if sut else []))
        cpu.start()
        latency = await open_loop(session, p["rate"], duration_s, request)
        cpu.stop()
        figures = latency.figures()
        figures["cpu_us_per_req"] = cpu.cpu_s / figures["ok"] * 1e6 if sut and figures["ok"] else None
        cpu.start()
        auth = [f"authorization: {headers[0]['authorization']}"]
        closed = await wrk(url + PATH, connections=p["connections"], duration_s=duration_s, headers=auth)
        cpu.stop()
        util = cpu.utilisation if sut else None
        figures.update(
            rps=closed.rps,
            wrk_errors=closed.errors,
            sut_cpu_util=util,
            rps_per_core=closed.rps / util if util and util > 0.05 else None,
            peak_rss_mib=sut.peak_rss_mib() if sut else None,
        )
        if sut:
            sut.check()
        return figures

    return Target(name, role, measure, about), session


async def run(bench: Bench, p: dict[str, Any], *, rounds: int, duration_s: float, warmup_s: float) -> Outcome:
    outcome = Outcome(NAME, TITLE, p, COLUMNS)
    issuer = TokenIssuer()
    tenant = str(uuid.uuid4())
    headers = [{"authorization": f"Bearer {issuer.mint(tenant, str(uuid.uuid4()), ttl_s=3600)}"}]
    headers += [
        {"authorization": f"Bearer {issuer.mint(tenant, str(uuid.uuid4()), ttl_s=3600)}"}
        for _ in range(p["users"] - 1)
    ]
    async with AsyncExitStack() as stack:
        users = await stack.enter_async_context(FakeUserService(issuer).serve())
        _, upstream = await bench.nginx_upstream("upstream", '{"items":[]}')
        upstream_hostport = upstream.removeprefix("http://")
        nginx, nginx_url = await bench.nginx_proxy("proxy", upstream_hostport)
        port = free_port()
        cmd = python_module("bench.anchors.aiohttp_proxy", "--port", str(port), "--upstream", upstream)
        bare = bench.start("aiohttp-proxy", cmd, sut=True)
        await wait_port(bare, port)
        env = await bench.service_env(USER_SERVICE_ADDR=users.url, AGENT_SERVICE_ADDR=upstream)
        gateway, gateway_url = await bench.coca("gateway", env)
        specs = [
            ("direct", "anchor", upstream, None, "the upstream itself (nginx `return 200`, load core)"),
            ("nginx", "anchor", nginx_url, nginx, "nginx 1 worker, keep-alive upstream, unbuffered"),
            ("aiohttp-proxy", "anchor", f"http://127.0.0.1:{port}", bare, "bare aiohttp proxy, uvloop"),
            ("coca-gateway", "coca", gateway_url, gateway, "Coca gateway: JWT + Redis rate limits + signing"),
        ]
        targets = []
        for name, role, url, proc, about in specs:
            target, session = _target(name, role, url, proc, headers, p, about)
            stack.push_async_callback(session.close)
            targets.append(target)
        results = await alternate(targets, rounds=rounds, duration_s=duration_s, warmup_s=warmup_s)
    for target in targets:
        outcome.add(target, results[target.name])
    added_p50 = outcome.ratio("gateway adds, p50", "coca-gateway", "direct", "p50_ms", unit="ms")
    added_p99 = outcome.ratio("gateway adds, p99", "coca-gateway", "direct", "p99_ms", unit="ms")
    outcome.ratio("nginx adds, p50", "nginx", "direct", "p50_ms", unit="ms")
    outcome.ratio("nginx adds, p99", "nginx", "direct", "p99_ms", unit="ms")
    outcome.ratio("aiohttp proxy adds, p50", "aiohttp-proxy", "direct", "p50_ms", unit="ms")
    outcome.ratio("aiohttp proxy adds, p99", "aiohttp-proxy", "direct", "p99_ms", unit="ms")
    vs_nginx = outcome.ratio("gateway rps/core vs nginx", "coca-gateway", "nginx", "rps_per_core")
    outcome.ratio("gateway rps/core vs aiohttp proxy", "coca-gateway", "aiohttp-proxy", "rps_per_core")
    outcome.goal("gateway adds <= 1 ms at p50", added_p50, 1.0)
    outcome.goal("gateway adds <= 3 ms at p99", added_p99, 3.0)
    outcome.goal("gateway >= 0.5x nginx requests/s per core", vs_nginx, 0.5, at_most=False)
    return outcome
