"""Token API benchmark: tokens per second (per server CPU second) and latency percentiles.

A real ``turnpike tokens`` process serves ``POST /2010-04-01/Accounts/{sid}/Tokens.json`` with
HTTP Basic auth; closed-loop aiohttp clients in separate processes keep ``concurrency`` requests
in flight over keep-alive connections for a fixed time. Server CPU comes from /proc (utime+stime),
so "tokens per CPU second" stays meaningful even when the clients, which share the same cores,
are what limits the request rate. The per-account rate limit is switched off (``--rate-limit 0``):
this measures the issuing path, not the limiter.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import servers
from bench.common import (
    RESULTS_DIR,
    cpu_seconds,
    load_average,
    log,
    machine,
    machine_line,
    median,
    percentile,
    spread,
    utc_now,
    write_result,
)
from bench.httpload import HttpLoad


@dataclass
class TokensParams:
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    duration: float = 3.0
    rounds: int = 2
    client_procs: int = 2
    ttl: int = 3600
    smoke: bool = False

    @classmethod
    def smoke_preset(cls) -> TokensParams:
        return cls(concurrency=[1, 4], duration=0.4, rounds=1, smoke=True)


def _check_token(body: str | None) -> dict[str, Any]:
    """The first response, checked for the hosted shape (the bench must measure real tokens)."""
    if body is None:
        raise RuntimeError("no token response received")
    doc = json.loads(body)
    for key in ("account_sid", "ice_servers", "username", "password", "ttl"):
        if key not in doc:
            raise RuntimeError(f"token response lacks {key!r}")
    return {"ice_servers": len(doc["ice_servers"]), "ttl": doc["ttl"]}


def run(params: TokensParams, out_dir: Path, plots: bool = True) -> dict[str, Any]:
    from turnpike.core.edges import GLOBAL, Edge, EdgeDirectory
    from turnpike.core.keyring import Keyring
    from turnpike.core.sids import new_sid

    info = machine()
    log(machine_line(info))
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="turnpike-bench-tokens-"))
    account, token = new_sid("AC"), secrets.token_hex(16)
    steps: list[dict[str, Any]] = []
    command: list[str] = []
    try:
        (tmp / "keyring.json").write_text(Keyring.generate("bench").to_json())
        (tmp / "accounts.json").write_text(
            json.dumps({"accounts": [{"sid": account, "authToken": token}]})
        )
        edges = EdgeDirectory(Edge(GLOBAL, "turn.bench.example"))
        (tmp / "edges.json").write_text(edges.render())
        port = servers.free_dual_port()
        base = f"http://127.0.0.1:{port}"
        args = [
            "tokens",
            "--listen", f"127.0.0.1:{port}",
            "--keyring", str(tmp / "keyring.json"),
            "--accounts", str(tmp / "accounts.json"),
            "--edges", str(tmp / "edges.json"),
            "--rate-limit", "0",
        ]  # fmt: skip
        service = servers.start_turnpike("tokens", args, tmp, f"{base}/ready")
        command = ["turnpike", *[Path(a).name if a.startswith("/") else a for a in args]]
        url = f"{base}/2010-04-01/Accounts/{account}/Tokens.json"
        auth = "Basic " + base64.b64encode(f"{account}:{token}".encode()).decode()
        headers = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
        try:
            with HttpLoad(params.client_procs) as load:
                load.run(url, headers, f"Ttl={params.ttl}", 2, min(0.3, params.duration))  # warm-up
                for rnd in range(params.rounds):
                    for conc in params.concurrency:
                        before = service.cpu_seconds()
                        clients_before = cpu_seconds(load.pids)
                        res = load.run(url, headers, f"Ttl={params.ttl}", conc, params.duration)
                        cpu = service.cpu_seconds() - before
                        clients_cpu = cpu_seconds(load.pids) - clients_before
                        shape = _check_token(res.pop("first_body"))
                        lat = res.pop("latency_ms")
                        ok = res["statuses"].get("201", 0)
                        step = {
                            "round": rnd + 1,
                            **res,
                            "tokens": ok,
                            "tokens_per_s": round(ok / params.duration, 1),
                            "server_cpu_s": round(cpu, 3),
                            "tokens_per_cpu_s": round(ok / cpu, 1) if cpu > 0 else None,
                            "server_cpu_utilisation": round(cpu / params.duration, 3),
                            "client_cpu_utilisation": round(clients_cpu / params.duration, 3),
                            "p50_ms": percentile(lat, 50),
                            "p90_ms": percentile(lat, 90),
                            "p99_ms": percentile(lat, 99),
                            "response": shape,
                            "load_average": load_average(),
                        }
                        steps.append(step)
                        log(
                            f" concurrency {conc:3d}: {step['tokens_per_s']:8.0f} tokens/s, "
                            f"{step['tokens_per_cpu_s'] or 0:8.0f} per server CPU s, "
                            f"p50 {step['p50_ms']:.2f} ms p99 {step['p99_ms']:.2f} ms"
                        )
        finally:
            service.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["load_average_at_end"] = load_average()
    summary: dict[str, Any] = {}
    for conc in params.concurrency:
        mine = [s for s in steps if s["concurrency"] == conc]
        summary[str(conc)] = {
            "tokens_per_s": spread(s["tokens_per_s"] for s in mine),
            "tokens_per_cpu_s": spread(s["tokens_per_cpu_s"] for s in mine),
            "p50_ms": spread(s["p50_ms"] for s in mine),
            "p99_ms": spread(s["p99_ms"] for s in mine),
            "non_201": sum(sum(v for k, v in s["statuses"].items() if k != "201") for s in mine),
            "server_cpu_utilisation": median(s["server_cpu_utilisation"] for s in mine),
            "client_cpu_utilisation": median(s["client_cpu_utilisation"] for s in mine),
        }
    best = max(summary.values(), key=lambda e: e["tokens_per_s"]["median"] or 0)
    one = summary.get(str(min(params.concurrency)), {})
    headline = [
        f"highest throughput: {best['tokens_per_s']['median']:,.0f} tokens/s; "
        f"{best['tokens_per_cpu_s']['median'] or 0:,.0f} tokens per server CPU second "
        "(= per core when the server is saturated)",
    ]
    if one:
        headline.append(
            f"latency at concurrency {min(params.concurrency)}: p50 "
            f"{one['p50_ms']['median']:.2f} ms, p99 {one['p99_ms']['median']:.2f} ms"
        )
    result: dict[str, Any] = {
        "benchmark": "tokens",
        "date": utc_now(),
        "smoke": params.smoke,
        "machine": info,
        "machine_line": machine_line(info),
        "wall_time_s": round(time.monotonic() - started, 1),
        "params": asdict(params),
        "command": command,
        "steps": steps,
        "summary": {"by_concurrency": summary, "headline": headline},
    }
    path = write_result(out_dir, "tokens", result)
    log(f"wrote {path}")
    if plots:
        from bench.plots import plot_tokens

        log(f"wrote {plot_tokens(result, out_dir)}")
    for line in headline:
        print(line)
    return result


def main(params: TokensParams, out_dir: Path | None, plots: bool) -> int:
    run(params, out_dir or RESULTS_DIR, plots)
    return 0
