"""Kubernetes Events from the operator, as `kubectl describe` shows them: from the component
``turnpike-operator`` (and the replica that acted), with the action taken.

kopf's own event posting says ``kopf``/``dev`` and ``Action?``; it is turned off (see
``main.settings_for``) and every Event goes through the one `Recorder` the operator installs at
start-up. Posting happens in the background and never fails the work it describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from typing import Any

from turnpike.operator import kube as k8s
from turnpike.operator import labels

Obj = dict[str, Any]
log = logging.getLogger("turnpike.operator")

COMPONENT = labels.MANAGER

# Actions (what the operator did), one per kind of Event.
RECONCILE = "Reconcile"
VALIDATE = "Validate"
PUBLISH = "Publish"
ROTATE = "Rotate"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(
    target: Obj, reason: str, message: str, *, warning: bool, action: str, instance: str
) -> Obj:
    """A core/v1 Event about ``target`` (an object, or an involvedObject reference)."""
    meta = target.get("metadata") or {}
    ref = {
        "apiVersion": target.get("apiVersion", ""),
        "kind": target.get("kind", ""),
        "name": meta.get("name", target.get("name", "")),
        "namespace": meta.get("namespace", target.get("namespace", "")),
        "uid": meta.get("uid", target.get("uid", "")),
    }
    stamp = _now()
    return {
        "metadata": {"generateName": f"{ref['name']}.", "namespace": ref["namespace"]},
        "involvedObject": ref,
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "action": action,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class Recorder:
    def __init__(self, kube: k8s.Kube, instance: str) -> None:
        self.kube = kube
        self.instance = instance
        self.pending: set[asyncio.Task[None]] = set()

    def post(self, target: Obj, reason: str, message: str, *, warning: bool, action: str) -> None:
        body = event_body(
            target, reason, message, warning=warning, action=action, instance=self.instance
        )
        task = asyncio.get_running_loop().create_task(self._create(body))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _create(self, body: Obj) -> None:
        try:
            await self.kube.create(k8s.EVENTS, body["metadata"]["namespace"], body)
        except Exception as exc:  # an Event is a courtesy; never fail the work it describes
            log.debug("could not post Event %s: %s", body["reason"], exc)

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self.pending, return_exceptions=True), 2)


_recorder: Recorder | None = None


def use(recorder: Recorder | None) -> None:
    """Install the operator's recorder (None: Events are only logged, as in unit tests)."""
    global _recorder
    _recorder = recorder


def post(target: Obj, reason: str, message: str, *, warning: bool = False, action: str) -> None:
    if _recorder is None:
        log.info("event %s on %s: %s", reason, (target.get("metadata") or {}).get("name"), message)
        return
    _recorder.post(target, reason, message, warning=warning, action=action)
