"""``python -m bench <target> [--smoke] …``: run a benchmark, write JSON and PNG results."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

TARGETS = ("relay", "tokens", "streamgw", "operator")


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Turnpike benchmarks: JSON results and PNG plots under bench/results/.",
    )
    sub = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    relay = sub.add_parser("relay", help="Turnpike relay vs coturn, same load generator")
    relay.add_argument("--smoke", action="store_true", help="a few seconds; checks the harness")
    relay.add_argument("--out", type=Path, help="output directory (default bench/results)")
    relay.add_argument("--no-plots", action="store_true", help="write JSON only")
    relay.add_argument(
        "--servers",
        type=_csv,
        help="comma-separated: coturn, coturn-mN, turnpike-wN, turnpike-fast",
    )
    relay.add_argument("--rounds", type=int)
    relay.add_argument("--modes", type=_csv, help="channel,send,tcp")
    relay.add_argument("--duration", type=float, help="seconds of load per rate trial")
    relay.add_argument("--generator-procs", type=int)
    relay.add_argument("--cpu-rate", type=float, help="fixed offered load for the CPU figure")
    relay.add_argument("--payload", type=int, help="payload bytes per packet")
    tokens = sub.add_parser("tokens", help="token API: tokens/s per core, p50/p99 latency")
    tokens.add_argument("--smoke", action="store_true", help="a few seconds; checks the harness")
    tokens.add_argument("--out", type=Path, help="output directory (default bench/results)")
    tokens.add_argument("--no-plots", action="store_true", help="write JSON only")
    tokens.add_argument("--concurrency", type=lambda t: [int(x) for x in _csv(t)])
    tokens.add_argument("--duration", type=float, help="seconds per step")
    tokens.add_argument("--rounds", type=int)
    gw = sub.add_parser("streamgw", help="stream gateway: clean real-time streams per process")
    gw.add_argument("--smoke", action="store_true", help="a few seconds; checks the harness")
    gw.add_argument("--out", type=Path, help="output directory (default bench/results)")
    gw.add_argument("--no-plots", action="store_true", help="write JSON only")
    gw.add_argument("--fork-streams", type=lambda t: [int(x) for x in _csv(t)])
    gw.add_argument("--echo-streams", type=lambda t: [int(x) for x in _csv(t)])
    gw.add_argument("--duration", type=float, help="seconds of RTP per step")
    gw.add_argument(
        "--sip",
        action="store_true",
        help="place the calls over SIP (INVITE/ACK/BYE) instead of POST /v1/Calls; "
        "writes streamgw-sip.json",
    )
    op = sub.add_parser("operator", help="operator: time to reconcile N RelayEdges")
    op.add_argument("--smoke", action="store_true", help="a few seconds; checks the harness")
    op.add_argument("--out", type=Path, help="output directory (default bench/results)")
    op.add_argument("--no-plots", action="store_true", help="write JSON only")
    op.add_argument("--counts", type=lambda t: [int(x) for x in _csv(t)])
    op.add_argument("--rounds", type=int)
    every = sub.add_parser("all", help="relay, tokens, streamgw, operator, then report --write")
    every.add_argument("--smoke", action="store_true", help="a few seconds each")
    every.add_argument("--out", type=Path, help="output directory (default bench/results)")
    every.add_argument("--no-plots", action="store_true", help="write JSON only")
    report = sub.add_parser("report", help="print (or --write into bench/README.md) the figures")
    report.add_argument("--write", action="store_true", help="update bench/README.md in place")
    return parser


def _override(params: object, args: argparse.Namespace, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            setattr(params, name, value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.target == "all":
        return _all(args)
    if args.target == "relay":
        from bench.relay import RelayParams
        from bench.relay import main as relay_main

        params = RelayParams.smoke_preset() if args.smoke else RelayParams()
        names = ("servers", "rounds", "modes", "duration", "generator_procs", "cpu_rate", "payload")
        _override(params, args, names)
        return relay_main(params, args.out, plots=not args.no_plots)
    if args.target == "tokens":
        from bench.tokens import TokensParams
        from bench.tokens import main as tokens_main

        tparams = TokensParams.smoke_preset() if args.smoke else TokensParams()
        _override(tparams, args, ("concurrency", "duration", "rounds"))
        return tokens_main(tparams, args.out, plots=not args.no_plots)
    if args.target == "streamgw":
        from bench.streamgw import StreamgwParams
        from bench.streamgw import main as streamgw_main

        gparams = StreamgwParams.smoke_preset() if args.smoke else StreamgwParams()
        _override(gparams, args, ("fork_streams", "echo_streams", "duration"))
        gparams.sip = args.sip
        return streamgw_main(gparams, args.out, plots=not args.no_plots)
    if args.target == "report":
        from bench.report import main as report_main

        return report_main(args.write)
    if args.target == "operator":
        from bench.operatorbench import OperatorParams
        from bench.operatorbench import main as operator_main

        oparams = OperatorParams.smoke_preset() if args.smoke else OperatorParams()
        _override(oparams, args, ("counts", "rounds"))
        return operator_main(oparams, args.out, plots=not args.no_plots)
    return 2


def _all(args: argparse.Namespace) -> int:
    """Every benchmark in turn; one failing does not stop the others."""
    import traceback

    failed: list[str] = []
    extra = (["--smoke"] if args.smoke else []) + (["--no-plots"] if args.no_plots else [])
    if args.out is not None:
        extra += ["--out", str(args.out)]
    for target in TARGETS:
        try:
            code = main([target, *extra])
        except Exception:
            traceback.print_exc()
            code = 1
        if code:
            failed.append(target)
    if args.out is None and not args.smoke:
        main(["report", "--write"])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
