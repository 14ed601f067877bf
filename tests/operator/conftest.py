"""Fixtures of the operator suite; they live in tests/support/kube_e2e.py (with the switch to a
real cluster, TURNPIKE_E2E_KUBECONFIG) so other suites can use the same emulator and operator."""

from support.kube_e2e import cluster, kube, ns, operator

__all__ = ["cluster", "kube", "ns", "operator"]
