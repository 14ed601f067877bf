"""PNG plots of the benchmark results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

COLORS = {
    "coturn": "#4c72b0",
    "turnpike-w1": "#dd8452",
    "turnpike-w2": "#c44e52",
    "turnpike-fast": "#55a868",
}
MODE_TITLES = {
    "channel": "ChannelData/UDP",
    "send": "Send/Data ind./UDP",
    "tcp": "ChannelData/TCP",
}


def _color(name: str, n: int) -> str:
    fallback = ["#55a868", "#8172b3", "#937860", "#da8bc3"]
    return COLORS.get(name, fallback[n % len(fallback)])


def _subtitle(result: dict[str, Any]) -> str:
    return str(result.get("machine_line", ""))


def plot_relay(result: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = result["summary"]
    per: dict[str, Any] = summary["servers"]
    names = list(per)
    modes: list[str] = result["params"]["modes"]
    paths: list[Path] = []

    # 1. highest rate with < 0.1 % loss, per mode, with the generator ceiling
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for j, mode in enumerate(modes):
            s = per[name]["max_rate_pps"][mode]
            if s["median"] is None:
                continue
            xs.append(j + (i - (len(names) - 1) / 2) * width)
            ys.append(s["median"] / 1000)
            lo.append((s["median"] - s["min"]) / 1000)
            hi.append((s["max"] - s["median"]) / 1000)
        ax.bar(xs, ys, width, label=name, color=_color(name, i), yerr=[lo, hi], capsize=3)
    ceiling = summary["generator_ceiling_pps"]["median"]
    if ceiling:
        ax.axhline(ceiling / 1000, color="gray", ls="--", lw=1)
        ax.text(
            len(modes) - 0.5,
            ceiling / 1000,
            " generator ceiling",
            va="bottom",
            ha="right",
            color="gray",
            fontsize=8,
        )
    ax.set_xticks(range(len(modes)), [MODE_TITLES.get(m, m) for m in modes])
    ax.set_ylabel("k packets/s relayed with < 0.1 % loss")
    ax.set_title("Highest relayed packet rate (median of rounds, bars = min to max)", fontsize=10)
    fig.text(0.5, 0.01, _subtitle(result), ha="center", fontsize=7, color="dimgray")
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    paths.append(_save(fig, out_dir / "relay-rates.png"))

    # 2. loss against offered rate (every trial of every round), ChannelData/UDP
    fig, axes = plt.subplots(1, len(modes), figsize=(4 * len(modes), 4), squeeze=False)
    for j, mode in enumerate(modes):
        ax = axes[0][j]
        for i, name in enumerate(names):
            pts = [
                (t["rate"] / 1000, max(t["loss"], 1e-5))
                for r in result["rounds"]
                if name in r["servers"]
                for t in r["servers"][name].get("max_rate", {}).get(mode, {}).get("trials", [])
            ]
            if pts:
                pts.sort()
                ax.scatter(
                    [p[0] for p in pts],
                    [p[1] * 100 for p in pts],
                    s=14,
                    label=name,
                    color=_color(name, i),
                )
        ax.axhline(0.1, color="gray", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("offered k packets/s")
        ax.set_title(MODE_TITLES.get(mode, mode), fontsize=10)
        if j == 0:
            ax.set_ylabel("loss % (floor 0.001 %)")
            ax.legend(fontsize=8)
    fig.text(0.5, 0.01, _subtitle(result), ha="center", fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    paths.append(_save(fig, out_dir / "relay-loss.png"))

    # 3. round-trip time distribution at half the highest rate (last round)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    last = result["rounds"][-1]["servers"] if result["rounds"] else {}
    for i, name in enumerate(names):
        lat = last.get(name, {}).get("latency")
        if not lat or not lat["relay_rtt_us"]:
            continue
        for key, style, label in (
            ("relay_rtt_us", "-", f"{name} ({lat['offered_rate_pps'] / 1000:.0f}k pkt/s)"),
            ("direct_rtt_us", ":", f"no relay, same load as {name}"),
        ):
            data = sorted(lat[key])
            if not data:
                continue
            ys = [(k + 1) / len(data) for k in range(len(data))]
            ax.plot(data, ys, ls=style, color=_color(name, i), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("round-trip time, µs (log)")
    ax.set_ylabel("fraction of probes")
    ax.set_title("Probe RTT through the relay at half its highest rate", fontsize=10)
    ax.legend(fontsize=7)
    fig.text(0.5, 0.01, _subtitle(result), ha="center", fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    paths.append(_save(fig, out_dir / "relay-latency.png"))

    # 4. CPU per million packets and allocation rate
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    for ax, key, label in (
        (ax1, "cpu_s_per_million", "server CPU s per million relayed packets"),
        (ax2, "allocations_per_s", "allocations per second"),
    ):
        vals = [per[n][key] for n in names]
        ys = [v["median"] or 0 for v in vals]
        err = [
            [(v["median"] or 0) - (v["min"] or 0) for v in vals],
            [(v["max"] or 0) - (v["median"] or 0) for v in vals],
        ]
        ax.bar(names, ys, color=[_color(n, i) for i, n in enumerate(names)], yerr=err, capsize=3)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    cpu_rate = result["params"]["cpu_rate"]
    ax1.set_xlabel(f"at {cpu_rate / 1000:.0f}k pkt/s ChannelData/UDP (lower is better)", fontsize=8)
    ax2.set_xlabel("challenge + Allocate + Refresh(0) cycles", fontsize=8)
    fig.text(0.5, 0.01, _subtitle(result), ha="center", fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    paths.append(_save(fig, out_dir / "relay-cost.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tokens(result: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    by = result["summary"]["by_concurrency"]
    concs = sorted(int(c) for c in by)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    tps = [by[str(c)]["tokens_per_s"]["median"] or 0 for c in concs]
    per_cpu = [by[str(c)]["tokens_per_cpu_s"]["median"] or 0 for c in concs]
    ax1.plot(concs, tps, "o-", label="tokens/s")
    ax1.plot(concs, per_cpu, "s--", label="tokens per server CPU s")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("requests in flight")
    ax1.set_title("Token API throughput", fontsize=10)
    ax1.legend(fontsize=8)
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s--")):
        ax2.plot(concs, [by[str(c)][key]["median"] or 0 for c in concs], style, label=key[:3])
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("requests in flight")
    ax2.set_ylabel("ms")
    ax2.set_title("Token API latency", fontsize=10)
    ax2.legend(fontsize=8)
    fig.text(0.5, 0.01, _subtitle(result), ha="center", fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, out_dir / "tokens.png")


def plot_streamgw(result: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = result["params"]["p99_limit_ms"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    for kind, color in (("fork", "#4c72b0"), ("echo", "#c44e52")):
        mine = [s for s in result["steps"] if s["kind"] == kind and "latency_p99_ms" in s]
        if not mine:
            continue
        xs = [s["streams"] for s in mine]
        ax1.plot(
            xs, [s["latency_p99_ms"] or 0 for s in mine], "o-", color=color, label=f"{kind} p99"
        )
        ax1.plot(
            xs, [s["latency_p50_ms"] or 0 for s in mine], ":", color=color, label=f"{kind} p50"
        )
        ax2.plot(xs, [s["cpu_per_stream_pct"] or 0 for s in mine], "o-", color=color, label=kind)
        for s in mine:
            if s["dropped_frames"]:
                ax1.annotate(
                    f"{s['dropped_frames']} dropped",
                    (s["streams"], s["latency_p99_ms"]),
                    fontsize=7,
                )
    ax1.axhline(limit, color="gray", ls="--", lw=1)
    ax1.set_xlabel("concurrent streams (50 frames/s each)")
    ax1.set_ylabel("RTP in → WebSocket out, ms")
    ax1.set_title("Gateway latency", fontsize=10)
    ax1.legend(fontsize=7)
    ax2.set_xlabel("concurrent streams")
    ax2.set_ylabel("% of one core per stream")
    ax2.set_title("Gateway CPU per stream", fontsize=10)
    ax2.legend(fontsize=7)
    fig.text(0.5, 0.01, _subtitle(result), ha="center", fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, out_dir / f"{result.get('benchmark', 'streamgw')}.png")


def plot_operator(result: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    by = result["summary"]["by_count"]
    counts = sorted(int(c) for c in by)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, style, label in (
        ("in_place_s", "o-", "children + IP-ranges ConfigMap in place"),
        ("all_ready_s", "s--", "all edges Ready"),
    ):
        pts = [(c, by[str(c)][key]) for c in counts if by[str(c)][key] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("RelayEdges applied at once")
    ax.set_ylabel("seconds after the create calls started")
    ax.set_title("Operator reconcile time (Kubernetes API emulator)", fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.5, 0.01, _subtitle(result), ha="center", fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, out_dir / "operator.png")
