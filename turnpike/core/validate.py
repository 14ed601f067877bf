"""Reading a JSON configuration file field by field, with one shape of error message.

The keyring, accounts, edges and numbers parsers walk their document with `Node`s, so each one
reads top-down as the list of fields it takes. Every problem raises the parser's own error class
(a `ValueError`) with the same message shape: the file, the JSON path of the value, what was
expected and what was found::

    keyring.json: $.keys[1].signing: expected true or false, found "yes"

A node marked secret (a key secret, an auth token, a password) is described by its kind only
("a string", "a number"), never quoted; other scalar values are quoted, cut to 40 characters, so a
typo can be seen. Arrays and objects are described by their kind, never by their contents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, replace
from typing import Any, Final


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""The value of a node whose field is absent from its object."""

_SHOWN: Final = 40
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load(data: bytes | str, source: str, error: type[ValueError]) -> Node:
    """The root node of a JSON document; a document that is not JSON raises ``error``.

    The parser's message names where the text stops being JSON, never the text itself.
    """
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as exc:
        raise error(
            f"{source}: not valid JSON (cannot decode the text at byte {exc.start})"
        ) from None
    except ValueError as exc:  # JSONDecodeError, or a number too long to convert
        raise error(f"{source}: not valid JSON ({exc})") from None
    return Node(doc, "$", source, error)


def anything(_: str) -> bool:
    """A `Node.text` check that takes any string, the empty one too."""
    return True


@dataclass(frozen=True, slots=True)
class Node:
    """One value of a document and where it is: the file, its JSON path, whether it is secret."""

    value: Any
    path: str
    source: str
    error: type[ValueError]
    secret: bool = False

    def __repr__(self) -> str:  # the path only: a value may be a secret
        return f"Node({self.source}: {self.path})"

    @property
    def present(self) -> bool:
        return self.value is not MISSING

    def fail(self, expected: str, found: str | None = None) -> ValueError:
        """The error to raise: ``found`` defaults to a description of this node's value."""
        seen = describe(self.value, self.secret) if found is None else found
        return self.error(f"{self.source}: {self.path}: expected {expected}, found {seen}")

    def object(self, *fields: str, optional: bool = False) -> Node:
        """This node, checked to be an object with no fields but ``fields``; when ``optional``
        and absent, an empty object."""
        if optional and not self.present:
            return replace(self, value={})
        if not isinstance(self.value, dict):
            raise self.fail("an object")
        unknown = [name for name in self.value if name not in fields]
        if unknown:
            raise self.fail(f"only the fields {_names(fields)}", _names(unknown))
        return self

    def field(self, name: str, *, secret: bool = False) -> Node:
        """A field of this object (checked with `object` first); `MISSING` when absent."""
        if not isinstance(self.value, dict):
            raise self.fail("an object")
        step = f".{name}" if _IDENTIFIER.fullmatch(name) else f"[{json.dumps(name)}]"
        return Node(
            self.value.get(name, MISSING), self.path + step, self.source, self.error, secret
        )

    def items(self, *, optional: bool = False, nonempty: bool = False) -> list[Node]:
        """The elements of this array; when ``optional`` and absent, none."""
        if optional and not self.present:
            return []
        if not isinstance(self.value, list) or (nonempty and not self.value):
            raise self.fail("a non-empty array" if nonempty else "an array")
        return [replace(self, value=v, path=f"{self.path}[{n}]") for n, v in enumerate(self.value)]

    def text(
        self,
        expected: str = "a non-empty string",
        valid: Callable[[str], Any] = bool,
        default: str | None = None,
    ) -> str:
        """This string, which ``valid`` accepts (by default: any but the empty one)."""
        if default is not None and not self.present:
            return default
        if not isinstance(self.value, str) or not valid(self.value):
            raise self.fail(expected)
        return self.value

    def integer(self, low: int, high: int, default: int | None = None) -> int:
        """This whole number from ``low`` to ``high`` (true and false are not numbers)."""
        if default is not None and not self.present:
            return default
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(f"an integer from {low} to {high}")
        return value

    def flag(self, default: bool | None = None) -> bool:
        """This true or false."""
        if default is not None and not self.present:
            return default
        if not isinstance(self.value, bool):
            raise self.fail("true or false")
        return self.value

    def choice(self, options: tuple[str, ...], default: str | None = None) -> str:
        """This string, one of ``options``."""
        if default is not None and not self.present:
            return default
        if self.value not in options:
            raise self.fail(" or ".join(_quote(o) for o in options))
        return str(self.value)

    def once(self, *taken: Container[str]) -> Node:
        """This node, refused when it is a string an earlier entry in ``taken`` already has."""
        if isinstance(self.value, str) and any(self.value in seen for seen in taken):
            raise self.fail("each value once", f"{describe(self.value, self.secret)} listed twice")
        return self


def describe(value: Any, secret: bool = False) -> str:
    """How an error message shows a value: scalars quoted unless secret, containers by kind."""
    if value is MISSING:
        return "nothing"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if isinstance(value, str) and (secret or not value):
        return "a string" if value else "an empty string"
    if secret and value is not None and not isinstance(value, bool):
        return "a number"
    return _quote(value)


def _quote(value: Any) -> str:
    if isinstance(value, str) and len(value) > _SHOWN:
        return json.dumps(value[:_SHOWN]) + "…"
    return json.dumps(value)


def _names(names: Iterable[str]) -> str:
    return ", ".join(_quote(n) for n in names)
