import pytest

from turnpike.core.credentials import (
    RestUsername,
    issue_credential,
    make_username,
    parse_username,
    turn_password,
)


def test_known_answer() -> None:
    assert turn_password("north", "1266890800:mbzrxpgjys") == "nbRcrnq5h6xXhyNhlwk+lDLvVVo="
    assert turn_password(b"north", "1266890800:mbzrxpgjys") == "nbRcrnq5h6xXhyNhlwk+lDLvVVo="


def test_password_is_padded_base64_of_twenty_bytes() -> None:
    password = turn_password("s", "1:u")
    assert len(password) == 28 and password.endswith("=")


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("1266890800:mbzrxpgjys", RestUsername(1266890800, "mbzrxpgjys")),
        ("mbzrxpgjys:1266890800", RestUsername(1266890800, "mbzrxpgjys")),
        ("1266890800", RestUsername(1266890800, "")),
        ("1700000000:AC00:tok", RestUsername(1700000000, "AC00:tok")),
        ("AC00:tok:1700000000", RestUsername(1700000000, "AC00:tok")),
    ],
)
def test_parse_username(username: str, expected: RestUsername) -> None:
    assert parse_username(username) == expected


def test_parse_username_custom_separator() -> None:
    assert parse_username("1266890800-bob", "-") == RestUsername(1266890800, "bob")
    with pytest.raises(ValueError, match="no expiry"):
        parse_username("1266890800:bob", "-")


@pytest.mark.parametrize("username", ["", "bob", "bob:alice", ":", "١٢٣:bob"])
def test_parse_username_rejects(username: str) -> None:
    with pytest.raises(ValueError, match="expiry"):
        parse_username(username)


def test_make_and_issue_round_trip() -> None:
    assert make_username(5, "u") == "5:u"
    assert make_username(5, "") == "5"
    cred = issue_credential("north", "k1", "mbzrxpgjys", 100, now=1266890700.9)
    assert cred.username == "1266890800:mbzrxpgjys"
    assert cred.password == "nbRcrnq5h6xXhyNhlwk+lDLvVVo="
    assert (cred.expiry, cred.key_id) == (1266890800, "k1")
    with pytest.raises(ValueError, match="ttl"):
        issue_credential("north", "k1", "u", 0, now=0)
