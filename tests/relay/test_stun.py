"""The STUN codec, checked against aioice's independent codec and against malformed input."""

from __future__ import annotations

import contextlib
import random

import pytest
from aioice import stun as aioice_stun

from turnpike.relay import stun
from turnpike.relay.auth import long_term_key
from turnpike.relay.stun import Attr, Class, Method

KEY = long_term_key("1700000000:alice", "example.org", "secret-password")


def test_message_type_round_trip() -> None:
    for method in Method:
        for cls in Class:
            assert stun.split_type(stun.message_type(method, cls)) == (method, cls)
    # Known values from RFC 8489/8656: Binding request 0x0001, Allocate error 0x0113,
    # Data indication 0x0017, ChannelBind success 0x0109.
    assert stun.message_type(Method.BINDING, Class.REQUEST) == 0x0001
    assert stun.message_type(Method.ALLOCATE, Class.ERROR) == 0x0113
    assert stun.message_type(Method.DATA, Class.INDICATION) == 0x0017
    assert stun.message_type(Method.CHANNEL_BIND, Class.SUCCESS) == 0x0109


def test_parses_aioice_request_with_integrity_and_fingerprint() -> None:
    theirs = aioice_stun.Message(aioice_stun.Method.ALLOCATE, aioice_stun.Class.REQUEST)
    theirs.attributes["USERNAME"] = "1700000000:alice"
    theirs.attributes["REALM"] = "example.org"
    theirs.attributes["NONCE"] = b"nonce-value"
    theirs.attributes["REQUESTED-TRANSPORT"] = 0x11000000
    theirs.attributes["LIFETIME"] = 600
    theirs.add_message_integrity(KEY)
    ours = stun.parse(bytes(theirs))
    assert (ours.method, ours.cls) == (Method.ALLOCATE, Class.REQUEST)
    assert ours.transaction_id == theirs.transaction_id
    assert ours.get(Attr.USERNAME) == "1700000000:alice"
    assert ours.get(Attr.NONCE) == "nonce-value"
    assert ours.get(Attr.REQUESTED_TRANSPORT) == 17
    assert ours.get(Attr.LIFETIME) == 600
    assert ours.has_fingerprint
    assert ours.verify_integrity(KEY)
    assert not ours.verify_integrity(KEY[:-1] + b"x")
    assert not ours.unknown_required


@pytest.mark.parametrize("peer", [("192.0.2.1", 3478), ("2001:db8::1", 65535)])
def test_aioice_parses_our_response(peer: tuple[str, int]) -> None:
    msg = stun.Message(Method.ALLOCATE, Class.SUCCESS)
    msg.attributes[Attr.XOR_RELAYED_ADDRESS] = peer
    msg.attributes[Attr.XOR_MAPPED_ADDRESS] = ("198.51.100.7", 1234)
    msg.attributes[Attr.LIFETIME] = 600
    msg.attributes[Attr.ERROR_CODE] = (438, "Stale Nonce")
    data = msg.encode(KEY, fingerprint=True)
    theirs = aioice_stun.parse_message(data)
    assert theirs.attributes["XOR-RELAYED-ADDRESS"] == peer
    assert theirs.attributes["XOR-MAPPED-ADDRESS"] == ("198.51.100.7", 1234)
    assert theirs.attributes["LIFETIME"] == 600
    assert theirs.attributes["ERROR-CODE"] == (438, "Stale Nonce")
    assert theirs.check_message_integrity(KEY)
    # and our own parser agrees with itself
    again = stun.parse(data)
    assert again.get(Attr.XOR_RELAYED_ADDRESS) == peer
    assert again.error_code == 438
    assert again.verify_integrity(KEY)


@pytest.mark.parametrize("fingerprint", [False, True])
def test_length_field_covers_integrity_with_or_without_fingerprint(fingerprint: bool) -> None:
    msg = stun.Message(Method.ALLOCATE, Class.SUCCESS)
    msg.attributes[Attr.LIFETIME] = 600
    data = msg.encode(KEY, fingerprint=fingerprint)
    assert int.from_bytes(data[2:4], "big") == len(data) - stun.HEADER_LENGTH
    theirs = aioice_stun.parse_message(data)
    assert theirs.check_message_integrity(KEY)
    assert stun.parse(data).verify_integrity(KEY)


