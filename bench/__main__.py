"""``python -m bench``: run the scenarios, print a table each, write JSON (and the docs' figures).

python -m bench                          # every scenario, 5 rounds (make bench)
python -m bench --scenario gateway       # one (make bench SCENARIO=gateway)
python -m bench --smoke --out /tmp/b     # a second or two of each: the CI smoke test
python -m bench --set rate=1000 --set fanout.subscribers=100,1000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import uvloop

from bench.procs import ROOT, BenchError, Cores, stop_all
from bench.report import document, machine, update_docs, write_json
from bench.scenarios import SCENARIOS
from bench.stack import Bench

_MIN_ROUNDS = 5
_KEEP_RUNS = 5  # folders of process logs kept under <out>/runs (a full run leaves tens of MB)


def _value(text: str) -> Any:
    if "," in text:
        return [_value(part) for part in text.split(",") if part]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _params(name: str, smoke: bool, overrides: list[str]) -> dict[str, Any]:
    module = SCENARIOS[name]
    params = dict(module.PARAMS) | (dict(module.SMOKE) if smoke else {})
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        scope, dot, field = key.rpartition(".")
        if dot and scope != name:
            continue
        if field not in params:
            if dot:
                raise SystemExit(f"scenario {name} has no parameter {field!r} (it has {', '.join(params)})")
            continue
        params[field] = _value(raw)
    return params


def _prune(runs: Path) -> None:
    if runs.is_dir():
        for old in sorted(p for p in runs.iterdir() if p.is_dir())[: -_KEEP_RUNS + 1 or None]:
            shutil.rmtree(old, ignore_errors=True)


def _raise_open_files() -> None:
    """Thousands of WebSocket connections need as many descriptors (children inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1_048_576 if hard == resource.RLIM_INFINITY else hard
    for limit in (max(want, 65_536), want):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
            return
        except (ValueError, OSError):
            continue
    if soft < 32_768:
        print(f"warning: open files limited to {soft}; large fan-out rounds may fail", file=sys.stderr)


async def _main(args: argparse.Namespace, names: list[str], cores: Cores) -> int:
    main_task, loop = asyncio.current_task(), asyncio.get_running_loop()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # stop everything started, then exit
        loop.add_signal_handler(sig, main_task.cancel)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out
    run_dir = out / "runs" / stamp
    docs: list[dict[str, Any]] = []
    failed: list[str] = []
    _prune(out / "runs")
    async with Bench.open(cores, run_dir, smoke=args.smoke) as bench:
        for name in names:
            module = SCENARIOS[name]
            params = _params(name, args.smoke, args.set)
            print(f"\n## {name}: {module.TITLE}\nparams {params}", flush=True)
            info = machine(cores)  # date and load average as the scenario starts
            try:
                async with bench.scenario():
                    outcome = await module.run(
                        bench, params, rounds=args.rounds, duration_s=args.duration, warmup_s=args.warmup
                    )
            except Exception as exc:  # report it, go on with the next scenario, fail at the end
                failed.append(name)
                detail = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
                print(
                    f"!! scenario {name} failed: {detail}\n   logs: {run_dir / 'logs'}",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            doc = document(outcome, info, args.rounds, args.smoke)
            path = write_json(out, doc)
            docs.append(doc)
            print(doc["table"], f"\n(JSON: {path})", sep="\n", flush=True)
    if args.write_docs and docs:
        update_docs(docs)
        print(f"\nfigures written to {Path('docs/performance.md')}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="all", help=f"all, or comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--smoke", action="store_true", help="a second or two per scenario (CI): 1 round")
    parser.add_argument("--rounds", type=int, default=None, help=f"measured rounds (at least {_MIN_ROUNDS})")
    parser.add_argument("--duration", type=float, default=None, help="seconds per target per round")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per target")
    parser.add_argument("--set", action="append", default=[], help="param=value or scenario.param=value")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where the JSON goes")
    parser.add_argument(
        "--write-docs", action="store_true", help="rewrite the figures in docs/performance.md"
    )
    parser.add_argument("--sut-cpu", type=int, default=None, help="core of the system under test")
    parser.add_argument("--load-cpu", type=int, default=None, help="core of the load generator")
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [n.strip() for n in args.scenario.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    args.out = Path(args.out).resolve()
    args.rounds = args.rounds or (1 if args.smoke else _MIN_ROUNDS)
    if not args.smoke and args.rounds < _MIN_ROUNDS:
        raise SystemExit(f"at least {_MIN_ROUNDS} rounds (median and spread); --smoke for a quick check")
    args.duration = args.duration or (0.5 if args.smoke else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.0 if args.smoke else 2.0)
    if args.smoke and args.write_docs:
        raise SystemExit("smoke figures are not benchmark figures: --write-docs needs a full run")
    try:
        cores = Cores.pick(args.sut_cpu, args.load_cpu)
    except BenchError as exc:
        raise SystemExit(f"bench: {exc}") from None
    os.sched_setaffinity(0, {cores.load})  # this process is the load generator
    _raise_open_files()
    print(f"bench: system under test on core {cores.sut}, load on core {cores.load}", flush=True)
    try:
        status = uvloop.run(_main(args, names, cores))
    except asyncio.CancelledError:
        print("bench: interrupted; everything it started was stopped", file=sys.stderr)
        status = 130
    finally:
        stop_all()
    sys.exit(status)


if __name__ == "__main__":
    main()
