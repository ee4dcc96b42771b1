"""The image recipe (deploy/docker/service.Dockerfile + .dockerignore), checked without a Docker engine.

The build context is computed with Docker's .dockerignore rules; the Dockerfile's stages are parsed
and their steps replayed with the same uv commands in a scratch directory (COPY copies from the
filtered context, bind mounts exist only during their RUN), so a missing file, a wrong package name
or a step that needs something the context lacks fails here as it would in `docker build`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from .conftest import REPO, SCHEMA_SERVICES, SERVICES, run

DOCKERFILE = REPO / "deploy" / "docker" / "service.Dockerfile"
PACKAGES = [pkg for pkg, _, _ in SERVICES.values()]


# ------------------------------------------------------------------------------ .dockerignore
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (moby patternmatcher): `**` spans directories, `*` and `?` do not."""
    out, i = "^", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


@cache
def ignore_rules() -> tuple[tuple[bool, re.Pattern[str]], ...]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return tuple(rules)


def in_context(path: str) -> bool:
    """Whether `path` (relative to the repository root) is sent to the builder: the last pattern
    matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negate, regex in ignore_rules():
        if any(regex.match(c) for c in candidates):
            included = negate
    return included


@cache
def context_files() -> tuple[str, ...]:
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"])
    assert listed.returncode == 0, listed.stderr
    return tuple(p for p in listed.stdout.splitlines() if (REPO / p).is_file() and in_context(p))


def test_dockerignore_sends_the_workspace_the_lock_and_every_service():
    files = set(context_files())
    assert {"pyproject.toml", "uv.lock"} <= files
    for pkg in PACKAGES:
        assert f"services/{pkg}/pyproject.toml" in files
        assert f"services/{pkg}/src/coca_{pkg}/__main__.py" in files, (
            f"services/{pkg} code is not in the context"
        )
    for lib in ("coca-platform", "coca-protos", "coca-llm-standin"):
        assert f"libs/{lib}/pyproject.toml" in files
    for pkg in SCHEMA_SERVICES:
        sql = [
            p
            for p in files
            if p.startswith(f"services/{pkg}/src/coca_{pkg}/migrations/") and p.endswith(".sql")
        ]
        assert sql or pkg == "plugin", f"{pkg}: migrations missing from the build context"


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "services/user/.venv/lib/python3.11/site-packages/x.py",
        "services/user/tests/test_auth.py",
        "libs/coca-platform/tests/test_db.py",
        "tests/e2e/test_first_path.py",
        "services/agent/src/coca_agent/__pycache__/app.cpython-311.pyc",
        "docs/deploy.md",
        "deploy/k8s/base/user.yaml",
        "infra/data/postgres/PG_VERSION",
        ".data/logs/user.log",
        "deploy/compose/.env",
    ],
)
def test_dockerignore_keeps_out(path: str):
    assert not in_context(path), f"{path} would be sent to the image builder"


def test_build_context_holds_no_tests_environments_or_git():
    leaked = [p for p in context_files() if re.search(r"(^|/)(tests|\.venv|\.git|__pycache__)(/|$)", p)]
    assert not leaked, f"in the build context: {leaked[:10]}"


# ------------------------------------------------------------------------------ Dockerfile
@dataclass
class Stage:
    name: str
    base: str
    steps: list[tuple[str, str]] = field(default_factory=list)


@cache
def stages() -> dict[str, Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op.upper() == "FROM":
            words = rest.split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else f"stage{len(found)}"
            current = found[name] = Stage(name, words[0])
        elif current is not None:
            current.steps.append((op.upper(), rest.strip()))
    return found


def chain(stage: str) -> list[Stage]:
    all_stages = stages()
    out = [all_stages[stage]]
    while out[0].base in all_stages:
        out.insert(0, all_stages[out[0].base])
    return out


def test_dockerfile_default_target_is_a_service_running_as_uid_10001():
    all_stages = stages()
    final = list(all_stages.values())[-1]
    assert final.name == "service"
    runtime = chain("service")
    users = [arg for st in runtime for op, arg in st.steps if op == "USER"]
    assert users
    assert users[-1].split(":")[0] == "10001"
    copies = [arg for op, arg in final.steps if op == "COPY"]
    assert copies == ["--from=build /app/.venv /app/.venv"], "the runtime stage copies only the environment"
    entry = [arg for op, arg in final.steps if op == "ENTRYPOINT"]
    assert entry
    assert "coca_${SERVICE}" in entry[0]
    assert all(st.base.startswith("${PY}") or st.base in all_stages for st in runtime)


def test_dockerfile_installs_from_the_lock_without_dev_dependencies():
    syncs = [arg for st in stages().values() for op, arg in st.steps if op == "RUN" and "uv sync" in arg]
    assert len(syncs) == 4
    for command in syncs:
        assert "--frozen" in command, command
        assert "--no-dev" in command, command
    assert sum("--no-editable" in c for c in syncs) == 2, "the runtime copies .venv: no editable installs"


def test_dockerfile_uv_matches_the_makefile():
    makefile = (REPO / "Makefile").read_text()
    wanted = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", makefile, re.M)
    pinned = re.search(r"^ARG UV_VERSION=(\S+)", DOCKERFILE.read_text(), re.M)
    assert wanted, "UV_VERSION not found in the Makefile"
    assert pinned, "ARG UV_VERSION not found in the Dockerfile"
    assert pinned.group(1) == wanted.group(1)


def _copy_from_context(source: str, target: Path) -> None:
    files = [p for p in context_files() if p == source or p.startswith(source.rstrip("/") + "/")]
    assert files, f"COPY {source}: nothing in the build context"
    for rel in files:
        dest = target / os.path.relpath(rel, source) if rel != source else target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)


def _mounts(args: str) -> tuple[list[tuple[str, str]], str]:
    """RUN's --mount options (bind mounts as (source, target)) and the shell command after them."""
    binds = []
    while (found := re.match(r"--mount=(\S+)\s+", args)) is not None:
        opts = dict(kv.split("=", 1) for kv in found.group(1).split(","))
        if opts.get("type") == "bind":
            binds.append((opts["source"], opts["target"]))
        args = args[found.end() :]
    return binds, args


