"""CPU seconds used by each stage of the running stack (``make run``), read from ``/proc``.

The pipeline benchmark samples these before and after its throughput phase, so each
stage's CPU per order is measured with every feature on, rather than worked out from
throughputs measured on a shared machine. A stage is a set of processes:

- ``orders``, ``donations``, ``charities``: the uvicorn process in ``var/run/<name>.pid``
  and its children (the orders workers);
- ``kafka``: the broker in ``var/kafka/kafka.pid``;
- ``postgres``: the server's backends serving the stack's own databases (``orders``,
  ``donations``, ``charities``), told apart by their process title; the server's
  shared background processes (WAL writer, checkpointer...) are ``postgres_shared``.
  Backends serving other databases (the benchmarks' own ``*_bench``, tests) are left out.

CPU is user plus system time. A process that exits during the window loses its share, so
the figures are for a stack whose pools stay connected, as ``make run``'s do.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("orders", "donations", "charities")
_TICK = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def _pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def stage_processes(root: Path = ROOT) -> dict[str, list[int]]:
    """The pids of each stage, now."""
    stages: dict[str, list[int]] = defaultdict(list)
    for name in SERVICES:
        pid = _pid_file(root / "var" / "run" / f"{name}.pid")
        if pid is not None and Path(f"/proc/{pid}").exists():
            stages[name] = [pid, *_children(pid)]
    kafka = _pid_file(root / "var" / "kafka" / "kafka.pid")
    if kafka is not None:
        stages["kafka"] = [kafka]
    postmaster = _pid_file(root / "var" / "pg" / "data" / "postmaster.pid")
    if postmaster is not None:
        for child in _children(postmaster):
            try:
                title = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
            except FileNotFoundError:
                continue
            words = title.replace("\x00", " ").split()
            # A backend's title is "postgres: <user> <database> <client> <state>".
            if len(words) >= 3 and words[0] == "postgres:" and "(" in title:
                if words[2] in SERVICES:
                    stages["postgres"].append(child)
            else:
                stages["postgres_shared"].append(child)
        stages["postgres_shared"].append(postmaster)
    return dict(stages)


def sample(stages: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each stage's processes (gone processes count 0)."""
    used: dict[str, float] = {}
    for stage, pids in stages.items():
        total = 0.0
        for pid in pids:
            try:
                total += process_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                pass
        used[stage] = total
    return used


def per_item_ms(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
    """Milliseconds of CPU per item for each stage between two samples."""
    return {stage: (after[stage] - before.get(stage, 0.0)) * 1000 / items for stage in after}


def tree_seconds(pid: int) -> float:
    """CPU seconds so far of a process and its children (uvicorn with ``--workers``)."""
    return sum(seconds_or_zero(p) for p in [pid, *_children(pid)])


def database_backends(database: str) -> dict[int, float]:
    """The PostgreSQL backends serving ``database`` now (by process title), with their CPU
    seconds so far. A benchmark samples it before and after its run: a backend that
    appears in between started during the run and counts whole."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().decode(errors="replace").split("\x00")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        title = " ".join(words).split()
        if len(title) >= 3 and title[0] == "postgres:" and title[2] == database:
            found[int(entry.name)] = seconds_or_zero(int(entry.name))
    return found


def backends_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the backends used between two ``database_backends`` samples."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def seconds_or_zero(pid: int) -> float:
    """``process_seconds``, or 0 for a process that is gone."""
    try:
        return process_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