def test_repeated_peer_addresses_and_unknown_attributes() -> None:
    msg = stun.Message(Method.CREATE_PERMISSION, Class.REQUEST)
    msg.peer_addresses = [("203.0.113.1", 1), ("203.0.113.2", 2)]
    msg.attributes[0x7777] = b"\x01\x02\x03"  # unknown, comprehension-required
    msg.attributes[0xC001] = b"optional"  # unknown, comprehension-optional: ignored
    parsed = stun.parse(msg.encode())
    assert parsed.peer_addresses == [("203.0.113.1", 1), ("203.0.113.2", 2)]
    assert parsed.unknown_required == [0x7777]


def test_attributes_after_integrity_are_ignored() -> None:
    msg = stun.Message(Method.REFRESH, Class.REQUEST)
    msg.attributes[Attr.LIFETIME] = 10
    data = bytearray(msg.encode(KEY))
    # Append a LIFETIME after MESSAGE-INTEGRITY and fix the header length.
    data += b"\x00\x0d\x00\x04\x00\x00\x00\x00"
    data[2:4] = (len(data) - 20).to_bytes(2, "big")
    parsed = stun.parse(bytes(data))
    assert parsed.get(Attr.LIFETIME) == 10
    # The integrity is computed over what precedes it, so it still verifies.
    assert parsed.verify_integrity(KEY)


def test_classic_rfc3489_binding_has_no_cookie() -> None:
    data = bytes.fromhex("00010000") + bytes(range(16))
    msg = stun.parse(data)
    assert not msg.magic_cookie
    assert msg.transaction_id == bytes(range(16))