def replay_build(stage: str, service: str | None, app: Path) -> None:
    """Replay the stage's steps: ENV, COPY from the context, RUN with its bind mounts present."""
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    env["PATH"] = f"{Path(uv).parent}{os.pathsep}{env.get('PATH', '')}"
    args = {"SERVICE": service or ""}
    for st in chain(stage):
        for op, arg in st.steps:
            if op != "RUN":  # RUN gets build arguments as environment variables, like the builder
                for key, value in args.items():
                    arg = arg.replace("${" + key + "}", value)
            if op == "ENV":
                env.update(dict(kv.split("=", 1) for kv in shlex.split(arg)))
            elif op == "ARG" and "=" not in arg:
                env[arg] = args.get(arg, "")
            elif op == "COPY" and not arg.startswith("--from"):
                source, dest = arg.split()
                _copy_from_context(source, app / dest)
            elif op == "RUN":
                binds, command = _mounts(arg)
                for source, target in binds:
                    assert in_context(source), f"bind mount {source} is not in the build context"
                    shutil.copy2(REPO / source, app / target)
                # Faster than the image build, same result: hard links and no bytecode.
                step_env = {
                    **env,
                    "UV_LINK_MODE": "hardlink",
                    "UV_COMPILE_BYTECODE": "0",
                    "UV_PYTHON": sys.executable,
                }
                proc = subprocess.run(
                    ["sh", "-c", command], cwd=app, env=step_env, capture_output=True, text=True, check=False
                )
                assert proc.returncode == 0, f"{stage}/{service}: RUN {command}\n{proc.stderr[-3000:]}"
                for _, target in binds:
                    (app / target).unlink()


def _build(pkg: str, root: Path) -> tuple[Path, str]:
    """Replay the build of one service; report the migrations its environment ships."""
    app = root / pkg / "app"
    app.mkdir(parents=True)
    replay_build("build", pkg, app)
    venv = app / ".venv"
    check = (
        "import importlib.metadata as m, importlib.resources as r, importlib.util as u;"
        f"assert u.find_spec('coca_{pkg}.__main__'), 'python -m coca_{pkg} has no __main__';"
        "names = {d.metadata['Name'] for d in m.distributions()};"
        "assert not names & {'pytest', 'ruff', 'mypy'}, names & {'pytest', 'ruff', 'mypy'};"
        f"folder = r.files('coca_{pkg}') / 'migrations';"
        "sql = sorted(p.name for p in folder.iterdir() if p.suffix == '.sql') if folder.is_dir() else [];"
        "print(','.join(sql))"
    )
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, check=False
    )
    assert listed.returncode == 0, f"{pkg}: {listed.stderr[-2000:]}"
    return venv, listed.stdout.strip()


def test_every_service_image_builds(tmp_path: Path):
    """All nine builds, replayed two at a time: each installs its service from the lock with no dev
    tools, `python -m coca_<service>` resolves, and the image ships the service's migrations."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        built = dict(zip(PACKAGES, pool.map(lambda p: _build(p, tmp_path), PACKAGES), strict=True))
    for pkg in SCHEMA_SERVICES:
        shipped = built[pkg][1].split(",") if built[pkg][1] else []
        folder = REPO / "services" / pkg / "src" / f"coca_{pkg}" / "migrations"
        in_repo = sorted(p.name for p in folder.glob("*.sql"))
        assert shipped == in_repo, f"{pkg}: image migrations {shipped} != repository {in_repo}"
    # The entrypoint as the image runs it (ENTRYPOINT + CMD), on the lightest service.
    venv = built["web"][0]
    entry = json.loads(next(arg for st in chain("service") for op, arg in st.steps if op == "ENTRYPOINT"))
    default = json.loads(next(arg for st in chain("service") for op, arg in st.steps if op == "CMD"))
    assert default == ["serve"]
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
        "SERVICE": "web",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    proc = subprocess.run(
        [*entry, "--help"], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, f"the entrypoint does not start:\n{proc.stderr[-2000:]}"
    assert "coca_web" in proc.stdout
    assert "migrate" in proc.stdout


def test_llm_standin_image_builds(tmp_path: Path):
    app = tmp_path / "app"
    app.mkdir()
    replay_build("standin-build", None, app)
    proc = subprocess.run(
        [str(app / ".venv" / "bin" / "python"), "-m", "coca_llm_standin", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "NOT A MODEL" in proc.stdout
