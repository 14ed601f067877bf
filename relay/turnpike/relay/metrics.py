"""Prometheus metrics of the relay.

The hot paths only bump plain integers (on the allocation or in ``RelayStats``); this collector
turns them into metric families when Prometheus scrapes, so relaying a packet never touches
prometheus_client. Label values come from small fixed sets (methods, result codes, reasons,
directions): never usernames or addresses, whose cardinality is unbounded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from turnpike.core.keyring import Keyring
from turnpike.relay.fairshare import ALLOCATION_REFUSALS, CONNECTION_LIMIT, CONNECTION_RESERVE
from turnpike.relay.stun import Method

if TYPE_CHECKING:
    from turnpike.relay.allocation import AllocationTable
    from turnpike.relay.offload import Offload

METHOD_NAMES = {int(m): m.name.lower() for m in Method}

# How `--workers` merges each family across the worker processes (``workers.merge_metrics``):
# "sum" for what each worker counts or holds on its own, "max" for what every worker counts the
# same way (each reloads the same keyring file), "min" for a state that holds only when it holds
# in every worker, "one" for a value every worker shares.
MERGE: dict[str, str] = {
    "turnpike_relay_keyring_keys": "one",
    "turnpike_relay_keyring_reloads": "max",
    "turnpike_relay_keyring_errors": "max",
    "turnpike_relay_allocations": "sum",
    "turnpike_relay_allocations_created": "sum",
    "turnpike_relay_allocations_removed": "sum",
    "turnpike_relay_packets": "sum",
    "turnpike_relay_bytes": "sum",
    "turnpike_relay_dropped_packets": "sum",
    "turnpike_relay_requests": "sum",
    "turnpike_relay_auth_failures": "sum",
    "turnpike_relay_peer_denied": "sum",
    "turnpike_relay_unauthorized_dropped": "sum",
    "turnpike_relay_malformed": "sum",
    "turnpike_relay_allocations_refused": "sum",
    "turnpike_relay_connections_refused": "sum",
    "turnpike_relay_fd_exhausted": "sum",
    "turnpike_relay_offload_active": "min",  # 1 only when every worker's fast path is on
    "turnpike_relay_offload_channels": "sum",
    "turnpike_relay_offload_interfaces": "sum",  # reported by the supervisor alone
    "turnpike_relay_offload_packets": "sum",
    "turnpike_relay_offload_punted": "sum",
}


class RelayStats:
    """Event counters the server bumps; all keys are from fixed small sets."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, "200" | error code)
        self.auth_failures: Counter[str] = Counter()
        self.peer_denied: Counter[str] = Counter()  # by method
        self.allocations_created = 0
        self.allocations_removed: Counter[str] = Counter()  # by reason
        self.unauthorized_dropped = 0  # 401s not sent because of the per-source limit
        self.malformed: Counter[str] = Counter()  # by transport
        self.refusals: Counter[str] = Counter()  # Allocates refused, by fair-share rule
        self.connections_refused: Counter[str] = Counter()  # TCP/TLS closed at once, by rule
        self.fd_exhausted: Counter[str] = Counter()  # EMFILE/ENFILE met, by where

    def request(self, method: int, code: int) -> None:
        self.requests[(METHOD_NAMES.get(method, "other"), str(code))] += 1


class KeyringState(Protocol):
    """What the collector reads from the keyring watcher (``FileWatcher[Keyring]``)."""

    reloads: int
    errors: int

    @property
    def current(self) -> Keyring: ...


