"""Relay benchmark: Turnpike's relay and coturn under the same load generator, alternated per round.

Per round and server (the order rotates every round so neither always runs first):

1. highest offered packet rate relayed with < 0.1 % loss, searched per mode (ChannelData over UDP,
   Send indications over UDP, ChannelData over TCP): double from a start rate until a trial fails,
   then bisect geometrically to ~10 %; later rounds start from the previous round's figure;
2. server CPU seconds (utime+stime from /proc of the server process and its children) per million
   relayed packets at a fixed offered load of ChannelData/UDP;
3. round-trip time of timestamped probes echoed by a peer through the relay at half the highest
   ChannelData/UDP rate, minus the same probes' round trip without the relay at the same load;
4. allocations per second: concurrent lanes each doing challenge → authenticated Allocate →
   Refresh(0), from a fresh client 5-tuple every cycle.

Each round also measures the load generator's own ceiling (client → peer, no relay) the same way.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable
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
    percentile,
    ratio,
    spread,
    utc_now,
    write_result,
)
from bench.loadgen import Generator

MODES = ("channel", "send", "tcp")
MODE_LABELS = {
    "channel": "ChannelData/UDP",
    "send": "Send+Data indications/UDP",
    "tcp": "ChannelData/TCP",
    "direct": "generator ceiling (no relay)",
}


@dataclass
class RelayParams:
    servers: list[str] = field(
        default_factory=lambda: ["coturn", "turnpike-w1", "turnpike-w2", "turnpike-fast"]
    )
    rounds: int = 3
    modes: list[str] = field(default_factory=lambda: list(MODES))
    generator_procs: int = 2
    udp_flows: int = 8  # allocations with ChannelData/Send load, per generator process
    tcp_flows: int = 4  # TCP allocations per generator process
    payload: int = 172  # bytes: a 20 ms G.711 RTP packet
    duration: float = 1.0  # seconds of load per rate trial
    drain: float = 0.3
    start_rate: float = 20000.0
    max_rate: float = 400000.0
    resolution: float = 1.1
    max_trials: int = 9
    loss_limit: float = 0.001
    cpu_rate: float = 20000.0
    cpu_duration: float = 2.0
    latency_duration: float = 2.0
    probe_rate: float = 1000.0
    alloc_duration: float = 1.5
    alloc_lanes: int = 16  # per generator process
    relay_ports: tuple[int, int] = (50000, 59999)
    smoke: bool = False

    @classmethod
    def smoke_preset(cls) -> RelayParams:
        return cls(
            servers=["coturn", "turnpike-w1"],
            rounds=1,
            udp_flows=2,
            tcp_flows=1,
            duration=0.25,
            drain=0.15,
            start_rate=2000.0,
            max_trials=2,
            cpu_rate=2000.0,
            cpu_duration=0.3,
            latency_duration=0.3,
            probe_rate=200.0,
            alloc_duration=0.3,
            alloc_lanes=4,
            smoke=True,
        )


Trial = Callable[[float], dict[str, Any]]


def search_max_rate(
    trial: Trial, params: RelayParams, hint: float | None
) -> tuple[float, list[dict[str, Any]]]:
    """Highest rate that passes, and every trial run; bounded by ``max_trials``."""
    trials: list[dict[str, Any]] = []
    lo = 0.0
    hi: float | None = None
    rate = hint if hint else params.start_rate
    step = 1.25 if hint else 2.0
    # expand (or shrink) until the limit is bracketed
    while len(trials) < params.max_trials:
        result = trial(rate)
        trials.append(result)
        if result["pass"]:
            lo = rate
            if hi is not None or rate >= params.max_rate:
                break
            rate = min(params.max_rate, rate * step)
        else:
            hi = rate
            if lo > 0:
                break
            rate = rate / step
            if rate < 100:
                break
    # bisect geometrically
    while hi is not None and lo > 0 and hi / lo > params.resolution:
        if len(trials) >= params.max_trials:
            break
        rate = math.sqrt(lo * hi)
        result = trial(rate)
        trials.append(result)
        if result["pass"]:
            lo = rate
        else:
            hi = rate
    return lo, trials


def _trial_record(res: dict[str, Any], params: RelayParams, cpu_s: float | None) -> dict[str, Any]:
    late_ok = res["late_s"] <= max(0.01, 0.02 * params.duration)
    record = {
        "rate": round(res["rate"], 1),
        "offered": res["offered"],
        "sent": res["sent"],
        "received": res["received"],
        "received_late": res["received_total"] - res["received"],
        "loss": res["loss"],
        "late_s": round(res["late_s"], 4),
        "send_errors": res["send_errors"],
        "pass": bool(res["loss"] < params.loss_limit and late_ok),
    }
    if cpu_s is not None:
        record["server_cpu_s"] = round(cpu_s, 3)
    return record


def _rtt_summary(rtts: list[float], sent: int, received: int) -> dict[str, Any]:
    return {
        "samples": len(rtts),
        "probes_sent": sent,
        "probes_received": received,
        "p50_us": percentile(rtts, 50),
        "p90_us": percentile(rtts, 90),
        "p99_us": percentile(rtts, 99),
        "max_us": max(rtts) if rtts else None,
    }


class RelayBench:
    def __init__(self, params: RelayParams, out_dir: Path, plots: bool = True) -> None:
        self.params = params
        self.out_dir = out_dir
        self.plots = plots
        self.specs = [servers.ServerSpec.parse(s) for s in params.servers]
        self.hints: dict[str, float] = {}
        self.secret = ""

    # --- pieces --------------------------------------------------------------------------------

    def _load_trial(self, gen: Generator, kind: str, server: servers.RunningServer | None) -> Trial:
        p = self.params

        def run(rate: float) -> dict[str, Any]:
            before = server.cpu_seconds() if server else None
            gen_before = cpu_seconds(gen.pids)
            res = gen.load(kind, rate, p.duration, drain=p.drain)
            cpu = server.cpu_seconds() - before if server and before is not None else None
            record = _trial_record(res, p, cpu)
            record["generator_cpu_s"] = round(cpu_seconds(gen.pids) - gen_before, 3)
            log(
                f"  {kind:8s} {rate:9.0f} pkt/s  loss {res['loss'] * 100:7.3f} %"
                f"  {'pass' if record['pass'] else 'FAIL'}"
            )
            return record

        return run

    def _search(
        self, gen: Generator, kind: str, key: str, server: servers.RunningServer | None
    ) -> dict[str, Any]:
        best, trials = search_max_rate(
            self._load_trial(gen, kind, server), self.params, self.hints.get(key)
        )
        if best > 0:
            self.hints[key] = best
        return {"max_rate_pps": round(best, 1), "trials": trials}

    def _cpu(self, gen: Generator, server: servers.RunningServer) -> dict[str, Any]:
        p = self.params
        before = server.cpu_seconds()
        gen_before = cpu_seconds(gen.pids)
        res = gen.load("channel", p.cpu_rate, p.cpu_duration, drain=p.drain)
        cpu = server.cpu_seconds() - before
        gen_cpu = cpu_seconds(gen.pids) - gen_before
        relayed = res["received"]
        # The same load straight from client to peer sockets: on loopback the kernel bills much
        # of the relaying to whichever process sends (and a TC program runs in the sender's
        # softirq), so the path's cost is (server + generator) minus the generator alone.
        direct_before = cpu_seconds(gen.pids)
        direct = gen.load("direct", p.cpu_rate, p.cpu_duration, drain=p.drain)
        direct_cpu = cpu_seconds(gen.pids) - direct_before
        direct_per = direct_cpu / direct["received"] if direct["received"] else None
        path = cpu + gen_cpu - direct_per * relayed if direct_per is not None else None
        return {
            "offered_rate_pps": p.cpu_rate,
            "duration_s": p.cpu_duration,
            "relayed_packets": relayed,
            "loss": res["loss"],
            "server_cpu_s": round(cpu, 3),
            "cpu_s_per_million": round(cpu / relayed * 1e6, 3) if relayed else None,
            "server_cpu_utilisation": round(cpu / p.cpu_duration, 3),
            "generator_cpu_s": round(gen_cpu, 3),
            "generator_cpu_s_per_million": round(gen_cpu / relayed * 1e6, 3) if relayed else None,
            "direct_generator_cpu_s": round(direct_cpu, 3),
            "path_cpu_s_per_million": (
                round(path / relayed * 1e6, 3) if relayed and path is not None else None
            ),
        }

    def _latency(self, gen: Generator, max_rate: float) -> dict[str, Any]:
        p = self.params
        rate = max(100.0, max_rate / 2)
        relay = gen.load("channel", rate, p.latency_duration, p.probe_rate, drain=p.drain)
        direct = gen.load("direct", rate, p.latency_duration, p.probe_rate, drain=p.drain)
        r = _rtt_summary(relay["rtt_us"], relay["probes_sent"], relay["probes_received"])
        d = _rtt_summary(direct["rtt_us"], direct["probes_sent"], direct["probes_received"])
        # the forward half alone (client → relay → peer), timed at the peer
        r["forward_p50_us"] = percentile(relay["forward_us"], 50)
        r["forward_p99_us"] = percentile(relay["forward_us"], 99)
        d["forward_p50_us"] = percentile(direct["forward_us"], 50)
        d["forward_p99_us"] = percentile(direct["forward_us"], 99)

        def added(q: str) -> float | None:
            a, b = r[q], d[q]
            return round(a - b, 1) if a is not None and b is not None else None

        return {
            "offered_rate_pps": round(rate, 1),
            "load_loss": relay["loss"],
            "relay_rtt": r,
            "direct_rtt": d,
            "added_p50_us": added("p50_us"),
            "added_p99_us": added("p99_us"),
            "relay_rtt_us": [round(x, 1) for x in relay["rtt_us"]],
            "direct_rtt_us": [round(x, 1) for x in direct["rtt_us"]],
        }

    def _alloc(self, gen: Generator, server: servers.RunningServer) -> dict[str, Any]:
        p = self.params
        before = server.cpu_seconds()
        res = gen.alloc_rate(server.address, self.secret, p.alloc_lanes, p.alloc_duration)
        cpu = server.cpu_seconds() - before
        cycles = res.pop("cycle_ms")
        res["allocations_per_s"] = round(res["allocated"] / p.alloc_duration, 1)
        res["cycle_p50_ms"] = percentile(cycles, 50)
        res["cycle_p99_ms"] = percentile(cycles, 99)
        res["server_cpu_s"] = round(cpu, 3)
        return res

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from turnpike.core.keyring import Keyring

        p = self.params
        specs = []
        skipped: dict[str, str] = {}
        for spec in self.specs:
            why = spec.available()
            if why is None:
                specs.append(spec)
            else:
                skipped[spec.name] = why
                log(f"skipping {spec.name}: {why}")
        if not specs:
            raise RuntimeError("no server to benchmark: " + "; ".join(skipped.values()))
        keyring = Keyring.generate("bench")
        self.secret = keyring.signing_key.secret
        info = machine()
        log(machine_line(info))
        started = time.monotonic()
        rounds: list[dict[str, Any]] = []
        commands: dict[str, list[str]] = {}
        tmp = Path(tempfile.mkdtemp(prefix="turnpike-bench-"))
        try:
            keyring_path = tmp / "keyring.json"
            keyring_path.write_text(keyring.to_json())
            keyring_path.chmod(0o600)
            with Generator(p.generator_procs) as gen:
                for rnd in range(p.rounds):
                    shift = rnd % len(specs)
                    order = specs[shift:] + specs[:shift]
                    log(f"round {rnd + 1}/{p.rounds}: {', '.join(s.name for s in order)}")
                    record: dict[str, Any] = {
                        "round": rnd + 1,
                        "order": [s.name for s in order],
                        "load_average": load_average(),
                        "servers": {},
                    }
                    gen.setup(None, "", p.udp_flows, 0, p.payload)
                    gen.load("direct", p.start_rate / 2, min(0.3, p.duration), drain=0.1)
                    log(" generator ceiling (client → peer, no relay)")
                    record["generator_ceiling"] = self._search(gen, "direct", "direct", None)
                    for spec in order:
                        log(f" {spec.name}")
                        try:
                            server = servers.start(
                                spec, self.secret, keyring_path, p.relay_ports, tmp
                            )
                        except servers.ServerError as exc:
                            # recorded, not hidden; the other servers still run
                            log(f"  {spec.name} did not start: {exc}")
                            record["servers"][spec.name] = {"error": str(exc)}
                            continue
                        commands[spec.name] = servers.redact(server.command, self.secret)
                        try:
                            record["servers"][spec.name] = self._one_server(gen, spec, server)
                        except RuntimeError as exc:  # a worker's error; the workers are in step
                            log(f"  {spec.name} failed: {exc}\n{server.log_tail()}")
                            record["servers"][spec.name] = {"error": str(exc)}
                        finally:
                            try:
                                gen.release()
                            finally:
                                server.stop()
                    rounds.append(record)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        info["load_average_at_end"] = load_average()
        for record in rounds[:-1]:  # raw RTT samples of the last round only (for the plot)
            for got in record["servers"].values():
                for key in ("relay_rtt_us", "direct_rtt_us"):
                    got.get("latency", {}).pop(key, None)
        result: dict[str, Any] = {
            "benchmark": "relay",
            "date": utc_now(),
            "smoke": p.smoke,
            "machine": info,
            "machine_line": machine_line(info),
            "wall_time_s": round(time.monotonic() - started, 1),
            "params": asdict(p),
            "servers": {
                s.name: {
                    "kind": s.kind,
                    "workers": s.workers,
                    "version": servers.server_version(s),
                    "command": commands.get(s.name),
                }
                for s in specs
            },
            "skipped": skipped,
            "rounds": rounds,
        }
        result["summary"] = summarise(result)
        path = write_result(self.out_dir, "relay", result)
        log(f"wrote {path}")
        if self.plots:
            from bench.plots import plot_relay

            for png in plot_relay(result, self.out_dir):
                log(f"wrote {png}")
        return result

    def _one_server(
        self, gen: Generator, spec: servers.ServerSpec, server: servers.RunningServer
    ) -> dict[str, Any]:
        p = self.params
        idle_cpu = server.cpu_seconds()
        replies = gen.setup(server.address, self.secret, p.udp_flows, p.tcp_flows, p.payload)
        tcp_errors = sorted({str(r["tcp_error"]) for r in replies if r.get("tcp_error")})
        gen.load("channel", p.start_rate / 2, min(0.3, p.duration), drain=0.1)  # warm-up
        out: dict[str, Any] = {"startup_cpu_s": round(idle_cpu, 3), "max_rate": {}}
        for mode in p.modes:
            if mode == "tcp" and tcp_errors:
                log(f"  tcp: setting up TCP allocations failed: {tcp_errors[0]}")
                out["max_rate"][mode] = {"max_rate_pps": None, "error": tcp_errors, "trials": []}
                continue
            out["max_rate"][mode] = self._search(gen, mode, f"{spec.name}/{mode}", server)
        log(f"  cpu at {p.cpu_rate:.0f} pkt/s")
        out["cpu"] = self._cpu(gen, server)
        channel_max = out["max_rate"].get("channel", {}).get("max_rate_pps", 0.0)
        if channel_max:
            log(f"  latency at {channel_max / 2:.0f} pkt/s")
            out["latency"] = self._latency(gen, channel_max)
        log("  allocation rate")
        out["alloc"] = self._alloc(gen, server)
        log(f"  {out['alloc']['allocations_per_s']:.0f} allocations/s")
        return out


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Medians over rounds (with min/max) per server and the Turnpike/coturn ratios."""
    rounds: list[dict[str, Any]] = result["rounds"]
    modes: list[str] = result["params"]["modes"]
    per: dict[str, Any] = {}
    for name in result["servers"]:
        got = [
            r["servers"][name]
            for r in rounds
            if "error" not in r["servers"].get(name, {"error": 1})
        ]
        entry_errors = [
            r["servers"][name]["error"] for r in rounds if "error" in r["servers"].get(name, {})
        ]
        entry: dict[str, Any] = {"max_rate_pps": {}, "rounds_ok": len(got)}
        if entry_errors:
            entry["errors"] = entry_errors
        for mode in modes:
            entry["max_rate_pps"][mode] = spread(
                g["max_rate"][mode]["max_rate_pps"] for g in got if mode in g["max_rate"]
            )
        entry["cpu_s_per_million"] = spread(g["cpu"]["cpu_s_per_million"] for g in got)
        entry["path_cpu_s_per_million"] = spread(
            g["cpu"].get("path_cpu_s_per_million") for g in got
        )
        entry["cpu_load_loss"] = spread(g["cpu"]["loss"] for g in got)
        entry["generator_cpu_s_per_million"] = spread(
            g["cpu"].get("generator_cpu_s_per_million") for g in got
        )
        lat = [g["latency"] for g in got if "latency" in g]
        entry["latency_added_p50_us"] = spread(x["added_p50_us"] for x in lat)
        entry["latency_added_p99_us"] = spread(x["added_p99_us"] for x in lat)
        entry["latency_relay_p50_us"] = spread(x["relay_rtt"]["p50_us"] for x in lat)
        entry["latency_relay_p99_us"] = spread(x["relay_rtt"]["p99_us"] for x in lat)
        entry["allocations_per_s"] = spread(g["alloc"]["allocations_per_s"] for g in got)
        per[name] = entry
    ceiling = spread(r["generator_ceiling"]["max_rate_pps"] for r in rounds)
    ratios: dict[str, Any] = {}
    base = "coturn" if "coturn" in per else None
    if base is not None:
        for name, entry in per.items():
            if not name.startswith("turnpike"):
                continue
            b = per[base]
            ratios[f"{name}/{base}"] = {
                **{
                    f"max_rate_{m}": ratio(
                        entry["max_rate_pps"][m]["median"], b["max_rate_pps"][m]["median"]
                    )
                    for m in modes
                },
                "cpu_s_per_million": ratio(
                    entry["cpu_s_per_million"]["median"], b["cpu_s_per_million"]["median"]
                ),
                "path_cpu_s_per_million": ratio(
                    entry["path_cpu_s_per_million"]["median"],
                    b["path_cpu_s_per_million"]["median"],
                ),
                "latency_added_p50": ratio(
                    entry["latency_added_p50_us"]["median"], b["latency_added_p50_us"]["median"]
                ),
                "latency_added_p99": ratio(
                    entry["latency_added_p99_us"]["median"], b["latency_added_p99_us"]["median"]
                ),
                "allocations_per_s": ratio(
                    entry["allocations_per_s"]["median"], b["allocations_per_s"]["median"]
                ),
            }
    limited: list[str] = []
    cmax = ceiling["median"]
    for name, entry in per.items():
        for mode in modes:
            m = entry["max_rate_pps"][mode]["median"]
            if cmax and m and m >= 0.9 * cmax:
                limited.append(f"{name}/{mode}")
    return {
        "servers": per,
        "generator_ceiling_pps": ceiling,
        "ratios": ratios,
        "near_generator_ceiling": limited,
        "headline": headline(per, ceiling, ratios, modes),
    }