# Each malformed message, and the error it must be refused with: a message refused for an
# earlier reason than the one it is named after would pass for the wrong reason.
MALFORMED = {
    "short header": (b"\x00\x01\x00", "shorter than its header"),
    "length not multiple of 4": (
        bytes.fromhex("000100022112a442") + bytes(12) + b"\x00\x00",
        "not a multiple of 4",
    ),
    "length mismatch": (bytes.fromhex("000100082112a442") + bytes(12), "does not match"),
    "top bits set": (bytes.fromhex("c00100002112a442") + bytes(12), "top bits set"),
    "attribute overruns": (
        bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("00060010") + b"abcd",
        "value is truncated",
    ),
    "bad ipv4 address length": (
        bytes.fromhex("000300102112a442")
        + bytes(12)
        + bytes.fromhex("0012000c0001000011223344aabbccdd"),
        "invalid length for IPv4",
    ),
    "bad family": (  # XOR-PEER-ADDRESS with family 0x03, the message length exactly right
        bytes.fromhex("0003000c2112a442") + bytes(12) + bytes.fromhex("001200080003000011223344"),
        "unknown family",
    ),
    "short integrity": (
        bytes.fromhex("000300082112a442") + bytes(12) + bytes.fromhex("0008000411223344"),
        "MESSAGE-INTEGRITY must be 20 bytes",
    ),
    "bad utf-8 username": (
        bytes.fromhex("000300082112a442") + bytes(12) + bytes.fromhex("00060004fffefdfc"),
        "not UTF-8",
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_raises_value_error(name: str) -> None:
    data, reason = MALFORMED[name]
    with pytest.raises(ValueError, match=reason):
        stun.parse(data)


def test_wrong_fingerprint_is_rejected() -> None:
    data = bytearray(stun.Message(Method.BINDING, Class.REQUEST).encode(fingerprint=True))
    data[-1] ^= 0xFF
    with pytest.raises(ValueError, match="FINGERPRINT"):
        stun.parse(bytes(data))


def test_random_mutations_never_raise_anything_but_value_error() -> None:
    rng = random.Random(1234)
    msg = stun.Message(Method.ALLOCATE, Class.REQUEST)
    msg.attributes.update(
        {
            Attr.USERNAME: "1700000000:alice",
            Attr.REALM: "r",
            Attr.NONCE: "n",
            Attr.REQUESTED_TRANSPORT: 17,
            Attr.EVEN_PORT: 0x80,
        }
    )
    msg.peer_addresses = [("2001:db8::5", 9)]
    base = msg.encode(KEY, fingerprint=True)
    for _ in range(5000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        with contextlib.suppress(ValueError):
            stun.parse(bytes(data))


def _send(peer: tuple[str, int], payload: bytes, *, fingerprint: bool, df: bool) -> bytes:
    msg = stun.Message(Method.SEND, Class.INDICATION)
    msg.attributes[Attr.XOR_PEER_ADDRESS] = peer
    if df:
        msg.attributes[Attr.DONT_FRAGMENT] = True
    msg.attributes[Attr.DATA] = payload
    return msg.encode(fingerprint=fingerprint)


@pytest.mark.parametrize("fingerprint", [False, True])
@pytest.mark.parametrize("df", [False, True])
def test_lean_send_reader_agrees_with_the_codec(fingerprint: bool, df: bool) -> None:
    for size in range(6):  # every padding
        data = _send(("198.51.100.20", 40000 + size), b"x" * size, fingerprint=fingerprint, df=df)
        assert stun.parse_send_indication(data) == (("198.51.100.20", 40000 + size), b"x" * size)
    # aioice's Send indications (how its TURN client sends before a channel exists)
    theirs = aioice_stun.Message(aioice_stun.Method.SEND, aioice_stun.Class.INDICATION)
    theirs.attributes["XOR-PEER-ADDRESS"] = ("203.0.113.9", 5000)
    theirs.attributes["DATA"] = b"from aioice"
    assert stun.parse_send_indication(bytes(theirs)) == (("203.0.113.9", 5000), b"from aioice")


def test_lean_send_reader_leaves_everything_unusual_to_the_codec() -> None:
    plain = _send(("198.51.100.20", 9), b"abc", fingerprint=True, df=False)
    six = _send(("2001:db8::9", 9), b"abc", fingerprint=False, df=False)
    software = stun.Message(Method.SEND, Class.INDICATION)
    software.attributes.update({Attr.XOR_PEER_ADDRESS: ("198.51.100.20", 9), Attr.DATA: b"a"})
    software.attributes[Attr.SOFTWARE] = "client"
    unknown = stun.Message(Method.SEND, Class.INDICATION)
    unknown.attributes.update({Attr.XOR_PEER_ADDRESS: ("198.51.100.20", 9), Attr.DATA: b"a"})
    unknown.attributes[0x7777] = b"?"
    request = stun.Message(Method.SEND, Class.REQUEST, attributes=dict(software.attributes))
    for other in [
        six,  # IPv6 peer
        software.encode(),
        unknown.encode(),  # unknown comprehension-required: the codec path discards it
        request.encode(),
        plain[:-1] + bytes([plain[-1] ^ 1]),  # wrong FINGERPRINT
        plain[:-4],  # shorter than its length field says
    ]:
        assert stun.parse_send_indication(other) is None
    assert stun.parse(six).get(Attr.XOR_PEER_ADDRESS) == ("2001:db8::9", 9)
    assert stun.parse(unknown.encode()).unknown_required == [0x7777]


def test_lean_send_reader_never_accepts_what_the_codec_reads_otherwise() -> None:
    rng = random.Random(99)
    base = _send(("198.51.100.20", 3478), b"payload!", fingerprint=True, df=True)
    accepted = 0
    for _ in range(20000):
        data = bytearray(base)
        for _ in range(rng.randint(0, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data) + 1)]
        lean = stun.parse_send_indication(bytes(data))
        if lean is None:
            continue
        accepted += 1
        msg = stun.parse(bytes(data))  # must not raise: the lean reader accepted it
        assert (msg.method, msg.cls) == (Method.SEND, Class.INDICATION)
        assert lean == (msg.get(Attr.XOR_PEER_ADDRESS), msg.get(Attr.DATA))
        assert not msg.unknown_required
    assert accepted > 100  # unmutated and harmless mutations (payload bytes) do get through


@pytest.mark.parametrize("peer", [("192.0.2.1", 3478), ("2001:db8::1", 65535)])
def test_data_indication_is_what_the_codec_would_build(peer: tuple[str, int]) -> None:
    for size in range(6):
        tid = bytes(range(12))
        payload = bytes(range(size))
        lean = stun.data_indication(stun.xor_peer_attribute(peer, tid), tid, payload)
        msg = stun.Message(Method.DATA, Class.INDICATION, transaction_id=tid)
        msg.attributes[Attr.XOR_PEER_ADDRESS] = peer
        msg.attributes[Attr.DATA] = payload
        assert lean == msg.encode()
        theirs = aioice_stun.parse_message(lean)
        assert theirs.attributes["XOR-PEER-ADDRESS"] == peer
        assert theirs.attributes["DATA"] == payload
