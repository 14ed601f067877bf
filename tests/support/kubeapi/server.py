"""The emulator's HTTP face: discovery, CRUD, patch, watch — the REST paths kopf and kubectl use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import tables
from .selectors import Selector
from .store import ApiError, Event, Obj, ResourceType, Store

BUILTIN = [
    ResourceType("", "v1", "namespaces", "Namespace", False, "namespace", ["ns"], True),
    ResourceType("", "v1", "nodes", "Node", False, "node", ["no"], True),
    ResourceType("", "v1", "pods", "Pod", True, "pod", ["po"], True),
    ResourceType("", "v1", "services", "Service", True, "service", ["svc"], True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, "configmap", ["cm"]),
    ResourceType("", "v1", "secrets", "Secret", True, "secret"),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ["sa"]),
    ResourceType("", "v1", "events", "Event", True, "event", ["ev"]),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True, "resourcequota", ["quota"]),
    ResourceType("apps", "v1", "deployments", "Deployment", True, "deployment", ["deploy"], True),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, "daemonset", ["ds"], True),
    ResourceType(
        "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, "", ["pdb"], True
    ),
    ResourceType("events.k8s.io", "v1", "events", "Event", True, "event", ["ev"]),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, "lease"),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        "customresourcedefinition",
        ["crd", "crds"],
        True,
    ),
]


def new_store(history_size: int = 20000) -> Store:
    store = Store(history_size)
    for rt in BUILTIN:
        store.register(ResourceType(**rt.__dict__))
    return store


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _error(exc: ApiError) -> web.Response:
    return _json(exc.status(), exc.code)


class Routes:
    def __init__(self, store: Store) -> None:
        self.store = store
        # (method, path, query, user agent) of every request, for tests that audit API usage.
        self.requests: list[tuple[str, str, str, str]] = []
        # Called with each request once its answer is ready and before it is sent, on the
        # emulator's loop: tests use one to change the store at an exact point of a client's work
        # (what the client reads is fixed by then, what it reads next is not).
        self.observers: list[Callable[[web.Request], None]] = []

    # -- discovery -----------------------------------------------------------------------------

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for group, version, _ in self.store.types:
            if group and version not in groups.setdefault(group, []):
                groups[group].append(version)
        return groups

    def _group_doc(self, name: str, versions: list[str]) -> Obj:
        listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": listed, "preferredVersion": listed[0]}

    def _resource_list(self, group: str, version: str) -> Obj:
        resources = [
            entry
            for (g, v, _), rt in sorted(self.store.types.items())
            if (g, v) == (group, version)
            for entry in rt.discovery()
        ]
        if not resources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # -- dispatch ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        agent = request.headers.get("User-Agent", "")
        self.requests.append((request.method, request.path, request.query_string, agent))
        try:
            response = await self._handle(request)
        except ApiError as exc:
            return _error(exc)
        for observe in list(self.observers):
            observe(request)
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return _json({"major": "1", "minor": "31", "gitVersion": "v1.31.0-emulated"})
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return web.Response(text="ok")
        if parts == ["api"]:
            return _json({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["apis"]:
            groups = [self._group_doc(n, v) for n, v in sorted(self._groups().items())]
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if len(parts) == 2 and parts[0] == "apis":
            versions = self._groups().get(parts[1])
            if not versions:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(
                {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(parts[1], versions)}
            )
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return _json(self._resource_list(group, version))

        ns: str | None = None
        # /api/v1/namespaces/NAME/status is the namespace's own subresource; any other path
        # below namespaces/NAME/ addresses a namespaced resource.
        own = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
        if rest[0] == "namespaces" and len(rest) >= 3 and not own:
            ns, rest = rest[1], rest[2:]
        rt = self.store.find_type(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and not (sub == "status" and rt.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return await self._verb(request, rt, ns, name, sub)

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"null")
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None

    async def _verb(
        self, request: web.Request, rt: ResourceType, ns: str | None, name: str | None, sub: str
    ) -> web.StreamResponse:
        method, store, query = request.method, self.store, request.query
        if name is None:
            if method == "GET":
                labels = Selector(query.get("labelSelector"))
                fields = Selector(query.get("fieldSelector"))
                if query.get("watch") in ("true", "1"):
                    return await self._watch(request, rt, ns, labels, fields)
                items, rv = store.list(rt, ns, labels, fields)
                if "as=Table" in request.headers.get("Accept", ""):
                    return _json(tables.table(rt, items, rv))
                return _json(
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(rv)},
                        "items": items,
                    }
                )
            if method == "POST":
                body = await self._body(request)
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "expected an object")
                return _json(store.create(rt, ns, body), 201)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")
        if method == "GET":
            obj = store.get(rt, ns, name)
            if "as=Table" in request.headers.get("Accept", ""):
                return _json(tables.table(rt, [obj], store.rv))
            return _json(obj)
        if method == "PUT":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "expected an object")
            return _json(store.replace(rt, ns, name, body, sub))
        if method == "PATCH":
            body = await self._body(request)
            return _json(store.patch(rt, ns, name, request.content_type, body, sub))
        if method == "DELETE":
            return _json(store.delete(rt, ns, name))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")

    async def _watch(
        self,
        request: web.Request,
        rt: ResourceType,
        ns: str | None,
        labels: Selector,
        fields: Selector,
    ) -> web.StreamResponse:
        store = self.store
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        since_text = request.query.get("resourceVersion") or ""
        initial: list[Obj] = []
        if since_text in ("", "0") or request.query.get("sendInitialEvents") == "true":
            initial, since = store.list(rt, ns, labels, fields)
        else:
            try:
                since = int(since_text)
            except ValueError:
                raise ApiError(
                    400, "BadRequest", f"invalid resourceVersion {since_text!r}"
                ) from None
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(kind: str, obj: Obj) -> None:
            line = json.dumps({"type": kind, "object": obj}) + "\n"
            await response.write(line.encode())

        try:
            for obj in initial:
                await send("ADDED", obj)
            if request.query.get("sendInitialEvents") == "true":
                await send("BOOKMARK", self._bookmark(rt, since))
            while True:
                try:
                    events = store.events_since(rt, since)
                except ApiError as exc:
                    await send("ERROR", exc.status())
                    break
                for event in events:
                    since = event.rv
                    translated = self._translate(rt, event, ns, labels, fields)
                    if translated is not None:
                        await send(*translated)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                changed = store.changed
                if not store.events_since(rt, since):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), min(remaining, 5.0))
        except ConnectionResetError:
            return response
        await response.write_eof()
        return response

    def _bookmark(self, rt: ResourceType, rv: int) -> Obj:
        return {
            "apiVersion": rt.api_version,
            "kind": rt.kind,
            "metadata": {
                "resourceVersion": str(rv),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        }

    def _translate(
        self, rt: ResourceType, event: Event, ns: str | None, labels: Selector, fields: Selector
    ) -> tuple[str, Obj] | None:
        """A history event as this watcher sees it: objects entering or leaving its selection
        appear as ADDED or DELETED, as on a real API server."""
        obj = {**event.obj, "apiVersion": rt.api_version, "kind": rt.kind}
        if ns and obj["metadata"].get("namespace") != ns:
            return None

        def selected(o: Obj | None) -> bool:
            return o is not None and labels.matches_labels(o) and fields.matches_fields(o)

        now_in = selected(event.obj)
        was_in = selected(event.old) if event.type == "MODIFIED" else now_in
        if event.type == "MODIFIED":
            if now_in and not was_in:
                return ("ADDED", obj)
            if was_in and not now_in:
                return ("DELETED", obj)
        return (event.type, obj) if now_in else None


def make_app(store: Store) -> tuple[web.Application, Routes]:
    routes = Routes(store)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", routes.handle)
    return app, routes
