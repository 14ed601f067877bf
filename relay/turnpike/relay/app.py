"""One relay process: listeners, the keyring and TLS watchers, health/metrics, drain on stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from turnpike.core.config import HostPort
from turnpike.core.filewatch import FileWatcher
from turnpike.core.health import HealthServer
from turnpike.core.keyring import Keyring, parse_keyring
from turnpike.core.tls import TlsReloader, tls_context
from turnpike.relay.metrics import registry_for
from turnpike.relay.offload import Offload, OffloadError
from turnpike.relay.server import RelayConfig, RelayServer
from turnpike.relay.transports import Listeners

log = logging.getLogger("turnpike.relay")

WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True)
class Options:
    """Everything ``turnpike relay`` was asked to do, validated."""

    config: RelayConfig
    keyring: str
    listen: tuple[HostPort, ...]
    tls_listen: tuple[HostPort, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics: HostPort | None = None
    drain_grace: float = 3600.0
    workers: int = 1
    reuse_port: bool = False
    offload: str = "auto"
    offload_maps: tuple[int, ...] = ()  # a --workers process: the supervisor's maps
    offload_owner: int = 0
    argv: tuple[str, ...] = field(default=(), compare=False)

    @property
    def offload_interfaces(self) -> list[int] | None:
        """Where the kernel fast path attaches: loopback alone when every address the relay
        binds is a loopback one (a development or test relay, whose clients and peers can only
        arrive there), else every interface of the network namespace (None)."""
        bound = [hp.host for hp in (*self.listen, *self.tls_listen)] + list(self.config.relay_ips)
        try:
            if all(ipaddress.ip_address(host).is_loopback for host in bound):
                return [socket.if_nametoindex("lo")]
        except (ValueError, OSError):
            pass
        return None

    @classmethod
    def from_args(cls, args: argparse.Namespace, argv: Sequence[str] = ()) -> Options:
        listen = tuple(args.listen or [HostPort("0.0.0.0", 3478)])
        tls_listen = tuple(args.tls_listen or [])
        if tls_listen and not (args.tls_cert and args.tls_key):
            raise ValueError("--tls-listen needs --tls-cert and --tls-key")
        relay_ips = list(args.relay_ip or [])
        if not relay_ips:
            # Relay on the address clients reach us on, one per family.
            for hp in (*listen, *tls_listen):
                if hp.host not in WILDCARDS and all(
                    (":" in ip) != (":" in hp.host) for ip in relay_ips
                ):
                    relay_ips.append(hp.host)
        if not relay_ips and args.external_ip:
            # 1:1 NAT: bind the wildcard, advertise the external address.
            relay_ips = ["::" if ":" in ip else "0.0.0.0" for ip in args.external_ip]
        if not relay_ips:
            detected = primary_address()
            if detected is None:
                raise ValueError(
                    "listening only on wildcard addresses and no default route: give "
                    "--relay-ip (where relay sockets bind) or --external-ip (what clients see)"
                )
            log.info(
                "relay address %s (the default route's source; --relay-ip overrides)", detected
            )
            relay_ips = [detected]
        families = [":" in ip for ip in relay_ips]
        if len(set(families)) != len(families):
            raise ValueError("give at most one --relay-ip per address family")
        if args.workers < 1:
            raise ValueError("--workers must be at least 1")
        if args.workers > 1 and any(hp.port == 0 for hp in (*listen, *tls_listen)):
            raise ValueError("--workers needs fixed ports, not port 0")
        for name in ("user_quota", "total_quota", "max_bps", "reserve_percent"):
            if getattr(args, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative")
        for name in ("account_quota", "ip_quota", "connections_per_ip"):
            if (getattr(args, name) or 0) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative")
        if args.reserve_percent >= 100:
            raise ValueError("--reserve-percent must be below 100")
        config = RelayConfig(
            realm=args.realm,
            relay_ips=tuple(relay_ips),
            external_ips=tuple(args.external_ip or ()),
            relay_ports=args.relay_ports,
            allow_peer=tuple(args.allow_peer),
            deny_peer=tuple(args.deny_peer),
            user_quota=args.user_quota,
            account_quota=args.account_quota,
            ip_quota=args.ip_quota,
            total_quota=args.total_quota,
            connections_per_ip=args.connections_per_ip,
            reserve_percent=args.reserve_percent,
            worker_of=max(1, args.worker_of),
            max_bps=args.max_bps,
            max_lifetime=args.max_lifetime,
            default_lifetime=min(600, args.max_lifetime),
            nonce_lifetime=args.nonce_lifetime,
            unauthorized_rate=args.unauthorized_rate,
        )
        return cls(
            config=config,
            keyring=args.keyring,
            listen=listen,
            tls_listen=tls_listen,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            metrics=args.metrics,
            drain_grace=args.drain_grace,
            workers=args.workers,
            reuse_port=args.reuse_port,
            offload=args.offload,
            offload_maps=tuple(int(fd) for fd in args.offload_maps.split(",") if fd),
            offload_owner=args.offload_owner,
            argv=tuple(argv),
        )


def primary_address() -> str | None:
    """The IPv4 address this host sends from by default (a pod's IP in Kubernetes).

    Connecting a UDP socket only asks the kernel for a route; no packet is sent.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: any routable address would do
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith(("0.", "127.")) else address


def _keyring_changed(ring: Keyring) -> None:
    log.info("keyring now has keys %s (signing %s)", list(ring.ids), ring.signing_key.id)


async def serve(options: Options, stop: asyncio.Event) -> int:
    keyring = FileWatcher(options.keyring, parse_keyring, on_change=_keyring_changed, logger=log)
    try:  # loaded before any allocation exists
        if len(options.offload_maps) == 3:  # the --workers supervisor owns the program
            offload = Offload.adopt(
                (options.offload_maps[0], options.offload_maps[1], options.offload_maps[2]),
                options.offload_owner,
            )
        else:
            offload = Offload.start(
                options.offload,
                shared_ports=options.reuse_port,
                interfaces=options.offload_interfaces,
            )
    except OffloadError as exc:
        log.error("%s", exc)
        return 2
    server = RelayServer(options.config, lambda: keyring.current, offload)
    listeners = Listeners(server)
    tls: TlsReloader | None = None
    health: HealthServer | None = None
    try:
        for hp in options.listen:
            bound = await listeners.listen(hp.host, hp.port, reuse_port=options.reuse_port)
            log.info("listening on %s:%d (udp, tcp)", *bound)
        if options.tls_listen:
            assert options.tls_cert is not None and options.tls_key is not None
            ctx = tls_context(options.tls_cert, options.tls_key)
            tls = TlsReloader(ctx, options.tls_cert, options.tls_key)
            tls.start()
            for hp in options.tls_listen:
                bound = await listeners.listen(
                    hp.host, hp.port, reuse_port=options.reuse_port, tls=ctx
                )
                log.info("listening on %s:%d (tls)", *bound)
        server.start()
        keyring.start()

        def status() -> dict[str, Any]:
            return {
                **keyring.current.status(),
                "allocations": len(server.table),
                "draining": server.draining,
                "offload": offload.mode,
            }

        if options.metrics is not None:
            health = HealthServer(
                registry_for(server.stats, server.table, keyring, offload),
                lambda: not server.draining,
                status,
            )
            address = await health.start(options.metrics.host, options.metrics.port)
            log.info("metrics on http://%s:%d/metrics", *address)
        log.info(
            "relay ready: realm %r, relay addresses %s, keyring keys %s",
            options.config.realm,
            ", ".join(options.config.relay_ips),
            list(keyring.current.ids),
        )
        await stop.wait()
        server.begin_drain()
        log.info(
            "draining: %d allocations left, grace %.0fs", len(server.table), options.drain_grace
        )
        if await server.drained(options.drain_grace):
            log.info("drained, exiting")
        else:
            log.warning("drain grace ended with %d allocations left", len(server.table))
        return 0
    finally:
        await keyring.stop()
        if tls is not None:
            await tls.stop()
        await listeners.close()
        await server.close()
        offload.close()  # after every allocation's entries were removed
        if health is not None:
            with contextlib.suppress(Exception):
                await health.stop()
