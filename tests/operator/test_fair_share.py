"""RelayEdge ``spec.quotas``: the relay's fair-share settings, from the spec to the relay's limits.

The pure tests render an edge's relay container and config, parse them with the real `turnpike
relay` command line and resolve the limits the relay itself would enforce; the end-to-end tests run
the real operator against the Kubernetes API.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from support.kube_e2e import edge, eventually

from turnpike.operator import kube as k8s
from turnpike.operator import labels, relay
from turnpike.operator.model import RelayEdge, SpecError
from turnpike.relay.fairshare import Shares

OWNER = {
    "apiVersion": "turnpike.io/v1alpha1",
    "kind": "RelayEdge",
    "metadata": {"name": "ashburn", "namespace": "ns", "uid": "u-1"},
}
# What the relay would detect in its pod (the default route's source: the pod IP).
POD_IP = "10.244.0.5"
QUOTA_VARIABLES = {
    "TURNPIKE_USER_QUOTA",
    "TURNPIKE_ACCOUNT_QUOTA",
    "TURNPIKE_IP_QUOTA",
    "TURNPIKE_TOTAL_QUOTA",
    "TURNPIKE_CONNECTIONS_PER_IP",
    "TURNPIKE_RESERVE_PERCENT",
}


def _edge(**spec: Any) -> RelayEdge:
    body = {
        "metadata": {"name": "ashburn", "namespace": "ns"},
        "spec": {"location": "US East", "publicHostname": "ashburn.turn.example.com", **spec},
    }
    return RelayEdge.parse(body, "turnpike:test")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No TURNPIKE_ variable from the calling shell may change what the relay parses."""
    for name in [n for n in os.environ if n.startswith("TURNPIKE_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def _relay_shares(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Shares:
    """The limits `turnpike relay` resolves from these arguments and this environment."""
    from turnpike.cli import build_parser
    from turnpike.relay.app import Options

    with monkeypatch.context() as scoped:
        for name, value in env.items():
            scoped.setenv(name, value)
        options = Options.from_args(build_parser().parse_args(argv))
    low, high = options.config.relay_ports
    return options.config.shares(high - low + 1)


def _shares_of(edge: RelayEdge, monkeypatch: pytest.MonkeyPatch) -> Shares:
    """Parse the edge's relay container as its pod would: args, ConfigMap as the environment."""
    config, workload, *_ = relay.children(edge, OWNER, [], None, "turnpike-keyring")
    container = workload["spec"]["template"]["spec"]["containers"][0]
    env = {**config["data"], "TURNPIKE_RELAY_IP": POD_IP}
    return _relay_shares(container["args"], env, monkeypatch)


def test_every_quota_reaches_the_relay(clean_env: pytest.MonkeyPatch) -> None:
    quotas = {
        "perUser": 40,
        "perAccount": 3000,
        "perIP": 700,
        "total": 9000,
        "connectionsPerIP": 64,
        "reservePercent": 5,
    }
    shares = _shares_of(_edge(quotas=quotas), clean_env)
    assert shares == Shares(
        token=40, account=3000, ip=700, total=9000, connections=64, reserve_percent=5.0
    )


def test_zero_turns_each_limit_off(clean_env: pytest.MonkeyPatch) -> None:
    names = ("perUser", "perAccount", "perIP", "total", "connectionsPerIP", "reservePercent")
    shares = _shares_of(_edge(quotas=dict.fromkeys(names, 0)), clean_env)
    assert shares == Shares(token=0, account=0, ip=0, total=0, connections=0, reserve_percent=0.0)


@pytest.mark.parametrize("quotas", [None, {}, {"perIP": 500}])
def test_absent_quotas_keep_the_relay_defaults(
    quotas: dict[str, int] | None, clean_env: pytest.MonkeyPatch
) -> None:
    """What the spec leaves out, the operator does not set: the relay sizes it from its own port
    range and open-file limit, exactly as `turnpike relay` without the flag."""
    spec = {} if quotas is None else {"quotas": quotas}
    edge = _edge(relayPorts={"min": 40000, "max": 47999}, **spec)
    from_operator = _shares_of(edge, clean_env)
    argv = ["relay", "--keyring", "k", "--relay-ip", POD_IP, "--relay-ports", "40000-47999"]
    if quotas:
        argv += ["--ip-quota", "500"]
    assert from_operator == _relay_shares(argv, {}, clean_env)
    config = relay.relay_config(edge, [], None)
    assert set(config) & QUOTA_VARIABLES == ({"TURNPIKE_IP_QUOTA"} if quotas else set())


@pytest.mark.parametrize(
    ("quotas", "message"),
    [
        ({"reservePercent": 100}, r"spec.quotas.reservePercent: 100 is out of range \(0-99\)"),
        ({"perIP": -1}, r"spec.quotas.perIP: -1 is out of range \(at least 0\)"),
        ({"perAccount": "lots"}, r"spec.quotas.perAccount: 'lots' is not a whole number"),
        ({"connectionsPerIP": True}, r"spec.quotas.connectionsPerIP: True is not a whole"),
        ({"total": 2.5}, r"spec.quotas.total: 2.5 is not a whole number"),
        ([5], r"spec.quotas: must be an object"),
    ],
)
def test_bad_quotas_name_the_field(quotas: Any, message: str) -> None:
    """Objects stored before the schema had these rules are refused by the operator too."""
    with pytest.raises(SpecError, match=message):
        _edge(quotas=quotas)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("quotas", "field"),
    [
        ({"reservePercent": 100}, "spec.quotas.reservePercent"),
        ({"perIP": -1}, "spec.quotas.perIP"),
        ({"connectionsPerIP": "many"}, "spec.quotas.connectionsPerIP"),
    ],
)
async def test_api_refuses_bad_quotas(
    kube: k8s.Kube, ns: str, quotas: dict[str, Any], field: str
) -> None:
    with pytest.raises(k8s.ApiError) as err:
        await kube.create(k8s.RELAY_EDGES, ns, edge("bad", quotas=quotas))
    assert err.value.status == 422 and field in err.value.message, err.value.message


@pytest.mark.e2e
async def test_quotas_roll_out_and_back_to_defaults(kube: k8s.Kube, ns: str) -> None:
    """Set quotas reach the relay's ConfigMap and roll the pods; removing one removes its variable
    (the relay's default applies again) and rolls them once more."""
    quotas = {"perAccount": 2000, "perIP": 300, "connectionsPerIP": 50, "reservePercent": 20}
    static = {"static": ["192.0.2.7"]}
    await kube.create(k8s.RELAY_EDGES, ns, edge("fair", quotas=quotas, addresses=static))

    async def rendered(expected: dict[str, str]) -> str | None:
        """The pod template's config hash once the ConfigMap says exactly ``expected``."""
        config_map = await kube.get(k8s.CONFIGMAPS, ns, labels.relay_name("fair"))
        workload = await kube.get(k8s.DEPLOYMENTS, ns, labels.relay_name("fair"))
        if config_map is None or workload is None:
            return None
        data = config_map["data"]
        if {k: v for k, v in data.items() if k in QUOTA_VARIABLES} != expected:
            return None
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        config_hash: str = annotations[labels.CONFIG_HASH]
        return config_hash if config_hash == relay.config_hash(data) else None

    first = await eventually(
        lambda: rendered(
            {
                "TURNPIKE_ACCOUNT_QUOTA": "2000",
                "TURNPIKE_IP_QUOTA": "300",
                "TURNPIKE_CONNECTIONS_PER_IP": "50",
                "TURNPIKE_RESERVE_PERCENT": "20",
            }
        ),
        what="quotas in the relay config",
    )
    await kube.patch(
        k8s.RELAY_EDGES,
        ns,
        "fair",
        {"spec": {"quotas": {"perAccount": None, "perIP": 0, "perUser": 25}}},
    )
    second = await eventually(
        lambda: rendered(
            {
                "TURNPIKE_USER_QUOTA": "25",
                "TURNPIKE_IP_QUOTA": "0",
                "TURNPIKE_CONNECTIONS_PER_IP": "50",
                "TURNPIKE_RESERVE_PERCENT": "20",
            }
        ),
        what="changed quotas in the relay config",
    )
    assert second != first


# -- StreamGateway: concurrent calls per pod and per account, INVITEs per source ------------------

GATEWAY_OWNER = {**OWNER, "kind": "StreamGateway"}


def _gateway_args(spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The rendered gateway container parsed by the real `turnpike streamgw` command line."""
    from turnpike.cli import build_parser
    from turnpike.operator import gateway
    from turnpike.operator.model import StreamGateway

    body = {"metadata": {"name": "media", "namespace": "ns"}, "spec": {"edge": "a", **spec}}
    config, deployment, _ = gateway.children(StreamGateway.parse(body, "image"), GATEWAY_OWNER)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    with monkeypatch.context() as scoped:
        for name, value in {**config["data"], "TURNPIKE_RTP_IP": POD_IP}.items():
            scoped.setenv(name, value)
        return build_parser().parse_args(container["args"])


def test_gateway_caps_reach_the_gateway(clean_env: pytest.MonkeyPatch) -> None:
    sip = {"numbers": {"configMapName": "n"}, "inviteRate": 4}
    args = _gateway_args({"calls": {"max": 400, "perAccount": 40}, "sip": sip}, clean_env)
    assert (args.max_calls, args.max_calls_per_account, args.sip_invite_rate) == (400, 40, 4.0)
    off = {**sip, "inviteRate": 0}
    assert _gateway_args({"sip": off}, clean_env).sip_invite_rate == 0.0


def test_absent_gateway_caps_keep_the_gateway_defaults(clean_env: pytest.MonkeyPatch) -> None:
    from turnpike.cli import build_parser

    rendered = _gateway_args({"sip": {"numbers": {"configMapName": "n"}}}, clean_env)
    plain = build_parser().parse_args(["streamgw", "--accounts", "a", "--rtp-ip", POD_IP])
    for name in ("max_calls", "max_calls_per_account", "sip_invite_rate"):
        assert getattr(rendered, name) == getattr(plain, name), name


@pytest.mark.parametrize(
    ("calls", "message"),
    [
        ({"max": 10, "perAccount": 11}, r"spec.calls.perAccount: 11 is greater than spec.calls"),
        ({"max": 0}, r"spec.calls.max: 0 is out of range \(at least 1\)"),
        ({"perAccount": "x"}, r"spec.calls.perAccount: 'x' is not a whole number"),
    ],
)
def test_bad_gateway_caps_name_the_field(calls: dict[str, Any], message: str) -> None:
    from turnpike.operator.model import StreamGateway

    body = {"metadata": {"name": "m", "namespace": "ns"}, "spec": {"edge": "a", "calls": calls}}
    with pytest.raises(SpecError, match=message):
        StreamGateway.parse(body, "image")


@pytest.mark.e2e
async def test_api_refuses_more_calls_per_account_than_in_total(kube: k8s.Kube, ns: str) -> None:
    body = {"metadata": {"name": "g"}, "spec": {"edge": "a", "calls": {"max": 5, "perAccount": 6}}}
    with pytest.raises(k8s.ApiError) as err:
        await kube.create(k8s.STREAM_GATEWAYS, ns, body)
    assert err.value.status == 422
    assert "calls.perAccount must not be greater than calls.max" in err.value.message
