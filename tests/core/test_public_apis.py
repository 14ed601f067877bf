"""Other packages' internals stay out of Turnpike's code, so an upgrade cannot break it unseen.

No module imports a private module of another package, and no code touches a private attribute
(``x._name``) that Turnpike itself does not define. The exceptions are listed here with the reason
each has no public counterpart; kopf's is isolated in its one adapter (see test_kopf_internals).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("turnpike", "relay", "streamgw", "operator", "bench")

# (file, what it uses): why there is no public way.
ALLOWED = {
    # kopf has no public API for the namespaces it serves; the adapter fails loudly on an upgrade.
    ("operator/turnpike/operator/kopf_internals.py", "kopf._cogs.structs.references"),
    # argparse offers no public way to list a parser's options or tell their kinds; the
    # TURNPIKE_<FLAG> environment defaults need both.
    ("turnpike/core/config.py", "parser._actions"),
    ("turnpike/core/config.py", "argparse._StoreTrueAction"),
    ("turnpike/core/config.py", "argparse._StoreFalseAction"),
    ("turnpike/core/config.py", "argparse._AppendAction"),
    ("operator/turnpike/operator/rotation_settings.py", "parser._option_string_actions"),
    # ctypes' common base of every C data type (non-public but documented), in an annotation.
    ("relay/turnpike/relay/bpf.py", "ctypes._CData"),
}


def modules(*folders: str) -> Iterator[tuple[str, ast.Module]]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8"))


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def defined_here() -> set[str]:
    """Every name Turnpike's code and tests define or bind: their private names are their own."""
    names: set[str] = set()
    for _, tree in modules(*CODE, "tests"):
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def test_no_private_module_or_attribute_of_another_package() -> None:
    ours = defined_here()
    found: set[tuple[str, str]] = set()
    for where, tree in modules(*CODE):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for name in names:
                    if any(private(part) for part in name.split(".")[1:]):
                        found.add((where, name))
            elif isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in ours:
                found.add((where, ast.unparse(node)))
    assert found - ALLOWED == set(), "use the library's public API (or add it here, with why)"
    assert ALLOWED - found == set(), "no longer used: take it off the list"
