"""The rotation handlers alone, for plain ``kopf run -m turnpike.operator.rotation_standalone``.

``turnpike operator`` registers rotation with its other handlers (``operator/main.py``);
this module exists for running and testing rotation by itself, with its settings read from the
same ``TURNPIKE_*`` variables as the operator's flags and credentials found the way kopf finds
them (service account in a pod, else ``KUBECONFIG``).
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from turnpike.operator.kube import Kube
from turnpike.operator.rotation import register
from turnpike.operator.rotation_settings import settings_from_env

_kube: Kube | None = None


def _client() -> Kube:
    if _kube is None:
        raise RuntimeError("keyring rotation used before the operator logged in")
    return _kube


@kopf.on.startup()
async def _login(settings: kopf.OperatorSettings, logger: Any, **_: Any) -> None:
    global _kube
    info = None
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        info = kopf.login_with_service_account(settings=settings, logger=logger)
    if info is None:
        info = kopf.login_with_kubeconfig(settings=settings, logger=logger)
    if info is None:
        raise kopf.PermanentError("no service account and no KUBECONFIG")
    _kube = Kube.connect(info.server, info.as_http_headers(), info.as_ssl_context())


@kopf.on.cleanup()
async def _logout(**_: Any) -> None:
    if _kube is not None:
        await _kube.close()


register(kopf.get_default_registry(), settings_from_env(), _client)
