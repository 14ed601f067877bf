"""The operator's Prometheus metrics, on their own registry (nothing global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "turnpike_operator_reconciles",
            "Reconciles by resource kind and result (success, retry, invalid, error)",
            ["kind", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "turnpike_operator_reconcile_duration_seconds",
            "Time one reconcile took",
            ["kind"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.repairs = Counter(
            "turnpike_operator_child_writes",
            "Child objects created or repaired, by kind and action",
            ["kind", "action"],
            registry=self.registry,
        )
        self.published = Counter(
            "turnpike_operator_published_writes",
            "Writes of published ConfigMaps (turnpike-ip-ranges, turnpike-edges)",
            ["configmap"],
            registry=self.registry,
        )
        self.edges = Gauge(
            "turnpike_operator_published_edges",
            "Edges published in turnpike-ip-ranges, by namespace",
            ["namespace"],
            registry=self.registry,
        )
