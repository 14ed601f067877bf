"""Operator benchmark: time from applying N RelayEdges to everything being in place, and the
load the operator puts on the API server once nothing changes.

The real ``turnpike operator`` process runs against the Kubernetes API emulator of the test suite
(tests/support/kubeapi: a stateful API server over HTTP with a kubelet stand-in). For N in 1, 20,
100 a fresh namespace gets N RelayEdges created at once; the clock stops when every edge's
children (relay Deployment, Service, PodDisruptionBudget, config ConfigMap) exist and the
IP-ranges ConfigMap publishes all N edges with their addresses. A second figure is when all N
edges report Ready (the emulator's kubelet makes pods ready at once). Polling is done with one
LIST per kind every 50 ms, so figures have about that resolution.

Then, with all N edges Ready and nothing changing, the operator's own requests (told apart from
the benchmark's by their User-Agent, as the emulator logs every request) are counted over a
window that spans several resync intervals, and reported as API requests per minute, by verb.
The namespace is emptied before the next N, so each figure is for N edges alone.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    REPO_ROOT,
    RESULTS_DIR,
    load_average,
    log,
    machine,
    machine_line,
    median,
    tree_cpu_seconds,
    utc_now,
    write_result,
)

NAMESPACE_PATTERN = "bench-*"


@dataclass
class OperatorParams:
    counts: list[int] = field(default_factory=lambda: [1, 20, 100])
    rounds: int = 2
    timeout: float = 240.0
    steady_window: float = 45.0  # seconds of counting, about two resync intervals of 20 s
    smoke: bool = False

    @classmethod
    def smoke_preset(cls) -> OperatorParams:
        return cls(counts=[1, 3], rounds=1, timeout=60.0, steady_window=5.0, smoke=True)


def _support() -> None:
    tests = str(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def _address(n: int) -> str:
    return f"198.18.{n // 200}.{n % 200 + 1}"


async def _measure(kube: Any, ns: str, count: int, timeout: float) -> dict[str, Any]:
    from turnpike.operator import kube as k8s
    from turnpike.operator import labels

    names = [f"edge-{n:03d}" for n in range(count)]
    relay = {labels.relay_name(n) for n in names}

    def body(n: int, name: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {
                "location": f"Site {n}",
                "publicHostname": f"{name}.turn.example.com",
                "replicas": 1,
                "addresses": {"static": [_address(n)]},
            },
        }

    t0 = time.monotonic()
    await asyncio.gather(
        *(kube.create(k8s.RELAY_EDGES, ns, body(n, name)) for n, name in enumerate(names))
    )
    applied = time.monotonic() - t0
    children_at: float | None = None
    ranges_at: float | None = None
    ready_at: float | None = None
    polls = 0
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        polls += 1
        now = time.monotonic()
        if children_at is None:
            kinds = (k8s.DEPLOYMENTS, k8s.SERVICES, k8s.PDBS, k8s.CONFIGMAPS)
            listed = await asyncio.gather(*(kube.list(kind, ns) for kind in kinds))
            if all(relay <= {o["metadata"]["name"] for o in objs} for objs in listed):
                children_at = now
        if ranges_at is None:
            cm = await kube.get(k8s.CONFIGMAPS, ns, labels.IP_RANGES)
            if cm is not None:
                doc = json.loads(cm["data"]["ranges.json"])
                edges = {e["edge"]: e for e in doc.get("edges", [])}
                if set(names) <= set(edges) and all(edges[n]["relay"]["cidrs"] for n in names):
                    ranges_at = now
        if ready_at is None:
            objs = await kube.list(k8s.RELAY_EDGES, ns)
            ok = 0
            for obj in objs:
                for cond in (obj.get("status") or {}).get("conditions") or []:
                    if cond.get("type") == "Ready" and cond.get("status") == "True":
                        ok += 1
            if ok >= count:
                ready_at = now
        if children_at is not None and ranges_at is not None and ready_at is not None:
            break
        await asyncio.sleep(0.05)

    def since(t: float | None) -> float | None:
        return round(t - t0, 3) if t is not None else None

    in_place = max(children_at, ranges_at) if children_at and ranges_at else None
    return {
        "edges": count,
        "create_calls_s": round(applied, 3),
        "children_s": since(children_at),
        "ip_ranges_s": since(ranges_at),
        "in_place_s": since(in_place),
        "all_ready_s": since(ready_at),
        "polls": polls,
        "timed_out": in_place is None,
    }


async def _run_async(params: OperatorParams, tmp: Path) -> tuple[list[dict[str, Any]], float]:
    _support()
    # the emulator and its helpers are test-suite code, imported from tests/ at run time
    e2e: Any = importlib.import_module("support.kube_e2e")
    kubeapi: Any = importlib.import_module("support.kubeapi")

    steps: list[dict[str, Any]] = []
    cpu_total = 0.0
    with kubeapi.KubeAPI() as api:
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")
        cluster = e2e.Cluster(kubeconfig, api, api.url)
        await e2e._prepare(cluster)
        operator = e2e.Operator(
            cluster, tmp / "operator.log", "--standalone", "--namespace", NAMESPACE_PATTERN
        )
        kube = cluster.client()
        try:
            await asyncio.to_thread(operator.wait_live)
            for rnd in range(params.rounds):
                for count in params.counts:
                    ns = await e2e.new_namespace(kube, "bench")
                    cpu0 = tree_cpu_seconds(operator.proc.pid)
                    step = await _measure(kube, ns, count, params.timeout)
                    cpu = tree_cpu_seconds(operator.proc.pid) - cpu0
                    cpu_total += cpu
                    steady = await _steady_requests(api, params.steady_window)
                    step.update(
                        round=rnd + 1,
                        operator_cpu_s=round(cpu, 3),
                        load_average=load_average(),
                        steady_requests_per_min=steady["total"],
                        steady_by_verb=steady["by_verb"],
                    )
                    steps.append(step)
                    log(
                        f" {count:4d} edges: children {step['children_s']} s, "
                        f"IP ranges {step['ip_ranges_s']} s, all Ready {step['all_ready_s']} s, "
                        f"steady state {steady['total']} API requests/min"
                    )
                    await e2e.delete_namespace(kube, ns)
        finally:
            await kube.close()
            operator.stop()
    return steps, cpu_total


async def _steady_requests(api: Any, window: float) -> dict[str, Any]:
    """The operator's API requests per minute over ``window`` seconds of nothing changing."""
    from turnpike.operator import kube as k8s

    e2e: Any = importlib.import_module("support.kube_e2e")
    await asyncio.sleep(3)  # let the last status writes and the debounced publish settle
    start = len(api.routes.requests)
    await asyncio.sleep(window)
    by_verb: dict[str, int] = {}
    for method, path, query, agent in list(api.routes.requests)[start:]:
        if not agent.startswith((k8s.USER_AGENT, "kopf/")):
            continue
        grant = e2e.request_grant(method, path, query)
        key = f"{grant[2]} {grant[1]}" if grant else f"{method} {path}"
        by_verb[key] = by_verb.get(key, 0) + 1
    scale = 60.0 / window
    return {
        "total": round(sum(by_verb.values()) * scale, 1),
        "by_verb": {k: round(v * scale, 1) for k, v in sorted(by_verb.items())},
    }


