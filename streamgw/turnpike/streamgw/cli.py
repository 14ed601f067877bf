"""`turnpike streamgw`: run the Media Streams gateway"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl
import sys

from turnpike.core.config import cidr, host_port, ip_address, port_range, positive_int

NAME = "streamgw"
HELP = "run the Media Streams gateway"

log = logging.getLogger("turnpike.streamgw")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=host_port,
        default=host_port("0.0.0.0:8080"),
        help="HOST:PORT of the REST API (/v1/Calls and /2010-04-01/…) (default 0.0.0.0:8080)",
    )
    parser.add_argument(
        "--accounts",
        required=True,
        metavar="FILE",
        help="accounts file (same format as the token API's), reloaded when it changes",
    )
    parser.add_argument(
        "--rtp-ip",
        type=ip_address,
        required=True,
        help="IP address the gateway receives RTP on and announces to media servers",
    )
    parser.add_argument(
        "--rtp-ports",
        type=port_range,
        default=(10000, 20000),
        metavar="MIN-MAX",
        help="UDP ports for RTP, one per call (default 10000-20000)",
    )
    parser.add_argument(
        "--max-calls",
        type=positive_int,
        default=None,
        metavar="N",
        help="concurrent calls in total (default: one per even port of --rtp-ports)",
    )
    parser.add_argument(
        "--max-calls-per-account",
        type=positive_int,
        default=None,
        metavar="N",
        help="concurrent calls per account (default: a tenth of --max-calls' default)",
    )
    parser.add_argument(
        "--allow-destination",
        type=cidr,
        action="append",
        default=[],
        metavar="CIDR",
        help="let WebSockets, webhooks, callbacks and <Play> reach this otherwise refused "
        "(private, loopback, link-local …) range; repeatable",
    )
    parser.add_argument(
        "--ca-file",
        metavar="FILE",
        help="extra CA certificates to trust for customers' servers, on top of the system store",
    )
    parser.add_argument(
        "--metrics",
        type=host_port,
        metavar="HOST:PORT",
        help="serve /metrics, /live and /ready here (default: on the --listen address)",
    )
    parser.add_argument(
        "--drain-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long calls may go on before they are ended (default 30)",
    )
    parser.add_argument(
        "--rtp-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="no RTP from a caller for this long raises warning 31953 (default 5)",
    )
    parser.add_argument(
        "--rtp-fill-after",
        type=float,
        default=0.25,
        metavar="SECONDS",
        help="once the audio received has played out and no RTP came for this long more, the "
        "inbound track carries silence frames (default 0.25)",
    )
    parser.add_argument(
        "--rtp-idle-hangup",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="hang up a call that sent no RTP for this long; 0 never (default 60)",
    )
    parser.add_argument(
        "--sip",
        type=host_port,
        metavar="HOST:PORT",
        help="answer SIP calls here, UDP and TCP on the same port (off unless given)",
    )
    parser.add_argument(
        "--numbers",
        metavar="FILE",
        help="with --sip: which account and TwiML answer each called number; reloaded on change",
    )
    parser.add_argument(
        "--sip-trust",
        type=cidr,
        action="append",
        default=[],
        metavar="CIDR",
        help="with --sip: take calls from this signalling range (carriers, PBXs); repeatable. "
        "Everything else is answered 403",
    )
    parser.add_argument(
        "--sip-realm",
        metavar="REALM",
        help="with --sip: sources outside --sip-trust may authenticate INVITEs with SIP digest "
        "(the accounts file's sipCredentials) in this realm; each may call its account's numbers",
    )
    parser.add_argument(
        "--sip-tls",
        type=host_port,
        metavar="HOST:PORT",
        help="with --sip: also answer SIP over TLS here (needs --tls-cert and --tls-key)",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain (reloaded)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key (reloaded)")
    parser.add_argument(
        "--sip-announce-ip",
        type=ip_address,
        metavar="IP",
        help="with --sip: the address put in SDP (and in Via/Contact when --sip's host is a "
        "wildcard) when callers reach the gateway through a 1:1 NAT (default: --rtp-ip)",
    )
    parser.add_argument(
        "--sip-invite-rate",
        type=float,
        default=10.0,
        metavar="PER_SECOND",
        help="with --sip: new INVITEs a second from one source address, in bursts of five "
        "seconds' worth; beyond it 503 with Retry-After; 0 no limit (default 10)",
    )
    parser.add_argument(
        "--ws-connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="WebSocket connect + TLS + upgrade time limit, then 31901 (default 10)",
    )
    parser.add_argument(
        "--ws-send-queue",
        type=int,
        default=500,
        metavar="MESSAGES",
        help="messages buffered for a slow WebSocket server before audio is dropped (31930)",
    )
    parser.add_argument(
        "--tts",
        type=_tts,
        default="espeak",
        metavar="ENGINE",
        help="<Say> engine: espeak (default, espeak-ng), command:ARGV (WAV on stdout; {voice} "
        "and {language} are replaced, the text is on stdin) or http:URL (POST JSON, WAV back)",
    )
    parser.add_argument(
        "--tts-cache-mb",
        type=float,
        default=32.0,
        metavar="MB",
        help="synthesized <Say> audio kept for reuse, in MB (default 32)",
    )


def _tts(value: str) -> str:
    from turnpike.streamgw.tts import engine_from_flag

    try:
        engine_from_flag(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def run(args: argparse.Namespace) -> int:
    from turnpike.core.accounts import AccountsError, parse_accounts
    from turnpike.core.filewatch import FileWatcher
    from turnpike.core.service import run as run_service
    from turnpike.streamgw.sip.numbers import Numbers, NumbersError, parse_numbers

    if args.sip is not None and not args.numbers:
        print("turnpike streamgw: --sip needs --numbers FILE", file=sys.stderr)
        return 2
    if args.sip_tls is not None and (args.sip is None or not (args.tls_cert and args.tls_key)):
        print("turnpike streamgw: --sip-tls needs --sip, --tls-cert and --tls-key", file=sys.stderr)
        return 2
    if args.sip is not None and not args.sip_trust and not args.sip_realm:
        log.warning("--sip without --sip-trust or --sip-realm: every INVITE will be answered 403")
    try:
        watcher = FileWatcher(args.accounts, parse_accounts, logger=log)
        numbers: FileWatcher[Numbers] | None = None
        if args.numbers:
            numbers = FileWatcher(args.numbers, parse_numbers, logger=log)
    except (OSError, AccountsError, NumbersError) as exc:
        print(f"turnpike streamgw: {exc}", file=sys.stderr)
        return 2

    async def main(stop: asyncio.Event) -> int:
        from aiohttp import web

        from turnpike.core.health import HealthServer
        from turnpike.core.tls import TlsReloader, tls_context
        from turnpike.streamgw.api import create_app
        from turnpike.streamgw.gateway import Gateway, GatewayConfig
        from turnpike.streamgw.metrics import Metrics
        from turnpike.streamgw.sip.bridge import GatewayCalls
        from turnpike.streamgw.sip.digest import Digest
        from turnpike.streamgw.sip.server import SipConfig, SipServer
        from turnpike.streamgw.stream import StreamSettings

        config = GatewayConfig(
            rtp_ip=args.rtp_ip,
            rtp_ports=args.rtp_ports,
            allow_destinations=tuple(args.allow_destination),
            ca_file=args.ca_file,
            stream=StreamSettings(
                connect_timeout=args.ws_connect_timeout, send_queue=args.ws_send_queue
            ),
            rtp_timeout=args.rtp_timeout,
            rtp_fill_after=args.rtp_fill_after,
            rtp_idle_hangup=args.rtp_idle_hangup,
            drain_grace=args.drain_grace,
            max_calls=args.max_calls,
            max_account_calls=args.max_calls_per_account,
            tts=args.tts,
            tts_cache_bytes=int(args.tts_cache_mb * 1024 * 1024),
        )
        metrics = Metrics()
        gateway = Gateway(config, lambda: watcher.current, metrics)
        await gateway.start()
        await gateway.converter.start()  # prompt conversion workers ready before the first call
        runner = web.AppRunner(create_app(gateway, health=args.metrics is None), access_log=None)
        health: HealthServer | None = None
        sip: SipServer | None = None
        tls_reloader: TlsReloader | None = None
        try:
            await runner.setup()
            site = web.TCPSite(runner, args.listen.host, args.listen.port)
            await site.start()
            if args.sip is not None and numbers is not None:
                numbers_now = numbers
                digest = None
                if args.sip_realm:
                    digest = Digest(args.sip_realm, lambda: watcher.current)
                tls_ctx = None
                if args.sip_tls is not None:
                    tls_ctx = tls_context(args.tls_cert, args.tls_key)
                    tls_reloader = TlsReloader(tls_ctx, args.tls_cert, args.tls_key)
                sip = SipServer(
                    SipConfig(
                        args.sip.host,
                        args.sip.port,
                        args.sip_announce_ip or args.rtp_ip,
                        tuple(args.sip_trust),
                        tls_listen=(
                            (args.sip_tls.host, args.sip_tls.port) if args.sip_tls else None
                        ),
                        invite_rate=args.sip_invite_rate,
                        invite_burst=max(1.0, 5 * args.sip_invite_rate),
                    ),
                    GatewayCalls(gateway),
                    lambda: numbers_now.current,
                    metrics,
                    digest,
                    tls_ctx,
                )
                await sip.start()
            if args.metrics is not None:
                health = HealthServer(
                    metrics.registry,
                    ready=lambda: not gateway.draining,
                    status=lambda: {"calls": len(gateway.calls)},
                )
                await health.start(args.metrics.host, args.metrics.port)
        except (OSError, ssl.SSLError) as exc:
            log.error("cannot listen: %s", exc)
            if sip is not None:
                await sip.close()
            await gateway.close()
            await runner.cleanup()
            return 1
        log.info(
            "streamgw listening on %s, RTP on %s ports %d-%d",
            args.listen,
            args.rtp_ip,
            *args.rtp_ports,
        )
        async with watcher, contextlib.AsyncExitStack() as stack:
            if numbers is not None:
                await stack.enter_async_context(numbers)
            if tls_reloader is not None:
                tls_reloader.start()
                stack.push_async_callback(tls_reloader.stop)
            await stop.wait()
            log.info("draining: no new calls; %d in progress", len(gateway.calls))
            await gateway.drain()
            if sip is not None:
                await sip.close()
            await gateway.close()
        await runner.cleanup()
        if health is not None:
            await health.stop()
        log.info("streamgw stopped")
        return 0

    return run_service(main)
