"""The SIP layer's pure parts, per RFC section: message codec (RFC 3261 §7, §20), SDP offer/answer
(RFC 3264), dialogs (§12), the numbers file."""

from __future__ import annotations

import hashlib
import json

import pytest

from turnpike.core.accounts import Accounts
from turnpike.streamgw.sip import sdp
from turnpike.streamgw.sip.dialog import Dialog
from turnpike.streamgw.sip.digest import Digest
from turnpike.streamgw.sip.message import (
    MAX_MESSAGE,
    SipError,
    parse,
    parse_name_addr,
    parse_via,
    response_to,
    split_stream,
    uri_host_port,
    uri_user,
)
from turnpike.streamgw.sip.numbers import NumbersError, normalise, parse_numbers

ACCOUNT = "AC" + "1" * 32

INVITE = (
    b"INVITE sip:+15550002222@gw.example;user=phone SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5062;branch=z9hG4bKold\r\n"
    b'f: "Alice, A." <sip:+15550001111@192.0.2.1>;tag=1928301774\r\n'
    b"t: <sip:+15550002222@gw.example>\r\n"
    b"i: a84b4c76e66710@pc33\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"m: <sip:alice@192.0.2.1:5060>\r\n"
    b"Record-Route: <sip:p2.example;lr>,\r\n <sip:p1.example;lr>\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n\r\nv=0\r\nextra"
)


def test_a_request_with_compact_folded_and_list_headers() -> None:
    message = parse(INVITE)
    assert message.method == "INVITE" and message.uri.startswith("sip:+1555")  # type: ignore[union-attr]
    assert message.call_id == "a84b4c76e66710@pc33"
    assert message.cseq == (314159, "INVITE")
    assert len(message.get_all("Via")) == 2
    assert message.get_all("Record-Route") == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert message.body == b"v=0\r"  # Content-Length counts, the rest is not this message's
    sender = parse_name_addr(message.require("From"))
    assert sender.display == '"Alice, A."' and sender.param("tag") == "1928301774"
    via = parse_via(message.get_all("Via")[1])
    assert (via.transport, via.host, via.port, via.param("branch")) == (
        "TCP",
        "2001:db8::1",
        5062,
        "z9hG4bKold",
    )
    assert uri_user(message.uri or "") == "+15550002222"
    assert uri_host_port("sip:u@[::1]:5070;transport=udp") == ("::1", 5070)
    assert uri_host_port("sip:p1.example;lr") == ("p1.example", 5060)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n", "no blank line"),
        (b"INVITE sip:x SIP/3.0\r\n\r\n", "unsupported version"),
        (b"INVITE  SIP/2.0\r\n\r\n", "malformed request line"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "malformed status code"),
        (INVITE.replace(b"i: a84b4c76e66710@pc33\r\n", b""), "missing Call-ID"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 1 BYE"), "does not match"),
        (INVITE.replace(b"CSeq: 314159", b"CSeq: 99999999999"), "malformed CSeq"),
        (INVITE.replace(b"l: 4", b"l: 400"), "shorter than Content-Length"),
        (INVITE.replace(b"c: application", b"bad header application"), "malformed header"),
        (INVITE.replace(b"INVITE sip", b"INVITE sip", 1) + b"x" * MAX_MESSAGE, "larger than"),
        (b"\xff\xfe INVITE\r\n\r\n", "not UTF-8"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data: bytes, error: str) -> None:
    with pytest.raises(SipError, match=error):
        parse(data)


def test_stream_framing_by_content_length() -> None:
    one = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 3\r\n\r\nabc"
    buffer = bytearray(b"\r\n\r\n" + one + one[:10])
    assert split_stream(buffer) == one
    assert split_stream(buffer) is None and buffer == bytearray(one[:10])
    with pytest.raises(SipError, match="needs Content-Length"):
        split_stream(bytearray(b"OPTIONS sip:x SIP/2.0\r\n\r\n"))
    with pytest.raises(SipError, match="larger than"):
        split_stream(bytearray(b"X" * (MAX_MESSAGE + 1)))


def test_a_response_copies_the_transaction_headers_and_adds_the_to_tag() -> None:
    response = response_to(parse(INVITE), 200, to_tag="t1")
    text = bytes(response).decode()
    assert text.startswith("SIP/2.0 200 OK\r\n")
    assert "To: <sip:+15550002222@gw.example>;tag=t1" in text
    assert text.count("Via: ") == 2 and "Record-Route" in text
    assert "Record-Route" not in bytes(response_to(parse(INVITE), 404, to_tag="t")).decode()
    assert "tag=" not in bytes(response_to(parse(INVITE), 100, to_tag="t")).decode().split("To:")[1]


OFFER = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 18 8 0 96\r\na=rtpmap:18 G729/8000\r\n"
    "a=rtpmap:96 telephone-event/8000\r\n"
    "a=ptime:30\r\na=sendonly\r\n"
    "m=video 4002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
)