def _fmt(v: float | None, unit: str = "", digits: int = 0) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}{unit}"


def headline(
    per: dict[str, Any], ceiling: dict[str, Any], ratios: dict[str, Any], modes: list[str]
) -> list[str]:
    lines = [f"generator ceiling (no relay): {_fmt(ceiling['median'])} pkt/s"]
    for name, e in per.items():
        rates = ", ".join(f"{MODE_LABELS[m]} {_fmt(e['max_rate_pps'][m]['median'])}" for m in modes)
        lines.append(
            f"{name}: max pkt/s with <0.1% loss: {rates}; "
            f"CPU {_fmt(e['cpu_s_per_million']['median'], ' s', 2)}/M pkts; "
            f"added RTT p50 {_fmt(e['latency_added_p50_us']['median'], ' µs')} "
            f"p99 {_fmt(e['latency_added_p99_us']['median'], ' µs')}; "
            f"{_fmt(e['allocations_per_s']['median'])} allocations/s"
        )
    for key, r in ratios.items():
        parts = ", ".join(f"{k} {_fmt(v, '', 2)}" for k, v in r.items())
        lines.append(f"{key}: {parts}")
    return lines


def main(params: RelayParams, out_dir: Path | None, plots: bool) -> int:
    bench = RelayBench(params, out_dir or RESULTS_DIR, plots)
    result = bench.run()
    for line in result["summary"]["headline"]:
        print(line)
    return 0
