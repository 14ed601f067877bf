"""What every benchmark shares: the machine description, /proc CPU accounting, result files."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        out = subprocess.run(
            [git, "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def machine() -> dict[str, Any]:
    """The facts every report states: cores, CPU model, kernel, Python, uvloop, date."""
    uvloop_version = _package_version("uvloop")
    try:  # what Turnpike's services actually pick (turnpike.core.service)
        from turnpike.core.service import uvloop_enabled

        used = uvloop_enabled()
    except ImportError:
        used = uvloop_version is not None
    return {
        "date": utc_now(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "uvloop": uvloop_version,
        "uvloop_used_by_turnpike": used,
        "turnpike_commit": _git_commit(),
        "load_average_at_start": load_average(),
    }


def machine_line(m: dict[str, Any]) -> str:
    on = m.get("uvloop") and m.get("uvloop_used_by_turnpike", True)
    uv = f"uvloop {m['uvloop']} on" if on else "uvloop off"
    return (
        f"{m['cores']} cores ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}, {uv}, {m['date']}"
    )


# --- CPU time from /proc -------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids.extend(int(x) for x in (task / "children").read_text().split())
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    seen: list[int] = []
    todo = [pid]
    while todo and len(seen) < 1000:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(f"/proc/{pid}/stat").read_text()
            fields = raw[raw.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    return cpu_seconds(process_tree(pid))


# --- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return float(ordered[rank - 1])


def median(values: Iterable[float | None]) -> float | None:
    data = [v for v in values if v is not None]
    return float(statistics.median(data)) if data else None


def spread(values: Iterable[float | None]) -> dict[str, float | None]:
    data = [v for v in values if v is not None]
    if not data:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": float(statistics.median(data)),
        "min": float(min(data)),
        "max": float(max(data)),
        "n": len(data),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# --- results -------------------------------------------------------------------------------------


def write_result(out_dir: Path, name: str, result: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def log(message: str) -> None:
    print(f"[bench {dt.datetime.now(dt.UTC).strftime('%H:%M:%S')}] {message}", flush=True)
