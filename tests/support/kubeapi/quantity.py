"""Resource quantities in the API server's canonical form (``0.5`` → ``500m``, ``1024Mi`` →
``1Gi``), applied to every quantity a pod template or a ResourceQuota carries.

The real API server stores quantities parsed and serialises them canonically, so what a client
reads back is often not what it wrote; an operator that compares the two as strings sees drift
that is not there. The rules follow the apimachinery ``resource.Quantity`` type: the suffix family
(binary ``Ki``…, decimal ``m``/``k``…, exponent ``e3``) is kept; the largest suffix that keeps the
number whole is chosen; a binary quantity that is fractional or under 1024 is written in decimal;
anything finer than ``1n`` rounds up to it.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

_FORM = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exp: suffix for suffix, exp in _DECIMAL.items()}
_BINARY_SUFFIX = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]


class QuantityError(ValueError):
    pass


def canonical(text: Any) -> str:
    """The canonical spelling of a quantity; QuantityError when it is not one."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise QuantityError(f"quantities must match the regular expression: {text!r}")
    match = _FORM.match(str(text).strip())
    if not match:
        raise QuantityError(
            f"quantities must match the regular expression "
            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text!r}"
        )
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        value = number * 1024 ** _BINARY[suffix]
        if -1024 < value < 1024 or value != value.to_integral_value():
            return _decimal(value, exponent_form=False)
        return _binary(int(value))
    if suffix[:1] in ("e", "E"):
        return _decimal(number * Decimal(10) ** int(suffix[1:]), exponent_form=True)
    return _decimal(number * Decimal(10) ** _DECIMAL[suffix], exponent_form=False)


def _binary(value: int) -> str:
    sign, value = ("-" if value < 0 else ""), abs(value)
    power = 0
    while power < 6 and value and value % 1024 ** (power + 1) == 0:
        power += 1
    return f"{sign}{value // 1024**power}{_BINARY_SUFFIX[power]}"


def _decimal(value: Decimal, exponent_form: bool) -> str:
    sign = "-" if value < 0 else ""
    nanos = math.ceil(abs(value) * 10**9)  # finer than 1n rounds up, as the API server does
    if nanos == 0:
        return "0"
    exp = -9
    while exp < 18 and nanos % 10 ** (exp + 3 + 9) == 0:
        exp += 3
    mantissa = nanos // 10 ** (exp + 9)
    if exponent_form:
        return f"{sign}{mantissa}" + (f"e{exp}" if exp else "")
    return f"{sign}{mantissa}{_DECIMAL_SUFFIX[exp]}"


def _canonical_map(values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        return values
    out = {}
    for key, value in values.items():
        try:
            out[key] = canonical(value)
        except QuantityError as exc:
            raise QuantityError(f"{where}.{key}: Invalid value: {value!r}: {exc}") from None
    return out


def _pod_spec(spec: Any, where: str) -> None:
    if not isinstance(spec, dict):
        return
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for n, container in enumerate(spec.get(kind) or []):
            resources = container.get("resources") if isinstance(container, dict) else None
            if isinstance(resources, dict):
                for part in ("requests", "limits"):
                    if part in resources:
                        path = f"{where}.{kind}[{n}].resources.{part}"
                        resources[part] = _canonical_map(resources[part], path)
    if "overhead" in spec:
        spec["overhead"] = _canonical_map(spec["overhead"], f"{where}.overhead")


def canonicalise(group: str, plural: str, obj: dict[str, Any]) -> None:
    """Rewrite, in place, every quantity of a stored object of one of the built-in types."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if (group, plural) == ("", "pods"):
        _pod_spec(spec, "spec")
    elif group in ("apps", "batch") and isinstance(spec.get("template"), dict):
        _pod_spec(spec["template"].get("spec"), "spec.template.spec")
    elif (group, plural) == ("", "resourcequotas") and "hard" in spec:
        spec["hard"] = _canonical_map(spec["hard"], "spec.hard")
