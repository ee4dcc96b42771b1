"""The benchmark harness cannot rot: every scenario runs in smoke mode (a second or two each, one round)
and must produce its table and JSON with sane fields. No timing is asserted: benchmarks are not tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ["gateway", "sse", "fanout", "agent_turn", "login"]
# What proves a scenario's Coca target did real work in its round.
WORK = {
    "gateway": "ok",
    "sse": "streams",
    "fanout": "delivered",
    "agent_turn": "turns",
    "login": "logins",
}
TOOLS = {"nginx": "nginx", "wrk": "wrk", "taskset": "util-linux", "redis-server": "redis-server"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    return run, out


def _doc(out: Path, scenario: str) -> dict[str, Any]:
    path = out / f"{scenario}.json"
    assert path.exists(), f"no JSON for {scenario} under {out}"
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    return doc


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_benchmark_tool_is_installed(tool: str) -> None:
    found = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if Path(p).exists()), None
    )
    assert found, f"`{tool}` is missing: apt-get install {TOOLS[tool]} (make bootstrap installs it)"


def test_smoke_run_completes_every_scenario(smoke: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    run, _ = smoke
    assert run.returncode == 0, f"python -m bench --smoke failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    for scenario in SCENARIOS:
        assert f"## {scenario}:" in run.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_smoke_scenario_reports_anchors_and_coca_side_by_side(
    smoke: tuple[subprocess.CompletedProcess[str], Path], scenario: str
) -> None:
    run, out = smoke
    doc = _doc(out, scenario)
    assert doc["scenario"] == scenario
    assert doc["smoke"] is True
    assert doc["rounds"] == 1
    assert doc["machine"]["sut_core"] != doc["machine"]["load_core"]
    targets = doc["targets"]
    assert {t["role"] for t in targets.values()} == {"anchor", "coca"}
    for name, target in targets.items():
        assert len(target["rounds"]) >= 1, name
        medians = [f["median"] for f in target["summary"].values() if f["median"] is not None]
        assert medians, f"{scenario}/{name} measured nothing"
    coca = [t for t in targets.values() if t["role"] == "coca"]
    assert all(t["summary"][WORK[scenario]]["median"] > 0 for t in coca), f"{scenario}: Coca did no work"
    assert any(r["value"] is not None for r in doc["ratios"]), f"{scenario}: no ratio to an anchor"
    assert all({"goal", "value", "limit", "met"} <= set(g) for g in doc["goals"])
    assert doc["table"].startswith("| target |")
    assert doc["table"] in run.stdout, "the table printed is the one in the JSON"
