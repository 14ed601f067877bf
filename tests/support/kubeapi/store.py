"""The emulator's state: resource types, objects, the event history watches resume from.

Everything runs on one event loop, so each operation is atomic: a watch that lists and then
waits can never miss an event in between. Semantics follow the API server where operators depend
on them: resourceVersion and 409s, generation bumps on spec changes, the status subresource,
finalizers and deletionTimestamp, owner-reference garbage collection, CRD registration and schema
validation, namespaces.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import copy
import datetime
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import patches, quantity, schema
from .selectors import Selector

Obj = dict[str, Any]
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
HISTORY = 20000  # events kept per resource type; older resourceVersions get 410 Gone


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    status_subresource: bool = False
    schema: Obj | None = None  # openAPIV3Schema of a custom resource
    categories: list[str] = field(default_factory=list)
    columns: list[Obj] = field(default_factory=list)  # additionalPrinterColumns of a CRD

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[Obj]:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        main: Obj = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        }
        if self.short_names:
            main["shortNames"] = self.short_names
        if self.categories:
            main["categories"] = self.categories
        out = [main]
        if self.status_subresource:
            out.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return out


@dataclass
class Event:
    rv: int
    type: str
    obj: Obj
    old: Obj | None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without_rv(obj: Obj) -> Obj:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    return {**body, "metadata": meta}


_GENERATION_GROUPS = ("apps", "batch", "policy", "networking.k8s.io", "apiextensions.k8s.io")


def tracks_generation(rt: ResourceType) -> bool:
    """Whether objects of this type carry ``metadata.generation`` (custom resources and the
    controller-driven built-in types; ConfigMaps, Secrets, Services, … have none)."""
    return rt.schema is not None or rt.group in _GENERATION_GROUPS


def _generation_part(rt: ResourceType, obj: Obj) -> Obj:
    """What a change must touch to bump the generation: the spec (everything but metadata, and
    status when it is a subresource); for a Deployment also its annotations, which it copies to
    its ReplicaSets."""
    skip = (
        ("metadata", "apiVersion", "kind", "status")
        if rt.status_subresource or not rt.schema
        else ("metadata", "apiVersion", "kind")
    )
    part = {k: v for k, v in obj.items() if k not in skip}
    if rt.key == ("apps", "deployments"):
        part["annotations"] = obj.get("metadata", {}).get("annotations") or {}
    return part


class Store:
    def __init__(self, history_size: int = HISTORY) -> None:
        self.history_size = history_size
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self.history: dict[tuple[str, str], list[Event]] = {}
        self.rv = 0
        self.changed = asyncio.Event()  # replaced by a fresh one after every change
        self.hooks: list[Callable[[ResourceType, str, Obj], None]] = []

    # -- types ---------------------------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        self.types[(rt.group, rt.version, rt.plural)] = rt
        self.objects.setdefault(rt.key, {})
        self.history.setdefault(rt.key, [])

    def register_crd(self, crd: Obj) -> None:
        spec = crd["spec"]
        names = spec["names"]
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            subresources = version.get("subresources") or {}
            self.register(
                ResourceType(
                    group=spec["group"],
                    version=version["name"],
                    plural=names["plural"],
                    kind=names["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    singular=names.get("singular", ""),
                    short_names=list(names.get("shortNames", [])),
                    categories=list(names.get("categories", [])),
                    status_subresource="status" in subresources,
                    schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                    columns=list(version.get("additionalPrinterColumns") or []),
                )
            )

    def unregister(self, group: str, plural: str) -> None:
        for key in [k for k in self.types if (k[0], k[2]) == (group, plural)]:
            del self.types[key]
        self.objects.pop((group, plural), None)
        self.history.pop((group, plural), None)

    def find_type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get((group, version, plural))
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt

    def type_of(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self.types.values():
            if (rt.group, rt.version, rt.kind) == (group, version, kind):
                return rt
        return None

    # -- reading -------------------------------------------------------------------------------

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        return self.objects.setdefault(rt.key, {})

    def _with_type(self, rt: ResourceType, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"], out["kind"] = rt.api_version, rt.kind
        return out

    def get(self, rt: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self._bucket(rt).get((ns or "", name))
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{rt.qualified} "{name}" not found',
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        return self._with_type(rt, obj)

    def list(
        self, rt: ResourceType, ns: str | None, labels: Selector, fields: Selector
    ) -> tuple[list[Obj], int]:
        items = [
            self._with_type(rt, obj)
            for (obj_ns, _), obj in sorted(self._bucket(rt).items())
            if (not ns or obj_ns == ns)
            and labels.matches_labels(obj)
            and fields.matches_fields(obj)
        ]
        return items, self.rv

    def events_since(self, rt: ResourceType, since: int) -> list[Event]:
        events = self.history.get(rt.key, [])
        if events and since < events[0].rv - 1 and len(events) >= self.history_size:
            raise ApiError(
                410, "Expired", f"too old resource version: {since} ({events[0].rv - 1})"
            )
        index = bisect.bisect_right([e.rv for e in events], since)
        return events[index:]

    # -- writing -------------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj.pop("apiVersion", None)
        obj.pop("kind", None)
        if kind == "DELETED":
            self._bucket(rt).pop(key, None)
        else:
            self._bucket(rt)[key] = obj
        history = self.history.setdefault(rt.key, [])
        history.append(
            Event(self.rv, kind, copy.deepcopy(obj), copy.deepcopy(old) if old else None)
        )
        if len(history) > self.history_size:
            del history[: len(history) - self.history_size]
        self._wake()
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions") and kind != "DELETED":
            self.register_crd(obj)
        for hook in self.hooks:
            hook(rt, kind, obj)
        return self._with_type(rt, obj)

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def _check_namespace(self, rt: ResourceType, ns: str | None) -> None:
        if not rt.namespaced:
            return
        if not ns:
            raise ApiError(400, "BadRequest", "the namespace of the object must be given")
        namespace = self.objects.get(("", "namespaces"), {}).get(("", ns))
        if namespace is None:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')
        if namespace["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {ns} because it is being terminated",
            )

    def _prepare(self, rt: ResourceType, obj: Obj, old: Obj | None = None) -> Obj:
        """Type-specific normalisation and validation of a body about to be stored."""
        if rt.key == ("", "secrets"):
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {}) or {}
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
        self._check_owner_references(rt, obj)
        try:
            quantity.canonicalise(rt.group, rt.plural, obj)
        except quantity.QuantityError as exc:
            name = obj.get("metadata", {}).get("name", "")
            raise ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {exc}') from None
        if rt.schema is not None:
            meta = obj.get("metadata", {})
            obj = schema.prune_and_default(obj, rt.schema)
            obj["metadata"] = meta
            errors = schema.validate(obj, rt.schema, old)
            if errors:
                name = meta.get("name", "")
                causes = [{"message": e} for e in errors]
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rt.kind}.{rt.group} "{name}" is invalid: ' + ", ".join(errors),
                    {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes},
                )
        return obj

    def _check_owner_references(self, rt: ResourceType, obj: Obj) -> None:
        """At most one owner may be the controller, as the API server insists."""
        refs = obj.get("metadata", {}).get("ownerReferences") or []
        controllers = [f"{r.get('kind')}/{r.get('name')}" for r in refs if r.get("controller")]
        if len(controllers) > 1:
            name = obj.get("metadata", {}).get("name", "")
            raise ApiError(
                422,
                "Invalid",
                f'{rt.kind} "{name}" is invalid: metadata.ownerReferences: Invalid value: '
                f'Only one reference can have Controller set to true. Found "true" in '
                f"references for {' and '.join(controllers)}",
            )

    def create(self, rt: ResourceType, ns: str | None, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            ns = ns or meta.get("namespace")
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(
                    400, "BadRequest", "the namespace of the object does not match the URL"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        self._check_namespace(rt, ns)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise ApiError(
                    422, "Invalid", f"{rt.kind} is invalid: metadata.name: Required value"
                )
            meta["name"] = prefix + secrets.token_hex(3)[:5]
        if not _DNS_SUBDOMAIN.fullmatch(meta["name"]) or len(meta["name"]) > 253:
            raise ApiError(
                422,
                "Invalid",
                f'{rt.kind} "{meta["name"]}" is invalid: metadata.name: Invalid value: '
                f'"{meta["name"]}": a lowercase RFC 1123 subdomain must consist of lower case '
                "alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character",
            )
        if (ns or "", meta["name"]) in self._bucket(rt):
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.qualified} "{meta["name"]}" already exists',
                {"name": meta["name"], "group": rt.group, "kind": rt.plural},
            )
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        meta.pop("generation", None)
        if tracks_generation(rt):
            meta["generation"] = 1
        if rt.status_subresource:
            obj.pop("status", None)
        obj = self._prepare(rt, obj)
        obj = self._defaults_on_create(rt, obj)
        self._admit_quota(rt, obj)
        return self._commit(rt, "ADDED", obj, None)

    def _admit_quota(self, rt: ResourceType, obj: Obj) -> None:
        """ResourceQuota admission on create, for the one count the operator's failure tests
        use: ``services.loadbalancers`` (a real quota that real clusters set)."""
        if rt.key != ("", "services") or obj["spec"].get("type") != "LoadBalancer":
            return
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        used = sum(
            1
            for (other_ns, _), svc in self._bucket(rt).items()
            if other_ns == ns and (svc.get("spec") or {}).get("type") == "LoadBalancer"
        )
        for (quota_ns, quota_name), quota in self.objects.get(("", "resourcequotas"), {}).items():
            limit = ((quota.get("spec") or {}).get("hard") or {}).get("services.loadbalancers")
            if quota_ns == ns and limit is not None and used + 1 > int(limit):
                what = "services.loadbalancers"
                raise ApiError(
                    403,
                    "Forbidden",
                    f'services "{name}" is forbidden: exceeded quota: {quota_name}, requested: '
                    f"{what}=1, used: {what}={used}, limited: {what}={limit}",
                )

    def _defaults_on_create(self, rt: ResourceType, obj: Obj) -> Obj:
        if rt.key == ("", "services"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec.get("clusterIP") != "None":
                spec["clusterIP"] = f"10.96.{self.rv % 250}.{(self.rv // 250) % 250 + 1}"
        if rt.key == ("", "namespaces"):
            obj["status"] = {"phase": "Active"}
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            obj["status"] = {
                "conditions": [{"type": "Established", "status": "True"}],
                "acceptedNames": obj["spec"]["names"],
            }
        return obj

    def _current(self, rt: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self._bucket(rt).get((ns or "", name))
        if obj is None:
            self.get(rt, ns, name)  # raises the 404
        assert obj is not None
        return obj

    def replace(
        self, rt: ResourceType, ns: str | None, name: str, body: Obj, subresource: str = ""
    ) -> Obj:
        old = self._current(rt, ns, name)
        new = copy.deepcopy(body)
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        given = meta.get("resourceVersion")
        if given and given != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        return self._update(rt, old, new, subresource)

    def patch(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        content_type: str,
        body: Any,
        subresource: str = "",
    ) -> Obj:
        old = self._current(rt, ns, name)
        current = self._with_type(rt, old)
        try:
            if content_type.startswith("application/json-patch+json"):
                new = patches.json_patch(current, body)
            elif content_type.startswith("application/merge-patch+json"):
                new = patches.merge_patch(current, body)
            elif content_type.startswith("application/strategic-merge-patch+json"):
                if rt.schema is not None:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for custom resources",
                    )
                new = patches.strategic_merge_patch(current, body)
            else:
                raise ApiError(
                    415, "UnsupportedMediaType", f"unsupported patch type {content_type}"
                )
        except patches.PatchError as exc:
            # The API server answers a failed "test" op with 422 (kopf relies on that code).
            raise ApiError(422, "Invalid", f"the server rejected our request: {exc}") from None
        if not isinstance(new, dict):
            raise ApiError(400, "BadRequest", "a patch must leave an object")
        given = (
            (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        )
        if given and given != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": '
                "the object has been modified",
            )
        return self._update(rt, old, new, subresource)

    def _update(self, rt: ResourceType, old: Obj, new: Obj, subresource: str) -> Obj:
        new.pop("apiVersion", None)
        new.pop("kind", None)
        meta = new.setdefault("metadata", {})
        # Identity and bookkeeping fields belong to the server.
        for key in ("uid", "creationTimestamp", "namespace", "name", "generation"):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
        if old["metadata"].get("deletionTimestamp"):
            meta["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
        else:
            meta.pop("deletionTimestamp", None)
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        elif rt.status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if rt.key == ("", "services"):
            new.setdefault("spec", {})["clusterIP"] = old.get("spec", {}).get("clusterIP")
            was = old.get("spec", {}).get("loadBalancerClass")
            if was is not None and new["spec"].get("loadBalancerClass") != was:
                name = old["metadata"]["name"]
                raise ApiError(
                    422,
                    "Invalid",
                    f'Service "{name}" is invalid: spec.loadBalancerClass: Invalid value: '
                    f"{new['spec'].get('loadBalancerClass')!r}: may not change once set",
                )
        new = self._prepare(rt, new, old)
        if not tracks_generation(rt):
            meta.pop("generation", None)
        elif _generation_part(rt, {**new, "metadata": meta}) != _generation_part(rt, old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        new["metadata"] = meta
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._commit(rt, "MODIFIED", new, old)
            return self._remove(rt, new)
        if _without_rv(new) == _without_rv(old):
            return self._with_type(rt, old)  # a no-op write does not bump resourceVersion
        return self._commit(rt, "MODIFIED", new, old)

    def delete(self, rt: ResourceType, ns: str | None, name: str) -> Obj:
        old = self._current(rt, ns, name)
        if rt.key == ("", "namespaces"):
            return self._delete_namespace(old)
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return self._with_type(rt, old)
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit(rt, "MODIFIED", new, old)
        return self._remove(rt, old)

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        gone = self._commit(rt, "DELETED", copy.deepcopy(obj), obj)
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            spec = obj["spec"]
            self.unregister(spec["group"], spec["names"]["plural"])
        self._collect_garbage(obj["metadata"]["uid"])
        if obj["metadata"].get("namespace"):
            self._finish_namespace(obj["metadata"]["namespace"])
        return gone

    def _collect_garbage(self, owner_uid: str) -> None:
        """Delete dependents whose every owner is gone (background propagation)."""
        alive = {o["metadata"]["uid"] for bucket in self.objects.values() for o in bucket.values()}
        for rt in list(self.types.values()):
            for obj in list(self._bucket(rt).values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == owner_uid for r in refs):
                    continue
                if any(r.get("uid") in alive for r in refs):
                    continue
                key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                if key in self._bucket(rt):
                    self.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def _delete_namespace(self, namespace: Obj) -> Obj:
        if namespace["metadata"].get("deletionTimestamp"):
            return self._with_type(self.namespaces, namespace)
        new = copy.deepcopy(namespace)
        new["metadata"]["deletionTimestamp"] = now()
        new["status"] = {"phase": "Terminating"}
        result = self._commit(self.namespaces, "MODIFIED", new, namespace)
        name = namespace["metadata"]["name"]
        for rt in list(self.types.values()):
            if rt.namespaced:
                for obj_ns, obj_name in list(self._bucket(rt)):
                    if obj_ns == name and (obj_ns, obj_name) in self._bucket(rt):
                        self.delete(rt, obj_ns, obj_name)
        self._finish_namespace(name)
        return result

    def _finish_namespace(self, name: str) -> None:
        namespace = self.objects.get(("", "namespaces"), {}).get(("", name))
        if namespace is None or not namespace["metadata"].get("deletionTimestamp"):
            return
        for rt in self.types.values():
            if rt.namespaced and any(ns == name for ns, _ in self._bucket(rt)):
                return
        self._commit(self.namespaces, "DELETED", copy.deepcopy(namespace), namespace)

    @property
    def namespaces(self) -> ResourceType:
        return self.find_type("", "v1", "namespaces")