def test_the_answer_picks_the_first_g711_keeps_the_dtmf_type_and_mirrors_direction() -> None:
    body, negotiated = sdp.answer(sdp.parse(OFFER.encode()), "198.51.100.5", 20000, (7, 2))
    text = body.decode()
    assert negotiated == sdp.Negotiated("PCMA", 8, 96, ("192.0.2.1", 4000), "sendonly", 30)
    assert "m=audio 20000 RTP/AVP 8 96\r\n" in text
    assert "a=rtpmap:96 telephone-event/8000" in text and "a=ptime:30" in text
    assert "a=recvonly" in text  # §6.1: the answer to sendonly is recvonly
    assert "m=video 0 RTP/AVP 97" in text  # declined, in the same position (§6)
    assert "o=turnpike 7 2 IN IP4 198.51.100.5" in text and "c=IN IP4 198.51.100.5" in text


def test_ipv6_media_level_connection_and_hold() -> None:
    offer = (
        "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
        "m=audio 5004 RTP/AVP 0\r\nc=IN IP6 2001:db8::9\r\n"
    )
    body, negotiated = sdp.answer(sdp.parse(offer.encode()), "2001:db8::5", 20002)
    assert negotiated.remote == ("2001:db8::9", 5004) and negotiated.dtmf_pt is None
    assert "c=IN IP6 2001:db8::5" in body.decode()
    held = offer.replace("c=IN IP6 2001:db8::9\r\n", "")  # only the session's 0.0.0.0: on hold
    assert sdp.answer(sdp.parse(held.encode()), "192.0.2.5", 1)[1].remote is None
    inactive = offer + "a=inactive\r\n"
    _, quiet = sdp.answer(sdp.parse(inactive.encode()), "192.0.2.5", 1)
    assert quiet.direction == "inactive" and quiet.remote is None


def test_no_common_codec_and_bad_sdp() -> None:
    g729 = OFFER.replace("18 8 0 96", "18")
    with pytest.raises(sdp.NoCommonCodec):
        sdp.answer(sdp.parse(g729.encode()), "192.0.2.5", 1)
    for bad, error in (
        ("v=0\r\n", "no m= line"),
        ("v=0\r\nc=IN IP4 nonsense\r\nm=audio 1 RTP/AVP 0\r\n", "not an IP address"),
        ("v=0\r\nc=IN IP6 192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\n", "does not match"),
        ("v=0\r\nm=audio x RTP/AVP 0\r\n", "malformed m= line"),
        ("garbage\r\n", "malformed SDP line"),
    ):
        with pytest.raises(sdp.SdpError, match=error):
            sdp.answer(sdp.parse(bad.encode()), "192.0.2.5", 1)


def test_our_offer_and_the_answer_in_the_ack() -> None:
    offer = sdp.parse(sdp.offer("192.0.2.5", 30000))
    assert offer.media[0].formats == ["0", "101"]
    answer = (
        "v=0\r\nc=IN IP4 192.0.2.9\r\nm=audio 7000 RTP/AVP 0 101\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
    )
    settled = sdp.settle_answer(sdp.parse(answer.encode()))
    assert (settled.codec, settled.dtmf_pt, settled.remote) == ("PCMU", 101, ("192.0.2.9", 7000))


def test_dialog_requests_follow_the_route_set() -> None:
    dialog = Dialog.from_invite(parse(INVITE), "ourtag")
    assert dialog.key == ("a84b4c76e66710@pc33", "ourtag", "1928301774")
    assert dialog.next_hop() == ("p2.example", 5060)  # loose routing: the first route
    bye = dialog.request("BYE", "SIP/2.0/UDP 198.51.100.5:5060", "<sip:198.51.100.5>")
    text = bytes(bye).decode()
    assert text.startswith("BYE sip:alice@192.0.2.1:5060 SIP/2.0\r\n")
    assert text.index("Route: <sip:p2.example;lr>") < text.index("Route: <sip:p1.example;lr>")
    assert "From: <sip:+15550002222@gw.example>;tag=ourtag" in text
    assert f"CSeq: {dialog.local_seq} BYE" in text
    later = parse(INVITE.replace(b"CSeq: 314159", b"CSeq: 314158"))
    assert not dialog.accepts_seq(later)  # §12.2.2: out of order


