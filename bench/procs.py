"""Processes of a benchmark: started pinned to a core, measured from /proc, always stopped.

``Cores`` says which core runs the system under test and which the load. ``Proc`` wraps one started
process and measures its whole tree (nginx workers, threads included): CPU seconds, current and
peak resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


# Every process started and not yet stopped, so an interrupted run can still stop them all.
_RUNNING: dict[int, Proc] = {}


class BenchError(RuntimeError):
    """A benchmark cannot run (a tool is missing, a process died); the message says what to do."""


def need(binary: str, package: str) -> str:
    """The path of ``binary``; a clear failure naming the Debian package when it is missing."""
    path = shutil.which(binary) or next(
        (str(p) for p in (Path("/usr/sbin") / binary, Path("/sbin") / binary) if p.exists()), None
    )
    if path is None:
        raise BenchError(
            f"`{binary}` is not installed: apt-get install {package} (make bootstrap installs it)"
        )
    return path


@dataclass(frozen=True)
class Cores:
    sut: int
    load: int

    @classmethod
    def pick(cls, sut: int | None, load: int | None) -> Cores:
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2 and (sut is None or load is None):
            raise BenchError("the benchmarks need two cores: one for the system under test, one for the load")
        chosen = cls(sut if sut is not None else available[0], load if load is not None else available[-1])
        if chosen.sut == chosen.load:
            raise BenchError("the system under test and the load generator must run on different cores")
        return chosen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids, i = [pid], 0
    while i < len(pids):
        pids += _children(pids[i])
        i += 1
    return pids


def _cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime, all threads
    return 0.0


def _status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


@dataclass
class Proc:
    """A started process; its figures cover its whole tree as it is when asked (workers forked late
    included)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def cpu_s(self) -> float:
        return sum(_cpu_s(p) for p in tree(self.popen.pid))

    def rss_mib(self) -> float:
        return sum(_status_kib(p, "VmRSS:") for p in tree(self.popen.pid)) / 1024

    def peak_rss_mib(self) -> float:
        return sum(_status_kib(p, "VmHWM:") for p in tree(self.popen.pid)) / 1024

    def check(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise BenchError(f"{self.name} exited with status {self.popen.returncode}; its log ends:\n{tail}")

    def stop(self) -> None:
        _RUNNING.pop(self.popen.pid, None)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)


def spawn(name: str, cmd: list[str], *, core: int, logs: Path, env: dict[str, str] | None = None) -> Proc:
    """Start ``cmd`` pinned to ``core`` (every thread it ever starts inherits the pinning)."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    taskset = need("taskset", "util-linux")
    with log.open("ab") as out:
        popen = subprocess.Popen(  # noqa: S603
            [taskset, "-c", str(core), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            start_new_session=True,
        )
    proc = Proc(name, popen, log)
    _RUNNING[popen.pid] = proc
    return proc


def stop_all() -> None:
    """Stop whatever is still running (the last resort of an interrupted run)."""
    for proc in list(_RUNNING.values()):
        proc.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


async def wait_port(proc: Proc, port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.check()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise BenchError(f"{proc.name} did not listen on port {port} within {timeout_s:.0f} s; see {proc.log}")


async def wait_http(proc: Proc, url: str, timeout_s: float = 60) -> None:
    """Wait until ``url`` answers 200 (a service's /readyz)."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            proc.check()
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}: {(await resp.text())[:300]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.1)
    raise BenchError(f"{proc.name} was not ready within {timeout_s:.0f} s ({last}); see {proc.log}")


class Cpu:
    """CPU seconds used by some processes between ``start`` and ``stop``."""

    def __init__(self, *procs: Proc) -> None:
        self._procs = procs
        self._t0 = 0.0
        self._c0 = 0.0
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def start(self) -> None:
        self._c0 = sum(p.cpu_s() for p in self._procs)
        self._t0 = time.monotonic()

    def stop(self) -> Cpu:
        self.wall_s = time.monotonic() - self._t0
        self.cpu_s = sum(p.cpu_s() for p in self._procs) - self._c0
        return self

    @property
    def utilisation(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s else 0.0
