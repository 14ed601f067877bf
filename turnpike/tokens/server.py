"""Run the token API until SIGTERM: load and watch the files, serve, drain, stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from aiohttp import web
from prometheus_client import CollectorRegistry

from turnpike.core.accounts import Accounts, parse_accounts
from turnpike.core.edges import parse_edges
from turnpike.core.filewatch import FileWatcher
from turnpike.core.health import HealthServer
from turnpike.core.keyring import parse_keyring
from turnpike.core.ratelimit import RateLimiter
from turnpike.core.sids import ACCOUNT, is_sid
from turnpike.tokens.app import TokensConfig, create_app, status_report
from turnpike.tokens.throttle import AuthThrottle

log = logging.getLogger("turnpike.tokens")


def _bound_port(runner: web.AppRunner) -> tuple[str, int]:
    for address in runner.addresses:
        host, port = address[:2]
        return str(host), int(port)
    raise RuntimeError("the listener has no socket")


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> int:
    if args.dev_account is not None and not is_sid(args.dev_account, ACCOUNT):
        log.error("--dev-account must be an account SID (AC followed by 32 hex digits)")
        return 2
    if args.rate_burst < 1:
        log.error("--rate-burst must be at least 1")
        return 2
    limiter = RateLimiter.per_minute(args.rate_limit, args.rate_burst)

    def forget_removed(accounts: Accounts) -> None:
        limiter.forget(lambda sid: accounts.get(sid) is not None)

    interval = max(args.reload_interval, 0.05)
    try:
        keyring = FileWatcher(args.keyring, parse_keyring, interval=interval, logger=log)
        accounts = FileWatcher(
            args.accounts, parse_accounts, interval=interval, on_change=forget_removed, logger=log
        )
        edges = FileWatcher(args.edges, parse_edges, interval=interval, logger=log)
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 2

    draining = False
    registry = CollectorRegistry()
    config = TokensConfig(
        keyring=keyring,
        accounts=accounts,
        edges=edges,
        limiter=limiter,
        throttle=AuthThrottle.per_minute(
            args.auth_failures_per_source, args.auth_failures_per_account
        ),
        registry=registry,
        ready=lambda: not draining,
        serve_health=args.metrics is None,
        check_ttl=args.check_ttl,
        dev_account=args.dev_account,
    )
    runner = web.AppRunner(create_app(config), access_log=None)
    health: HealthServer | None = None
    async with contextlib.AsyncExitStack() as stack:
        for watcher in (keyring, accounts, edges):
            await stack.enter_async_context(watcher)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, args.listen.host, args.listen.port).start()
        host, port = _bound_port(runner)
        if args.metrics is not None:
            health = HealthServer(registry, lambda: not draining, lambda: status_report(config))
            stack.push_async_callback(health.stop)
            mhost, mport = await health.start(args.metrics.host, args.metrics.port)
            log.info("metrics, /live and /ready on %s:%s", mhost, mport)
        log.info(
            "token API on %s:%s (keyring signing key %s, %d edges)",
            host,
            port,
            keyring.current.signing_key.id,
            len(edges.current.edges),
        )
        await stop.wait()
        draining = True
        log.info("draining for %.1fs", args.drain_seconds)
        if args.drain_seconds:
            await asyncio.sleep(args.drain_seconds)
    log.info("stopped")
    return 0
