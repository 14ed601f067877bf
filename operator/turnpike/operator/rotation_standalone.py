"""The rotation handlers alone, for plain ``kopf run -m turnpike.operator.rotation_standalone``.

``turnpike operator`` registers rotation with its other handlers (``operator/main.py``);
this module exists for running and testing rotation by itself, with its settings read from the
same ``TURNPIKE_*`` variables as the operator's flags and credentials found exactly as the
operator finds them (`main.connection_info`: service account in a pod, else ``KUBECONFIG``).
Its rotation ticks follow kopf's peering settings (``--peering``, ``--priority``,
``--standalone``) as the operator's do (`loops.Leadership`).
"""

from __future__ import annotations

from typing import Any

import kopf

from turnpike.operator.kube import Kube
from turnpike.operator.loops import Leadership
from turnpike.operator.main import client_for, connection_info, describe_login_failure
from turnpike.operator.rotation import register
from turnpike.operator.rotation_settings import settings_from_env

_kube: Kube | None = None
_leadership: Leadership | None = None


def _client() -> Kube:
    if _kube is None:
        raise RuntimeError("keyring rotation used before the operator logged in")
    return _kube


async def _may_act(namespace: str) -> bool:
    return _leadership is not None and await _leadership.may_act(namespace)


@kopf.on.startup()
async def _login(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _kube, _leadership
    try:
        _kube = client_for(connection_info())  # found exactly as `turnpike operator` finds them
    except Exception as exc:
        raise kopf.PermanentError(describe_login_failure(exc)) from None
    peering = settings.peering
    _leadership = Leadership(
        _kube,
        standalone=peering.standalone,
        peering_name=peering.name,
        priority=peering.priority,
        clusterwide=peering.clusterwide,
        mandatory=peering.mandatory,
    )


@kopf.on.cleanup()
async def _logout(**_: Any) -> None:
    if _kube is not None:
        await _kube.close()


register(kopf.get_default_registry(), settings_from_env(), _client, may_act=_may_act)