class RelayCollector(Collector):
    def __init__(
        self,
        stats: RelayStats,
        table: AllocationTable,
        keyring: KeyringState | None = None,
        offload: Offload | None = None,
    ) -> None:
        self.stats = stats
        self.table = table
        self.keyring = keyring
        self.offload = offload

    def collect(self) -> Iterator[Metric]:
        s, table = self.stats, self.table
        if self.keyring is not None:
            yield GaugeMetricFamily(
                "turnpike_relay_keyring_keys",
                "Keys in the loaded keyring",
                value=len(self.keyring.current.keys),
            )
            yield CounterMetricFamily(
                "turnpike_relay_keyring_reloads",
                "Times the keyring file was reloaded",
                value=self.keyring.reloads,
            )
            yield CounterMetricFamily(
                "turnpike_relay_keyring_errors",
                "Broken keyring files ignored (the last good one stayed in force)",
                value=self.keyring.errors,
            )
        yield GaugeMetricFamily(
            "turnpike_relay_allocations", "Allocations currently active", value=len(table)
        )
        created = CounterMetricFamily(
            "turnpike_relay_allocations_created", "Allocations created", value=s.allocations_created
        )
        yield created
        removed = CounterMetricFamily(
            "turnpike_relay_allocations_removed", "Allocations ended, by reason", labels=["reason"]
        )
        for reason, n in s.allocations_removed.items():
            removed.add_metric([reason], n)
        yield removed

        traffic = table.retired.__class__()
        traffic.add(table.retired)
        for alloc in table.by_tuple.values():
            traffic.add(alloc.traffic)
        if self.offload is not None:
            yield from self._offload(self.offload)
            kernel = self.offload.traffic()
            traffic.add(kernel)  # what the kernel relayed counts in the totals too
            offloaded = CounterMetricFamily(
                "turnpike_relay_offload_packets",
                "Packets relayed by the kernel fast path (included in turnpike_relay_packets)",
                labels=["direction"],
            )
            offloaded.add_metric(["to_peer"], kernel.to_peer_packets)
            offloaded.add_metric(["to_client"], kernel.to_client_packets)
            yield offloaded
        packets = CounterMetricFamily(
            "turnpike_relay_packets", "Packets relayed, by direction", labels=["direction"]
        )
        packets.add_metric(["to_peer"], traffic.to_peer_packets)
        packets.add_metric(["to_client"], traffic.to_client_packets)
        yield packets
        octets = CounterMetricFamily(
            "turnpike_relay_bytes", "Payload bytes relayed, by direction", labels=["direction"]
        )
        octets.add_metric(["to_peer"], traffic.to_peer_bytes)
        octets.add_metric(["to_client"], traffic.to_client_bytes)
        yield octets
        yield CounterMetricFamily(
            "turnpike_relay_dropped_packets",
            "Data packets dropped: no channel, no permission or truncated",
            value=traffic.dropped,
        )

        requests = CounterMetricFamily(
            "turnpike_relay_requests",
            "STUN/TURN requests by method and result code",
            labels=["method", "code"],
        )
        for (method, code), n in s.requests.items():
            requests.add_metric([method, code], n)
        yield requests
        auth = CounterMetricFamily(
            "turnpike_relay_auth_failures", "Authentication failures by reason", labels=["reason"]
        )
        for reason, n in s.auth_failures.items():
            auth.add_metric([reason], n)
        yield auth
        denied = CounterMetricFamily(
            "turnpike_relay_peer_denied",
            "Peer addresses refused by the peer filter, by method",
            labels=["method"],
        )
        for method, n in s.peer_denied.items():
            denied.add_metric([method], n)
        yield denied
        yield CounterMetricFamily(
            "turnpike_relay_unauthorized_dropped",
            "401 replies not sent because the source exceeded its UDP rate limit",
            value=s.unauthorized_dropped,
        )
        malformed = CounterMetricFamily(
            "turnpike_relay_malformed",
            "Malformed input dropped, by transport",
            labels=["transport"],
        )
        for transport, n in s.malformed.items():
            malformed.add_metric([transport], n)
        yield malformed
        yield _by_label(
            "turnpike_relay_allocations_refused",
            "Allocates refused by the fair share (quota, reserve, no port, no descriptor), by rule",
            "reason",
            s.refusals,
            [r.label for r in ALLOCATION_REFUSALS],
        )
        yield _by_label(
            "turnpike_relay_connections_refused",
            "TCP/TLS connections closed on arrival: per-address limit or descriptor reserve",
            "reason",
            s.connections_refused,
            [CONNECTION_LIMIT, CONNECTION_RESERVE],
        )
        yield _by_label(
            "turnpike_relay_fd_exhausted",
            "Times the process ran out of file descriptors (EMFILE/ENFILE), by where",
            "where",
            s.fd_exhausted,
            ["allocate", "accept"],
        )

    @staticmethod
    def _offload(offload: Offload) -> Iterator[Metric]:
        if offload.adopted:  # a --workers process: the supervisor reports the attachment
            yield _offload_active(offload)
        else:
            yield from offload_attachment(offload)
        yield GaugeMetricFamily(
            "turnpike_relay_offload_channels",
            "Channels the kernel fast path currently relays",
            value=offload.channels,
        )


def _offload_active(offload: Offload) -> Metric:
    return GaugeMetricFamily(
        "turnpike_relay_offload_active",
        "1 when the kernel fast path relays ChannelData, 0 when only userspace relays",
        value=int(offload.active),
    )


def offload_attachment(offload: Offload) -> Iterator[Metric]:
    """What the owner of the program reports: on or off, where, and what it handed up."""
    yield _offload_active(offload)
    yield GaugeMetricFamily(
        "turnpike_relay_offload_interfaces",
        "Interfaces the kernel fast path is attached to",
        value=offload.interfaces,
    )
    punted = CounterMetricFamily(
        "turnpike_relay_offload_punted",
        "Packets of offloaded channels handed to userspace, by reason",
        labels=["reason"],
    )
    for reason, n in offload.punted().items():
        punted.add_metric([reason], n)
    yield punted


class OffloadCollector(Collector):
    """The --workers supervisor's own samples: it owns the program and its attachment."""

    def __init__(self, offload: Offload) -> None:
        self.offload = offload

    def collect(self) -> Iterator[Metric]:
        yield from offload_attachment(self.offload)


def registry_for(
    stats: RelayStats,
    table: AllocationTable,
    keyring: KeyringState | None = None,
    offload: Offload | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RelayCollector(stats, table, keyring, offload))
    return registry


def _by_label(
    name: str, documentation: str, label: str, counts: Counter[str], known: list[str]
) -> CounterMetricFamily:
    """A counter by one label, with every known value present from the start (as 0)."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value in dict.fromkeys([*known, *counts]):
        family.add_metric([value], counts.get(value, 0))
    return family