def test_numbers_file() -> None:
    doc = {
        "numbers": [
            {
                "number": "+15550002222",
                "accountSid": ACCOUNT,
                "twiml": "<Response/>",
                "voiceUrl": None,  # null: as if left out
                "statusCallback": None,
            },
            {
                "number": "+15550003333",
                "accountSid": ACCOUNT,
                "voiceUrl": "https://app.example/voice",
                "voiceMethod": "GET",
            },
        ]
    }
    numbers = parse_numbers(json.dumps(doc).encode(), "numbers.json")
    assert numbers.lookup("15550002222") is numbers.routes["+15550002222"]
    assert numbers.lookup("%2B1-555-000-3333") is numbers.routes["+15550003333"]
    assert numbers.lookup("alice") is None and numbers.lookup(None) is None
    assert normalise("+1 (555) 000.2222") == "+15550002222"
    for entry, error in (
        ({"number": "5550002222", "accountSid": ACCOUNT, "twiml": "<Response/>"}, "E.164"),
        ({"number": "+15550002222", "accountSid": "AC1", "twiml": "<Response/>"}, "accountSid"),
        ({"number": "+15550002222", "accountSid": ACCOUNT}, "exactly one"),
        (
            {"number": "+15550002222", "accountSid": ACCOUNT, "twiml": "<Nope/>"},
            r"\$\.numbers\[0\]\.twiml",
        ),
        (
            {"number": "+15550002222", "accountSid": ACCOUNT, "voiceUrl": "ftp://x/"},
            "http or https",
        ),
        (
            {"number": "+15550002222", "accountSid": ACCOUNT, "voiceUrl": "http://[::1/"},
            r'voiceUrl: expected an http or https URL, found "http://\[::1/"',
        ),
        ({"number": "+15550002222", "accountSid": ACCOUNT, "twiml": "", "x": 1}, 'found "x"'),
    ):
        with pytest.raises(NumbersError, match=error):
            parse_numbers(json.dumps({"numbers": [entry]}).encode(), "numbers.json")
    with pytest.raises(NumbersError, match="listed twice"):
        parse_numbers(json.dumps({"numbers": [doc["numbers"][0]] * 2}).encode(), "n.json")


def _digest_response(user: str, password: str, realm: str, nonce: str, uri: str) -> str:
    """RFC 2617 §3.2.2 with qop=auth, written out independently of the server's code."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"INVITE:{uri}")
    return md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}")


def test_digest_authentication_proves_one_account() -> None:
    doc = {
        "accounts": [
            {
                "sid": ACCOUNT,
                "authToken": "t",
                "sipCredentials": [{"username": "pbx1", "password": "s3cret"}],
            }
        ]
    }
    accounts = Accounts.parse(json.dumps(doc))
    digest = Digest("turnpike", lambda: accounts)
    challenge = digest.challenge()
    assert challenge.startswith('Digest realm="turnpike", nonce="') and 'qop="auth"' in challenge
    nonce = challenge.split('nonce="')[1].split('"')[0]
    uri = "sip:+15550002222@gw.example"

    def invite(user: str, password: str, realm: str = "turnpike", nonce: str = nonce) -> bytes:
        response = _digest_response(user, password, realm, nonce, uri)
        auth = (
            f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, cnonce="c0ffee", qop=auth, nc=00000001'
        )
        return INVITE.replace(
            b"c: application", f"Authorization: {auth}\r\nc: application".encode()
        )

    proven = digest.check(parse(invite("pbx1", "s3cret")))
    assert proven.account is not None and proven.account.sid == ACCOUNT
    for bad in (
        invite("pbx1", "wrong"),
        invite("nobody", "s3cret"),
        invite("pbx1", "s3cret", realm="elsewhere"),
        invite("pbx1", "s3cret", nonce=nonce[:-2] + "AA"),
    ):
        outcome = digest.check(parse(bad))
        assert outcome.account is None and outcome.presented and not outcome.stale
    assert not digest.check(parse(INVITE)).presented  # no credentials: challenge
