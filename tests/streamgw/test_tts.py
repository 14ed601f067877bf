"""The `<Say>` engines: espeak-ng voice mapping, `command:` and `http:` engines, the cache."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from support import free_port, require_tool
from support.media import RtpPeer
from support.streamgw import MakeGateway
from twilio.twiml.voice_response import VoiceResponse

from turnpike.streamgw import g711, twiml
from turnpike.streamgw.convert import AudioConverter
from turnpike.streamgw.tts import Command, Espeak, Speaker, TtsError, engine_from_flag, espeak_voice


def voiced(audio: bytes) -> int:
    frames = (audio[i : i + 160] for i in range(0, len(audio) - 159, 160))
    return sum(sum(abs(s) for s in g711.decode_ulaw(f)) / 160 > 300 for f in frames)


async def test_twiml_voices_and_languages_map_to_installed_espeak_voices() -> None:
    require_tool("espeak-ng", "apt-get install espeak-ng")
    installed = await Espeak().installed()
    cases = {
        ("", ""): "en-us+m3",
        ("man", "en-GB"): "en-gb+m3",
        ("woman", "fr-FR"): "fr-fr+f3",
        ("alice", "de-DE"): "de+f3",
        ("Polly.Joanna", "fr-FR"): "en-us+f3",  # a Polly voice brings its own language
        ("Polly.Brian-Neural", ""): "en-gb+m3",
        ("Polly.Mathieu", ""): "fr-fr+m3",
        ("Google.es-MX-Standard-A", ""): "es-419+m3",
        ("woman", "en-AU"): "en-gb+f3",
        ("man", "pt-BR"): "pt-br+m3",
        ("man", "xx-YY"): "en-us+m3",  # unknown: the documented fallback
    }
    for (voice, language), expected in cases.items():
        assert espeak_voice(voice, language, installed) == expected, (voice, language)
        assert expected.split("+")[0] in installed


def test_tts_flag_values() -> None:
    assert isinstance(engine_from_flag("espeak"), Espeak)
    assert isinstance(engine_from_flag("command:my-tts --voice {voice}"), Command)
    for bad in ("festival", "command:", "http:ftp://x"):
        with pytest.raises(ValueError, match="tts"):
            engine_from_flag(bad)
    out = subprocess.run(
        [sys.executable, "-m", "turnpike", "streamgw", "--tts", "festival", "--help"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "--tts must be espeak" in out.stderr


def test_say_text_limits() -> None:
    long = VoiceResponse()
    long.say("a" * 4097)
    with pytest.raises(twiml.TwimlError, match="at most 4096") as info:
        twiml.parse(str(long))
    assert info.value.code == 12200
    with pytest.raises(twiml.TwimlError, match="needs the text"):
        twiml.parse("<Response><Say> </Say></Response>")
    # SSML-style children keep their words; each is a word boundary.
    response = VoiceResponse()
    say = response.say("Hello")
    say.break_(time="1s")
    say.prosody("slowly", rate="slow")
    say.emphasis("and goodbye")
    (parsed,) = twiml.parse(str(response)).verbs
    assert parsed == twiml.Say("Hello slowly and goodbye")


def counting_engine(tmp_path: Path) -> tuple[str, Path]:
    """A ``command:`` engine: a script that logs each run, then lets espeak-ng speak."""
    espeak = require_tool("espeak-ng", "apt-get install espeak-ng")
    log = tmp_path / "runs.log"
    script = tmp_path / "tts.sh"
    script.write_text(f'#!/bin/sh\necho "$1 $2" >> {log}\nexec {espeak} --stdout -v "$2"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"command:{script} {{voice}} {{language}}", log


async def test_speaker_caches_within_its_budget_and_shares_one_synthesis(tmp_path: Path) -> None:
    flag, log = counting_engine(tmp_path)
    converter = AudioConverter()
    speaker = Speaker(engine_from_flag(flag), converter, cache_bytes=16_000)
    try:
        first, *others = await asyncio.gather(
            *(speaker.speak("one two three", "man", "en") for _ in range(5))
        )
        assert voiced(first) > 10 and all(o == first for o in others)
        assert 8_000 < len(first) < 16_000  # about a second: fits the budget once
        assert log.read_text().splitlines() == ["man en"]  # one run for five calls
        assert await speaker.speak("one two three", "man", "en") == first
        assert len(log.read_text().splitlines()) == 1
        # Other words push the first out of the budget: it is synthesized again.
        await speaker.speak("four five six", "man", "en")
        await speaker.speak("one two three", "man", "en")
        assert len(log.read_text().splitlines()) == 3
    finally:
        await speaker.close()
    broken = Speaker(engine_from_flag("command:sh -c 'echo no voice >&2; exit 3'"), converter)
    with pytest.raises(TtsError, match="exited with 3: no voice"):
        await broken.speak("x", "man", "en")
    for hostile in ("--output=/tmp/x", "a b", "x;rm"):
        with pytest.raises(TtsError, match="must be names"):
            await speaker.speak("x", hostile, "en")
    assert len(log.read_text().splitlines()) == 3  # the program never ran for them
    silent = Speaker(engine_from_flag("command:true"), converter)
    try:
        with pytest.raises(TtsError, match="unusable"):
            await silent.speak("x", "man", "en")
    finally:
        converter.close()


async def test_say_through_a_command_engine(
    make_gateway: MakeGateway, peer: RtpPeer, tmp_path: Path
) -> None:
    flag, log = counting_engine(tmp_path)
    gw = await make_gateway(tts=flag)
    response = VoiceResponse()
    response.say("Hello from a plugged in engine", voice="Polly.Amy", language="en-GB", loop=2)
    created = await gw.create_call(peer, twiml=str(response))
    ended = await gw.wait_status(created["sid"], timeout=30)
    assert ended["errors"] == []
    assert log.read_text().splitlines() == ["Polly.Amy en-GB"]  # looped from the cache
    assert voiced(b"".join(p.payload for p in peer.received)) > 50


@pytest.fixture
async def tts_server(tmp_path: Path) -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    espeak = require_tool("espeak-ng", "apt-get install espeak-ng")
    requests: list[dict[str, str]] = []

    async def synthesize(request: web.Request) -> web.Response:
        body = await request.json()
        requests.append(body)
        proc = await asyncio.create_subprocess_exec(
            espeak, "--stdout", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        wav, _ = await proc.communicate(body["text"].encode())
        return web.Response(body=wav, content_type="audio/wav")

    app = web.Application()
    app.router.add_post("/synthesize", synthesize)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/synthesize", requests
    await runner.cleanup()


async def test_say_through_an_http_engine(
    make_gateway: MakeGateway,
    peer: RtpPeer,
    tts_server: tuple[str, list[dict[str, str]]],
) -> None:
    url, requests = tts_server
    gw = await make_gateway(tts=f"http:{url}")
    response = VoiceResponse()
    response.say("Served over HTTP", voice="woman", language="en-US")
    created = await gw.create_call(peer, twiml=str(response))
    ended = await gw.wait_status(created["sid"], timeout=30)
    assert ended["errors"] == []
    assert requests == [{"text": "Served over HTTP", "voice": "woman", "language": "en-US"}]
    assert voiced(b"".join(p.payload for p in peer.received)) > 20


async def test_a_failing_engine_is_reported_and_the_call_goes_on(
    make_gateway: MakeGateway, peer: RtpPeer
) -> None:
    gw = await make_gateway(tts="command:sh -c 'exit 1'")
    response = VoiceResponse()
    response.say("Nobody hears this")
    response.pause(length=1)
    created = await gw.create_call(peer, twiml=str(response))
    ended = await gw.wait_status(created["sid"], timeout=30)
    assert [e["code"] for e in ended["errors"]] == [13500]
    assert "exited with 1" in ended["errors"][0]["message"]
