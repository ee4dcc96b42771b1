"""A scenario's outcome as a Markdown table (terminal and docs), as JSON, and in docs/performance.md.

The docs page has one block per scenario between ``<!-- bench:NAME:start -->`` and
``<!-- bench:NAME:end -->``; ``update_docs`` rewrites the blocks of the scenarios that ran, so a run
of one scenario leaves the others' figures alone.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import orjson

from bench.procs import ROOT, Cores
from bench.rounds import Outcome

DOCS = ROOT / "docs" / "performance.md"


def machine(cores: Cores) -> dict[str, Any]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sut_core": cores.sut,
        "load_core": cores.load,
        "commit": commit or None,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": os.getloadavg()[0],
    }


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(outcome: Outcome) -> str:
    head = ["target", *(c.label for c in outcome.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in outcome.targets.items():
        cells = [f"{name}{' (anchor)' if entry['role'] == 'anchor' else ''}"]
        for col in outcome.columns:
            figure = entry["summary"].get(col.key)
            if figure is None or figure["median"] is None:
                cells.append("-")
                continue
            spread = figure["spread_pct"]
            tail = ""
            if spread is not None and figure["n"] > 1:
                tail = f" ±{spread:.0f}%" if spread < 1000 else " ±>999%"
            cells.append(_fmt(figure["median"], col.digits) + tail)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for ratio in outcome.ratios:
        value = "-"
        if ratio["value"] is not None:
            value = {"ms": f"{ratio['value']:+.2f} ms", "x": f"{ratio['value']:.2f}x"}.get(
                ratio["unit"], f"{ratio['value']:g} {ratio['unit']}"
            )
        lines.append(f"- {ratio['label']}: **{value}**")
    for goal in outcome.goals:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[goal["met"]]
        value = "-" if goal["value"] is None else f"{goal['value']:.2f}"
        lines.append(f"- goal: {goal['goal']} — {value}: **{verdict}**")
    lines += [f"- note: {note}" for note in outcome.notes]
    return "\n".join(lines)


def document(outcome: Outcome, info: dict[str, Any], rounds: int, smoke: bool) -> dict[str, Any]:
    return {
        "scenario": outcome.name,
        "title": outcome.title,
        "smoke": smoke,
        "rounds": rounds,
        "params": outcome.params,
        "machine": info,
        "columns": [{"key": c.key, "label": c.label} for c in outcome.columns],
        "targets": outcome.targets,
        "ratios": outcome.ratios,
        "goals": outcome.goals,
        "notes": outcome.notes,
        "table": table(outcome),
    }


def write_json(out_dir: Path, doc: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    (out_dir / f"{doc['scenario']}-{stamp}.json").write_bytes(data)
    latest = out_dir / f"{doc['scenario']}.json"
    latest.write_bytes(data)
    return latest


def update_docs(docs: list[dict[str, Any]], path: Path = DOCS) -> None:
    text = path.read_text()
    for doc in docs:
        info = doc["machine"]
        params = orjson.dumps(doc["params"]).decode()
        header = (
            f"_{info['date']}, commit {info['commit']}, {info['cpu']}, {info['cores']} cores, "
            f"{info['memory_gib']} GiB; SUT on core {info['sut_core']}, load on core {info['load_core']}; "
            f"{doc['rounds']} rounds; load average {info['load_average']:.2f} at the start; params {params}._"
        )
        start, end = f"<!-- bench:{doc['scenario']}:start -->", f"<!-- bench:{doc['scenario']}:end -->"
        block = f"{start}\n{header}\n\n{doc['table']}\n{end}"
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
        if pattern.search(text) is None:
            raise ValueError(f"{path} has no block for scenario {doc['scenario']!r}")
        text = pattern.sub(block.replace("\\", "\\\\"), text)
    path.write_text(text)
