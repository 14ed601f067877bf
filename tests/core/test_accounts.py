import base64
import json

import pytest

from turnpike.core.accounts import Accounts, AccountsError

AC = "AC" + "a" * 32
SK = "SK" + "b" * 32


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def accounts() -> Accounts:
    doc = {"accounts": [{"sid": AC, "authToken": "tok", "apiKeys": [{"sid": SK, "secret": "s"}]}]}
    return Accounts.parse(json.dumps(doc))


def test_authenticate_variants(accounts: Accounts) -> None:
    by_token = accounts.authenticate(basic(AC, "tok"))
    assert by_token is not None and by_token.account.sid == AC and by_token.sid == AC
    by_key = accounts.authenticate(basic(SK, "s"))
    assert by_key is not None and by_key.account.sid == AC and by_key.sid == SK
    for header in [None, "", basic(AC, "nope"), basic(SK, "tok"), "Bearer x", "Basic !!!"]:
        assert accounts.authenticate(header) is None


def test_tokens_not_in_repr(accounts: Accounts) -> None:
    assert "tok" not in repr(accounts.get(AC))


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ("{", "not valid JSON"),
        ({"accounts": [{"sid": "AC1", "authToken": "t"}]}, "32 hex"),
        ({"accounts": [{"sid": AC, "authToken": ""}]}, "authToken"),
        ({"accounts": [{"sid": AC, "authToken": "t"}, {"sid": AC, "authToken": "u"}]}, "twice"),
        ({"accounts": [{"sid": AC, "authToken": "t", "apiKeys": [{"sid": SK}]}]}, "secret"),
    ],
)
def test_errors(doc: object, problem: str) -> None:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(AccountsError, match=problem) as info:
        Accounts.parse(text, "accounts.json")
    assert str(info.value).startswith("accounts.json: ")
