"""Running the operator: credentials, kopf settings, peering, health and metrics endpoints."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import kopf

from turnpike.core.config import HostPort
from turnpike.core.health import HealthServer
from turnpike.operator import events, handlers, labels, namespaces, rotation
from turnpike.operator import kube as k8s
from turnpike.operator.config import OperatorConfig
from turnpike.operator.kopf_internals import Insights
from turnpike.operator.loops import Leadership
from turnpike.operator.metrics import Metrics
from turnpike.operator.outages import Outages
from turnpike.operator.reconcile import Context, Reconciler

log = logging.getLogger("turnpike.operator")

FINALIZER = labels.FINALIZER


def connection_info() -> kopf.ConnectionInfo:
    """In-cluster service account when running in a pod, else the KUBECONFIG (read now, not at
    import time, so tests and tools can point it anywhere before calling)."""
    settings = kopf.OperatorSettings()
    info: kopf.ConnectionInfo | None = None
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        info = kopf.login_with_service_account(settings=settings)
    if info is None and _needs_plugin():
        # Cloud kubeconfigs get tokens from an exec plugin, which only the kubernetes client
        # library runs; it reads KUBECONFIG when first imported, which happens here.
        info = kopf.login_via_client(settings=settings, logger=log)
    if info is None:
        info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no KUBECONFIG")
    return info


def _needs_plugin() -> bool:
    paths = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    for path in paths.split(os.pathsep):
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        if "exec:" in text or "auth-provider:" in text:
            return True
    return False


def describe_login_failure(exc: BaseException) -> str:
    """One line saying why no credentials could be loaded. kopf's own errors and OS errors name
    only a path or a missing setting; anything else (a kubeconfig that is not valid YAML) may
    quote the file, and a kubeconfig holds tokens and keys, so only its kind is named."""
    where = "the service account in a pod, else KUBECONFIG or ~/.kube/config"
    if isinstance(exc, kopf.LoginError | OSError):
        return f"no Kubernetes credentials ({where}): {exc}"
    return (
        f"no Kubernetes credentials ({where}): the kubeconfig could not be read "
        f"({type(exc).__name__}; its contents are not shown, they may hold credentials)"
    )


def client_for(info: kopf.ConnectionInfo) -> k8s.Kube:
    return k8s.Kube.connect(info.server, info.as_http_headers(), info.as_ssl_context())


class _QuietWatchHandlers(logging.Filter):
    """Drop kopf's per-event success lines of the watch handlers (one per pod or child change);
    their failures and everything about RelayEdges and StreamGateways still get through."""

    _chatter = tuple(
        f"Handler '{name}' {what}"
        for name in ("drift", "placement", "addresses")
        for what in ("succeeded", "is invoked")
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self._chatter)


def settings_for(config: OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # No handler of this version needs a finalizer; naming the one older versions used lets
    # kopf recognise it (and remove it, as finalizers.release does too).
    settings.persistence.finalizer = FINALIZER
    # Progress and the last-handled spec live in annotations, leaving status to the conditions.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="turnpike.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="turnpike.io", key="last-handled-configuration"
    )
    # The operator posts its own Events (events.py: component turnpike-operator, real actions);
    # kopf's would say kopf/dev and "Action?", and one per handler log line.
    settings.posting.enabled = False
    settings.posting.reporting_component = events.COMPONENT
    settings.peering.name = config.peering_name
    settings.peering.standalone = config.standalone
    settings.peering.mandatory = not config.standalone
    settings.peering.priority = config.priority
    settings.peering.lifetime = config.peering_lifetime
    settings.peering.clusterwide = not config.namespaces
    # Owned objects only: the watches of children, pods and Secrets ask the API server for the
    # operator's managed-by label, so other workloads' churn and other Secrets' data never reach
    # it (a handler's labels= filter alone is applied after everything was received).
    selector = ",".join(f"{key}={value}" for key, value in labels.MANAGED.items())
    for group, version, plural in (
        *handlers.CHILD_KINDS,
        ("", "v1", "pods"),
        ("", "v1", "secrets"),
    ):
        key = (group, version, plural) if group else (version, plural)
        settings.watching.label_selectors[key] = selector
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 4
    return settings


def _is_pattern(namespace: str) -> bool:
    return bool(set(namespace) & set("*?[!"))


async def ensure_peering(
    kube: k8s.Kube, config: OperatorConfig, namespaces: list[str] | None = None
) -> None:
    """The peering records kopf's replicas meet at (kopf does not create them): one cluster-wide,
    or one per served namespace; namespaces matched by a pattern get theirs as they are found."""
    body = {"metadata": {"name": config.peering_name}}
    if namespaces is None:
        namespaces = [ns for ns in config.namespaces if not _is_pattern(ns)]
    targets: list[tuple[k8s.Resource, str | None]] = (
        [(k8s.PEERINGS, ns) for ns in namespaces]
        if config.namespaces
        else [(k8s.CLUSTER_PEERINGS, None)]
    )
    for res, namespace in targets:
        if await kube.get(res, namespace, config.peering_name) is None:
            try:
                await kube.create(res, namespace, body)
            except k8s.ApiError as exc:
                if exc.status != 409:
                    raise


async def run_operator(
    config: OperatorConfig,
    stop: asyncio.Event,
    metrics_address: HostPort | None = None,
    liveness_address: HostPort | None = None,
) -> int:
    logging.getLogger("kopf.objects").addFilter(_QuietWatchHandlers())
    try:
        info = connection_info()
    except Exception as exc:
        log.error("cannot start: %s", describe_login_failure(exc))
        return 2
    kube = client_for(info)
    recorder = events.Recorder(kube, os.environ.get("HOSTNAME") or socket.gethostname())
    events.use(recorder)
    metrics = Metrics()
    reconciler = Reconciler(Context(kube, config, metrics))
    registry = kopf.OperatorRegistry()
    leadership = Leadership(
        kube,
        standalone=config.standalone,
        peering_name=config.peering_name,
        priority=config.priority,
        clusterwide=not config.namespaces,
        mandatory=not config.standalone,
    )
    handlers.register(registry, reconciler)
    # The edges' reconcile creates the keyring Secret: rotation adds no second changing handler
    # to RelayEdges (see rotation.register).
    rotation.register(
        registry,
        config.rotation,
        kube,
        metrics_registry=metrics.registry,
        edge_hooks=False,
        may_act=leadership.may_act,
    )

    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info()

    kopf.on.login(registry=registry)(login)

    def cleanup(**_: Any) -> None:
        # kopf takes SIGTERM over from turnpike.core.service; mirror it into our stop flag, or
        # kopf would wait out its hung-task timeout on the flag it was given.
        stop.set()

    kopf.on.cleanup(registry=registry)(cleanup)

    ready = asyncio.Event()
    insights = Insights()
    health: HealthServer | None = None
    drainer: asyncio.Task[None] | None = None
    keeper: asyncio.Task[None] | None = None
    resyncer: asyncio.Task[None] | None = None
    try:
        if not config.standalone:
            await ensure_peering(kube, config)
        if metrics_address is not None:
            health = HealthServer(metrics.registry, ready=ready.is_set)
            try:
                host, port = await health.start(metrics_address.host, metrics_address.port)
            except OSError as exc:  # busy or not ours to bind: say so, no traceback
                log.error(
                    "cannot start: cannot listen for metrics on %s: %s",
                    metrics_address,
                    exc.strerror or exc,
                )
                health = None
                return 2
            log.info("metrics on http://%s:%d/metrics", host, port)

        async def drain() -> None:
            # Stop scheduled reconciles as soon as the operator is asked to stop, so kopf does
            # not wait on them as hung tasks.
            await stop.wait()
            await reconciler.close()

        drainer = asyncio.create_task(drain())

        async def peering_in(namespace: str) -> None:
            if not config.standalone:
                await ensure_peering(kube, config, [namespace])

        keeper = asyncio.create_task(
            namespaces.keep_complete(kube, insights, config.namespaces, peering_in)
        )

        async def resync() -> None:
            # A task of the operator, not a kopf timer: timers put finalizers on their objects.
            outages = Outages(log)
            while True:
                await asyncio.sleep(config.resync_interval)
                try:
                    await handlers.resync(reconciler, leadership.may_act)
                except Exception as exc:  # retried at the next interval
                    outages.failed("resync", exc)
                else:
                    outages.succeeded("resync")

        resyncer = asyncio.create_task(resync())
        liveness = None
        if liveness_address is not None:
            liveness = f"http://{liveness_address}/healthz"
        await kopf.operator(
            registry=registry,
            insights=insights,
            settings=settings_for(config),
            # Peering is set in settings_for(): kopf's peering_name= argument would make peering
            # mandatory even for a standalone operator.
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=liveness,
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        for task in (drainer, keeper, resyncer):
            if task is not None:
                task.cancel()
        await reconciler.close()
        await recorder.close()
        events.use(None)
        if health is not None:
            await health.stop()
        await kube.close()
    return 0
