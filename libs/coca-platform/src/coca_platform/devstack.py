"""Run the whole suite on one machine without Docker: ``make dev`` and the end-to-end tests.

Brings up the local infrastructure (:mod:`coca_platform.localinfra`), the LLM stand-in when no
``LLM_BASE_URL`` is given, applies every service's migrations, starts the nine services with one
shared environment, waits until each is ready, and prints the URLs. Ctrl-C (or leaving the
context manager) stops everything it started. Service logs go to ``<data dir>/logs/<service>.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from coca_platform.localinfra import InfraError, LocalInfra, free_port, port_open, wait_port

# service -> default HTTP port (the architecture brief's table)
SERVICES: dict[str, int] = {
    "user": 8001,
    "agent": 8002,
    "channel": 8003,
    "memory": 8004,
    "billing": 8005,
    "plugin": 8006,
    "ws_gateway": 8081,
    "gateway": 8080,
    "web": 3000,
}
STANDIN_PORT = 8090
MEMORY_GRPC_PORT = 50051


@dataclass
class Stack:
    infra: LocalInfra
    data_dir: Path
    ports: dict[str, int]
    llm_base_url: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def log_path(self, service: str) -> Path:
        return self.data_dir / "logs" / f"{service}.log"


def _dev_jwt_key(data_dir: Path) -> str:
    """A signing key kept in the data directory, so tokens outlive a restart of `make dev`."""
    path = data_dir / "jwt-dev-key.pem"
    if not path.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
    return path.read_text()


def _wait_ready(url: str, timeout: float, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfraError(f"{name} exited with status {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise InfraError(f"{name} was not ready within {timeout:.0f} s ({last}); see its log")


def _has_migrations(service: str) -> bool:
    folder = importlib.resources.files(f"coca_{service}") / "migrations"
    return folder.is_dir() and any(entry.name.endswith(".sql") for entry in folder.iterdir())


def _migrate(services: list[str], env: dict[str, str]) -> None:
    """``python -m coca_<svc> migrate`` for each service, concurrently (each owns its own schema)."""
    running = {
        name: subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", f"coca_{name}", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name in services
    }
    for name, proc in running.items():
        output, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise InfraError(f"migrations of {name} failed:\n{output.decode()[-4000:]}")


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as logfile:
        return subprocess.Popen(  # noqa: S603
            cmd,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def run_stack(
    data_dir: Path,
    *,
    ports: dict[str, int] | None = None,
    database: str = "coca",
    fresh_database: bool = False,
    drop_database_on_exit: bool = False,
    private_vhost: bool = False,
    llm_base_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    services: list[str] | None = None,
) -> Iterator[Stack]:
    """Start infrastructure + stand-in + services; stop them all on exit."""
    names = services or list(SERVICES)
    default_ports = ports is None
    ports = {name: (ports or SERVICES)[name] for name in names}
    grpc_port = MEMORY_GRPC_PORT if default_ports else free_port()
    busy = [f"{name} ({port})" for name, port in ports.items() if port_open("127.0.0.1", port)]
    if "memory" in names and port_open("127.0.0.1", grpc_port):
        busy.append(f"memory gRPC ({grpc_port})")
    if busy:
        raise InfraError(
            f"ports already in use: {', '.join(busy)} — stop what holds them or choose other ports"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    with LocalInfra.start(
        data_dir,
        database=database,
        fresh_database=fresh_database,
        drop_database_on_exit=drop_database_on_exit,
        private_vhost=private_vhost,
    ) as infra:
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            if not llm_base_url:
                port = (
                    STANDIN_PORT
                    if not port_open("127.0.0.1", STANDIN_PORT) and ports == {n: SERVICES[n] for n in names}
                    else free_port()
                )
                procs["llm-standin"] = _spawn(
                    [
                        sys.executable,
                        "-m",
                        "coca_llm_standin",
                        "--port",
                        str(port),
                        "--token-delay-ms",
                        os.environ.get("STANDIN_TOKEN_DELAY_MS", "8"),
                    ],
                    dict(os.environ),
                    data_dir / "logs" / "llm-standin.log",
                )
                wait_port("127.0.0.1", port, 30, "the LLM stand-in", procs["llm-standin"])
                llm_base_url = f"http://127.0.0.1:{port}/v1"
            env = {
                **os.environ,
                **infra.env(),
                "ENVIRONMENT": os.environ.get("ENVIRONMENT", "local"),
                "LLM_BASE_URL": llm_base_url,
                "JWT_PRIVATE_KEY": os.environ.get("JWT_PRIVATE_KEY") or _dev_jwt_key(data_dir),
                "KAFKA_SESSION_TIMEOUT_MS": "6000",
                "PYTHONUNBUFFERED": "1",
                **{f"{n.upper()}_SERVICE_ADDR": f"127.0.0.1:{p}" for n, p in ports.items()},
                "MEMORY_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
                "MILVUS_LITE_PATH": str(data_dir / "milvus.db"),
                **(extra_env or {}),
            }
            _migrate([n for n in names if _has_migrations(n)], env)
            stack = Stack(infra, data_dir, ports, llm_base_url, env, procs)
            for name in names:
                procs[name] = _spawn(
                    [sys.executable, "-m", f"coca_{name}"],
                    {
                        **env,
                        "HTTP_PORT": str(ports[name]),
                        **({"GRPC_PORT": str(grpc_port)} if name == "memory" else {}),
                    },
                    stack.log_path(name),
                )
            for name in names:
                _wait_ready(stack.url(name), 60, procs[name], name)
            yield stack
        finally:
            _stop(procs)


def _watch(stack: Stack) -> None:
    """Block until Ctrl-C/SIGTERM, reporting any process that exits on its own."""
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    reported: set[str] = set()
    while signal.sigtimedwait(signals, 1.0) is None:
        for name, proc in stack.procs.items():
            if name not in reported and proc.poll() is not None:
                reported.add(name)
                log = stack.log_path(name) if name in stack.ports else stack.data_dir / "logs" / f"{name}.log"
                print(f"!! {name} exited with status {proc.returncode}; see {log}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m coca_platform.devstack", description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("COCA_DATA_DIR", ".data"))
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the development database")
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    print("starting Coca AI (infrastructure, LLM stand-in, nine services)...", flush=True)
    started = time.monotonic()
    try:
        with run_stack(
            data_dir, fresh_database=args.fresh, llm_base_url=os.environ.get("LLM_BASE_URL")
        ) as stack:
            took = time.monotonic() - started
            print(f"\nCoca AI is running (started in {took:.1f} s). Logs: {data_dir / 'logs'}\n", flush=True)
            print(f"  web UI           {stack.url('web')}")
            print(f"  API (gateway)    {stack.url('gateway')}   e.g. curl {stack.url('gateway')}/healthz")
            print(
                f"  WebSocket        ws://127.0.0.1:{stack.ports['ws_gateway']}/ws (also /ws on the gateway)"
            )
            for name in SERVICES:
                print(f"  {name:<16} {stack.url(name)}")
            print(
                f"  LLM              {stack.llm_base_url}"
                + ("  (the stand-in: NOT A MODEL)" if "LLM_BASE_URL" not in os.environ else "")
            )
            print(f"  PostgreSQL       {stack.infra.database_url}")
            print(f"  Kafka            {stack.infra.kafka_bootstrap}    S3 {stack.infra.s3_endpoint}")
            print("\nPress Ctrl-C to stop everything.", flush=True)
            _watch(stack)
            print("\nstopping...", flush=True)
    except InfraError as exc:
        raise SystemExit(f"make dev: {exc}") from None
    print("stopped.", flush=True)


if __name__ == "__main__":
    main()
