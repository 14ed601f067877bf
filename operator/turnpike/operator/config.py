"""Operator settings: what `turnpike operator` flags set and every reconcile reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from turnpike.core.version import __version__
from turnpike.operator.rotation_settings import RotationSettings

DEFAULT_IMAGE = f"turnpike:{__version__}"


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty means all namespaces."""
    standalone: bool = False
    """Skip peering: act even if another operator replica is running."""
    peering_name: str = "turnpike-operator"
    priority: int = 0
    """kopf peering priority: the highest acts, the others wait (equal priorities all pause, so
    each replica picks a random one unless told)."""
    peering_lifetime: int = 60
    """Seconds a silent peer is still believed alive."""
    image: str = DEFAULT_IMAGE
    """Image of relay and gateway pods whose resource names none."""
    keyring_secret: str = "turnpike-keyring"  # noqa: S105 (a Secret name, not a secret)
    """Secret (key keyring.json) mounted into every relay; created when missing."""
    service_cidrs: tuple[str, ...] = ("10.96.0.0/12",)
    """The cluster's Service CIDRs, denied as relay peers (not discoverable through the API)."""
    pod_cidrs: tuple[str, ...] = ()
    """Pod CIDRs denied as relay peers, in addition to the nodes' spec.podCIDRs."""
    pod_security_default: str = "privileged"
    """The Pod Security level the cluster enforces on namespaces without an enforce label (its
    admission configuration's default, which the API does not expose): where it is not
    ``privileged``, ``offload: auto`` edges relay in userspace."""
    global_host: str = ""
    """Hostname of the global (geo-DNS) relay name; derived from the first edge when empty."""
    resync_interval: float = 60.0
    """How often every resource is reconciled even without a change (discovery, drift)."""
    retry_delay: float = 10.0
    """Delay before retrying a reconcile that failed for a temporary reason."""
    rotation: RotationSettings = field(default_factory=RotationSettings)
    """Keyring rotation: interval, the token and allocation lifetimes to honour, wait timeout."""
