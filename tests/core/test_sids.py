import re

import pytest

from turnpike.core import sids


def test_new_sid_shape_and_uniqueness() -> None:
    made = {sids.new_sid(sids.CALL) for _ in range(1000)}
    assert len(made) == 1000
    assert all(re.fullmatch(r"CA[0-9a-f]{32}", s) for s in made)


@pytest.mark.parametrize("prefix", ["", "A", "ABC", "ca", "1A"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="two capital letters"):
        sids.new_sid(prefix)


def test_is_sid() -> None:
    sid = sids.new_sid(sids.STREAM)
    assert sids.is_sid(sid) and sids.is_sid(sid, "MZ") and not sids.is_sid(sid, "CA")
    assert not sids.is_sid(sid + "0") and not sids.is_sid("MZ" + "g" * 32)