def _headline(count: int, entry: dict[str, Any], n: int) -> str:
    def sec(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f} s"

    return (
        f"{count} RelayEdges: children and IP ranges in place after {sec(entry['in_place_s'])}, "
        f"all Ready after {sec(entry['all_ready_s'])}, then "
        f"{entry['steady_requests_per_min']} API requests/min at steady state (median of {n})"
    )


def run(params: OperatorParams, out_dir: Path, plots: bool = True) -> dict[str, Any]:
    info = machine()
    log(machine_line(info))
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="turnpike-bench-operator-"))
    try:
        steps, _cpu = asyncio.run(_run_async(params, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["load_average_at_end"] = load_average()
    summary: dict[str, Any] = {}
    headline: list[str] = []
    for count in params.counts:
        mine = [s for s in steps if s["edges"] == count]
        entry = {
            "in_place_s": median(s["in_place_s"] for s in mine),
            "children_s": median(s["children_s"] for s in mine),
            "ip_ranges_s": median(s["ip_ranges_s"] for s in mine),
            "all_ready_s": median(s["all_ready_s"] for s in mine),
            "operator_cpu_s": median(s["operator_cpu_s"] for s in mine),
            "steady_requests_per_min": median(s["steady_requests_per_min"] for s in mine),
            "timed_out": sum(1 for s in mine if s["timed_out"]),
        }
        summary[str(count)] = entry
        headline.append(_headline(count, entry, len(mine)))
    result: dict[str, Any] = {
        "benchmark": "operator",
        "date": utc_now(),
        "smoke": params.smoke,
        "machine": info,
        "machine_line": machine_line(info),
        "wall_time_s": round(time.monotonic() - started, 1),
        "params": asdict(params),
        "api": "Kubernetes API emulator of the test suite (tests/support/kubeapi)",
        "steps": steps,
        "summary": {"by_count": summary, "headline": headline},
    }
    path = write_result(out_dir, "operator", result)
    log(f"wrote {path}")
    if plots:
        from bench.plots import plot_operator

        log(f"wrote {plot_operator(result, out_dir)}")
    for line in headline:
        print(line)
    return result


def main(params: OperatorParams, out_dir: Path | None, plots: bool) -> int:
    run(params, out_dir or RESULTS_DIR, plots)
    return 0
