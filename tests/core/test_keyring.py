import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from turnpike.core.credentials import turn_password
from turnpike.core.filewatch import FileWatcher
from turnpike.core.keyring import Key, Keyring, KeyringError, parse_keyring


def doc(*keys: tuple[str, str, bool]) -> str:
    return json.dumps({"keys": [{"id": i, "secret": s, "signing": g} for i, s, g in keys]})


def test_parse_valid() -> None:
    ring = Keyring.parse(doc(("k1", "old", False), ("k2", "new", True)), "ring.json")
    assert ring.ids == ("k1", "k2")
    assert ring.signing_key.id == "k2"
    assert ring.secrets == (b"new", b"old")
    assert ring.status() == {"keys": ["k1", "k2"], "signing": "k2"}
    assert Keyring.parse(ring.to_json()) == ring


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        (
            b'{"keys": [{"id": "k1", "secret": "\xff"}]}',
            "not valid JSON (cannot decode the text at byte",
        ),
        ("[]", "$: expected an object, found an empty array"),
        ('{"keys": []}', "$.keys: expected a non-empty array, found an empty array"),
        (
            doc(("a", "x", True), ("b", "y", True)),
            '$.keys: expected exactly one key with "signing": true, found two or more signing keys',
        ),
        (doc(("a", "x", False)), "no signing key"),
        (doc(("a", "", True)), "$.keys[0].secret: expected a non-empty string, found an empty"),
        (doc(("", "x", True)), "$.keys[0].id: expected a non-empty string, found an empty string"),
        (
            doc(("a", "x", True), ("a", "y", False)),
            '$.keys[1].id: expected each value once, found "a" listed twice',
        ),
        (
            '{"keys": [{"id": "a", "secret": "x", "signing": "yes"}]}',
            '$.keys[0].signing: expected true or false, found "yes"',
        ),
        (
            '{"keys": [{"id": "a", "secret": "x", "signing": true, "sign": 1}]}',
            '$.keys[0]: expected only the fields "id", "secret", "signing", found "sign"',
        ),
        ('{"keys": ["a"]}', '$.keys[0]: expected an object, found "a"'),
        ('{"keys": [{"id": "a", "signing": true}]}', "$.keys[0].secret: expected a non-empty"),
    ],
)
def test_validation_errors_name_file_and_problem(text: str | bytes, problem: str) -> None:
    with pytest.raises(KeyringError) as info:
        Keyring.parse(text, "/etc/turnpike/keyring.json")
    assert str(info.value).startswith("/etc/turnpike/keyring.json: ")
    assert problem in str(info.value)


def test_secret_never_in_repr() -> None:
    ring = Keyring.generate("k9")
    assert ring.signing_key.secret not in repr(ring)
    assert ring.signing_key.secret not in str(ring.status())
    assert len(ring.signing_key.secret) >= 40


def test_issue_uses_signing_key() -> None:
    ring = Keyring((Key("old", "north", False), Key("new", "south", True)))
    cred = ring.issue("bob", 60, now=1000)
    assert cred.key_id == "new"
    assert cred.password == turn_password("south", "1060:bob")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_watcher_reloads_on_change(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(doc(("k1", "a", True)))
    seen: list[Keyring] = []
    watcher = FileWatcher(path, parse_keyring, interval=0.02, on_change=seen.append)
    assert watcher.current.ids == ("k1",)
    async with watcher:
        write_atomic(path, doc(("k1", "a", False), ("k2", "b", True)))
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
    assert watcher.current.signing_key.id == "k2"
    assert [r.ids for r in seen] == [("k1", "k2")]


def test_watcher_follows_kubelet_symlink_swap(tmp_path: Path) -> None:
    """kubelet: keyring.json -> ..data/keyring.json, ..data -> ..2026_01; update repoints ..data."""
    mount = tmp_path / "mount"
    mount.mkdir()
    first = mount / "..2026_01"
    first.mkdir()
    (first / "keyring.json").write_text(doc(("k1", "a", True)))
    (mount / "..data").symlink_to(first.name)
    (mount / "keyring.json").symlink_to("..data/keyring.json")
    watcher = FileWatcher(mount / "keyring.json", parse_keyring)
    assert not watcher.check()

    second = mount / "..2026_02"
    second.mkdir()
    (second / "keyring.json").write_text(doc(("k1", "a", False), ("k2", "b", True)))
    (mount / "..data_tmp").symlink_to(second.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    assert watcher.check()
    assert watcher.current.signing_key.id == "k2"
    assert watcher.reloads == 1


def test_broken_file_keeps_last_good(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(doc(("k1", "north", True)))
    watcher = FileWatcher(path, parse_keyring)
    with caplog.at_level(logging.ERROR):
        write_atomic(path, doc(("k1", "north", True), ("k2", "south", True)))
        assert not watcher.check()
    assert watcher.current.ids == ("k1",)
    assert watcher.errors == 1
    assert "two or more signing keys" in caplog.text
    assert str(path) in caplog.text
    assert "north" not in caplog.text and "south" not in caplog.text
    # a later good file is taken again
    write_atomic(path, doc(("k3", "east", True)))
    assert watcher.check()
    assert watcher.current.ids == ("k3",)


def test_missing_file_is_not_fatal_after_start(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(doc(("k1", "a", True)))
    watcher = FileWatcher(path, parse_keyring)
    path.unlink()
    assert not watcher.check()
    assert watcher.current.ids == ("k1",)


def test_broken_file_at_start_raises(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text("not json")
    with pytest.raises(KeyringError, match="keyring.json: not valid JSON"):
        FileWatcher(path, parse_keyring)
