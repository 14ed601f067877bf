"""A small CEL evaluator for the ``x-kubernetes-validations`` rules of custom resources.

It covers the part of CEL that Turnpike's CRD rules use: ``self`` and field selection, ``has()``,
``size()``, ``string()``, ``int()``, literals, ``! && || ?:``, comparisons, ``+ -``, ``in``, the
string methods ``matches`` (RE2 patterns free of RE2-only syntax, searched as CEL does),
``startsWith``, ``endsWith``, ``contains`` and ``size``, and the list macros ``all`` and
``exists``. Anything else raises CelError, so a rule outside the subset fails loudly in tests
rather than being silently accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


class CelError(ValueError):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+)|(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>&&|\|\||==|!=|<=|>=|[<>!?:().,+\-\[\]]))"
)


@dataclass
class _Tok:
    kind: str
    text: str


def _tokens(source: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        match = _TOKEN.match(source, pos)
        if not match or match.end() == pos:
            raise CelError(f"cannot parse CEL at {source[pos:]!r}")
        kind = match.lastgroup or "op"
        out.append(_Tok(kind, match.group(kind)))
        pos = match.end()
    out.append(_Tok("end", ""))
    return out


class _Absent:
    """A selected field that is not set: only ``has()`` may look at it."""


_ABSENT = _Absent()


Thunk = Callable[[], Any]


class _Parser:
    """Parses into closures, so ``&&``, ``||`` and ``?:`` short-circuit (and absorb errors in
    the branch they skip) as CEL does."""

    def __init__(self, source: str, this: Any) -> None:
        self.toks = _tokens(source)
        self.pos = 0
        self.this = this
        self.declared: set[str] = set()  # macro variables in scope while parsing
        self.bound: dict[str, Any] = {}  # their values while evaluating

    @contextmanager
    def _binding(self, name: str, value: Any) -> Iterator[None]:
        saved = self.bound.get(name, _ABSENT)
        self.bound[name] = value
        try:
            yield
        finally:
            if saved is _ABSENT:
                del self.bound[name]
            else:
                self.bound[name] = saved

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def take(self, text: str | None = None) -> _Tok:
        tok = self.toks[self.pos]
        if text is not None and tok.text != text:
            raise CelError(f"expected {text!r}, found {tok.text!r}")
        self.pos += 1
        return tok

    def parse(self) -> Thunk:
        value = self.ternary()
        if self.peek().kind != "end":
            raise CelError(f"unexpected {self.peek().text!r}")
        return value

    def ternary(self) -> Thunk:
        cond = self.or_()
        if self.peek().text == "?":
            self.take("?")
            yes = self.ternary()
            self.take(":")
            no = self.ternary()
            return lambda: yes() if _bool(cond()) else no()
        return cond

    def or_(self) -> Thunk:
        value = self.and_()
        while self.peek().text == "||":
            self.take()
            left, right = value, self.and_()
            value = lambda left=left, right=right: _logic(left, right, True)  # noqa: E731
        return value

    def and_(self) -> Thunk:
        value = self.compare()
        while self.peek().text == "&&":
            self.take()
            left, right = value, self.compare()
            value = lambda left=left, right=right: _logic(left, right, False)  # noqa: E731
        return value

    def compare(self) -> Thunk:
        left = self.additive()
        op = self.peek().text
        if op in ("==", "!=", "<", "<=", ">", ">=") or (op == "in" and self.peek().kind == "name"):
            self.take()
            right = self.additive()
            return lambda: _compare(op, left(), right())
        return left

    def additive(self) -> Thunk:
        value = self.unary()
        while self.peek().text in ("+", "-"):
            op = self.take().text
            left, right = value, self.unary()
            value = lambda left=left, right=right, op=op: _arith(op, left(), right())  # noqa: E731
        return value

    def unary(self) -> Thunk:
        if self.peek().text == "!":
            self.take()
            inner = self.unary()
            return lambda: not _bool(inner())
        if self.peek().text == "-":
            self.take()
            inner = self.unary()
            return lambda: -inner()
        return self.postfix()

    def postfix(self) -> Thunk:
        value = self.primary()
        while self.peek().text in (".", "["):
            if self.take().text == ".":
                name = self.take().text
                if self.peek().text == "(":
                    value = self.method(value, name)
                    continue
                value = lambda value=value, name=name: _select(value(), name)  # noqa: E731
            else:
                index = self.ternary()
                self.take("]")
                value = lambda value=value, index=index: _index(value(), index())  # noqa: E731
        return value

    def method(self, target: Thunk, name: str) -> Thunk:
        self.take("(")
        if name in ("all", "exists"):
            var = self.take().text
            self.take(",")
            self.declared.add(var)
            body = self.ternary()
            self.declared.discard(var)
            self.take(")")
            return lambda: self._macro(name, var, _present(target()), body)
        args = []
        while self.peek().text != ")":
            args.append(self.ternary())
            if self.peek().text == ",":
                self.take()
        self.take(")")
        if name not in _METHODS or len(args) != _METHODS[name][0]:
            raise CelError(f"unsupported CEL method {name!r} with {len(args)} argument(s)")
        call = _METHODS[name][1]
        return lambda: call(_present(target()), *(_present(a()) for a in args))

    def _macro(self, name: str, var: str, items: Any, body: Thunk) -> bool:
        if not isinstance(items, list):
            raise CelError(f"{name}() needs a list, got {items!r}")
        results = []
        for item in items:
            with self._binding(var, item):
                results.append(_bool(body()))
        return all(results) if name == "all" else any(results)

    def primary(self) -> Thunk:
        tok = self.take()
        if tok.kind == "num":
            number = int(tok.text)
            return lambda: number
        if tok.kind == "str":
            text = tok.text[1:-1].encode().decode("unicode_escape")
            return lambda: text
        if tok.text == "(":
            value = self.ternary()
            self.take(")")
            return value
        if tok.text == "[":
            items = []
            while self.peek().text != "]":
                items.append(self.ternary())
                if self.peek().text == ",":
                    self.take()
            self.take("]")
            return lambda: [item() for item in items]
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                flag = tok.text == "true"
                return lambda: flag
            if tok.text == "null":
                return lambda: None
            if tok.text == "self":
                return lambda: self.this
            if tok.text in self.declared:
                name = tok.text
                return lambda: self.bound[name]
            if tok.text in ("string", "int") and self.peek().text == "(":
                self.take("(")
                inner = self.ternary()
                self.take(")")
                convert = _to_string if tok.text == "string" else _to_int
                return lambda: convert(_present(inner()))
            if tok.text in ("has", "size"):
                self.take("(")
                inner = self.postfix() if tok.text == "has" else self.ternary()
                self.take(")")
                if tok.text == "has":
                    return lambda: not isinstance(inner(), _Absent)
                return lambda: len(_present(inner()))
        raise CelError(f"unsupported CEL at {tok.text!r}")


def _matches(text: Any, pattern: Any) -> bool:
    if not isinstance(text, str) or not isinstance(pattern, str):
        raise CelError("matches() needs a string and a pattern")
    return re.search(pattern, text) is not None


def _string_method(op: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    def call(text: Any, other: Any) -> bool:
        if not isinstance(text, str) or not isinstance(other, str):
            raise CelError("no such overload: string methods take strings")
        return op(text, other)

    return call


_METHODS: dict[str, tuple[int, Callable[..., Any]]] = {
    "matches": (1, _matches),
    "startsWith": (1, _string_method(str.startswith)),
    "endsWith": (1, _string_method(str.endswith)),
    "contains": (1, _string_method(str.__contains__)),
    "size": (0, len),
}


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    raise CelError(f"no such overload: string({value!r})")


def _to_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CelError(f"no such overload: int({value!r})") from None


def _logic(left: Thunk, right: Thunk, is_or: bool) -> bool:
    try:
        first: bool | CelError = _bool(left())
    except CelError as exc:
        first = exc
    if first is is_or:
        return is_or
    second = _bool(right())
    if second is is_or:
        return is_or
    if isinstance(first, CelError):
        raise first
    return second


def _compare(op: str, left: Any, right: Any) -> bool:
    _present(left)
    _present(right)
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "in":
        return left in right
    try:
        return bool(
            {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
        )
    except TypeError as exc:
        raise CelError(f"no such overload: {exc}") from None


def _arith(op: str, left: Any, right: Any) -> Any:
    _present(left)
    _present(right)
    return left + right if op == "+" else left - right


def _index(value: Any, index: Any) -> Any:
    _present(value)
    try:
        return value[index]
    except (KeyError, IndexError, TypeError):
        raise CelError(f"no such key: {index!r}") from None


def _select(value: Any, field: str) -> Any:
    if isinstance(value, _Absent):
        raise CelError(f"no such key: {field}")
    if not isinstance(value, dict):
        raise CelError(f"{type(value).__name__} has no field {field!r}")
    return value.get(field, _ABSENT)


def _present(value: Any) -> Any:
    if isinstance(value, _Absent):
        raise CelError("no such key")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise CelError(f"expected a bool, got {value!r}")
    return value


def evaluate(rule: str, this: Any) -> Any:
    return _Parser(rule, this).parse()()
