"""Text to speech for ``<Say>``: pluggable engines behind one bounded cache.

``--tts`` picks the engine:

- ``espeak`` (default): espeak-ng, embedded (a Debian package, installed by the project's install
  step and in the image). TwiML voices and BCP 47 languages map to espeak-ng voices
  (`espeak_voice`).
- ``command:ARGV``: any program; ``{voice}`` and ``{language}`` in its arguments are replaced by the
  TwiML attributes, the text arrives on stdin, a WAV file is expected on stdout.
- ``http:URL``: ``POST URL`` with ``{"text", "voice", "language"}`` as JSON, a WAV file back.

Engines return WAV (any rate and encoding `wav.wav_to_ulaw` reads); the `Speaker` turns it into
8 kHz µ-law in a worker process (`convert.py`), caches it by (engine, voice, language, text)
within a byte budget, shares one synthesis between calls asking for the same words at once, and
runs at most two syntheses at a time, so a burst of ``<Say>`` never stalls the event loop or
other calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
from collections import OrderedDict
from typing import Protocol

import aiohttp

from turnpike.streamgw.convert import NICE, AudioConverter
from turnpike.streamgw.fetch import BodyTooLarge, read_body
from turnpike.streamgw.wav import WavError

log = logging.getLogger(__name__)

MAX_WAV = 64 * 1024 * 1024
TIMEOUT = 30.0
DEFAULT_LANGUAGE = "en-US"
FALLBACK_VOICE = "en-us"
SAFE_ARGUMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class TtsError(Exception):
    pass


class Engine(Protocol):
    name: str

    async def synthesize(self, text: str, voice: str, language: str) -> bytes:
        """WAV audio of ``text``; ``voice``/``language`` are the TwiML attributes ("" if absent)."""


# ---- espeak-ng: TwiML voices and languages ---------------------------------------------------

# voice="…" → (language it implies or None, espeak-ng variant). Polly and Google names may carry a
# suffix ("Polly.Joanna-Neural"); it is ignored.
GENERIC_VOICES = {"man": "+m3", "woman": "+f3", "alice": "+f3"}
POLLY_VOICES = {
    "joanna": ("en-US", "+f3"), "salli": ("en-US", "+f3"), "kimberly": ("en-US", "+f3"),
    "kendra": ("en-US", "+f3"), "ivy": ("en-US", "+f3"), "ruth": ("en-US", "+f3"),
    "matthew": ("en-US", "+m3"), "joey": ("en-US", "+m3"), "justin": ("en-US", "+m3"),
    "stephen": ("en-US", "+m3"), "amy": ("en-GB", "+f3"), "emma": ("en-GB", "+f3"),
    "brian": ("en-GB", "+m3"), "arthur": ("en-GB", "+m3"), "nicole": ("en-AU", "+f3"),
    "olivia": ("en-AU", "+f3"), "russell": ("en-AU", "+m3"), "aditi": ("en-IN", "+f3"),
    "raveena": ("en-IN", "+f3"), "celine": ("fr-FR", "+f3"), "lea": ("fr-FR", "+f3"),
    "mathieu": ("fr-FR", "+m3"), "chantal": ("fr-CA", "+f3"), "marlene": ("de-DE", "+f3"),
    "vicki": ("de-DE", "+f3"), "hans": ("de-DE", "+m3"), "conchita": ("es-ES", "+f3"),
    "lucia": ("es-ES", "+f3"), "enrique": ("es-ES", "+m3"), "mia": ("es-MX", "+f3"),
    "penelope": ("es-US", "+f3"), "lupe": ("es-US", "+f3"), "miguel": ("es-US", "+m3"),
    "carla": ("it-IT", "+f3"), "bianca": ("it-IT", "+f3"), "giorgio": ("it-IT", "+m3"),
    "camila": ("pt-BR", "+f3"), "vitoria": ("pt-BR", "+f3"), "ricardo": ("pt-BR", "+m3"),
    "ines": ("pt-PT", "+f3"), "cristiano": ("pt-PT", "+m3"), "lotte": ("nl-NL", "+f3"),
    "ruben": ("nl-NL", "+m3"), "mizuki": ("ja-JP", "+f3"), "takumi": ("ja-JP", "+m3"),
    "seoyeon": ("ko-KR", "+f3"), "zhiyu": ("cmn-CN", "+f3"),
}  # fmt: skip
# BCP 47 tags whose espeak-ng voice is not the tag itself or its primary language.
LANGUAGE_ALIASES = {
    "en": "en-us", "en-au": "en-gb", "en-nz": "en-gb", "en-in": "en-gb", "en-ie": "en-gb",
    "en-za": "en-gb", "en-ca": "en-us", "fr": "fr-fr", "fr-ca": "fr-fr", "es-mx": "es-419",
    "es-us": "es-419", "pt-pt": "pt", "zh": "cmn", "zh-cn": "cmn", "zh-tw": "cmn",
    "cmn-cn": "cmn", "zh-hk": "yue", "nb-no": "nb", "no": "nb",
}  # fmt: skip


def espeak_voice(voice: str, language: str, installed: frozenset[str]) -> str:
    """The espeak-ng ``-v`` argument for a TwiML ``voice`` and ``language``.

    A Polly or Google voice implies its language; otherwise ``language`` (default en-US) is used.
    Languages resolve as: the tag itself, a documented alias, its primary subtag, then en-US.
    """
    name = voice.strip()
    variant = GENERIC_VOICES.get(name.lower(), "+m3")
    lowered = name.lower()
    if lowered.startswith("polly."):
        base = lowered[6:].split("-")[0]
        implied, variant = POLLY_VOICES.get(base, (None, "+f3"))
        language = implied or language
    elif lowered.startswith("google."):
        parts = name[7:].split("-")
        if len(parts) >= 2:
            language = f"{parts[0]}-{parts[1]}"
    return _espeak_language(language or DEFAULT_LANGUAGE, installed) + variant


def _espeak_language(tag: str, installed: frozenset[str]) -> str:
    tag = tag.strip().lower().replace("_", "-")
    primary = tag.split("-")[0]
    for candidate in (tag, LANGUAGE_ALIASES.get(tag), primary, LANGUAGE_ALIASES.get(primary)):
        if candidate and candidate in installed:
            return candidate
    return FALLBACK_VOICE


async def _run(argv: list[str], stdin: bytes) -> bytes:
    try:
        proc = await asyncio.create_subprocess_exec(
            "nice", "-n", str(NICE), *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:
        raise TtsError(f"cannot run {argv[0]}: {exc}") from None
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TtsError(f"{argv[0]} took longer than {TIMEOUT:g} s") from None
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip()[-200:]
        raise TtsError(f"{argv[0]} exited with {proc.returncode}: {tail}")
    return out


class Espeak:
    name = "espeak"

    def __init__(self, binary: str = "espeak-ng") -> None:
        self.binary = binary
        self._installed: frozenset[str] | None = None

    async def installed(self) -> frozenset[str]:
        if self._installed is None:
            listing = await _run([self.binary, "--voices"], b"")
            names = (line.split()[1] for line in listing.decode().splitlines()[1:] if line.split())
            self._installed = frozenset(name.lower() for name in names)
        return self._installed

    async def synthesize(self, text: str, voice: str, language: str) -> bytes:
        chosen = espeak_voice(voice, language, await self.installed())
        # Text on stdin, never on the command line: it cannot be read as an option.
        return await _run([self.binary, "--stdout", "-b", "1", "-v", chosen], text.encode())


class Command:
    def __init__(self, template: str) -> None:
        self.argv = shlex.split(template)
        if not self.argv:
            raise ValueError("--tts command: needs a program to run")
        self.name = f"command:{template}"

    async def synthesize(self, text: str, voice: str, language: str) -> bytes:
        for value in (voice, language):
            if value and not SAFE_ARGUMENT.fullmatch(value):
                # Customers write these: never let one read as an option of the program.
                raise TtsError(f"voice and language must be names, got {value[:40]!r}")
        argv = [a.replace("{voice}", voice).replace("{language}", language) for a in self.argv]
        return await _run(argv, text.encode())


class Http:
    def __init__(self, url: str) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--tts http: needs an http:// or https:// URL, got {url!r}")
        self.url = url
        self.name = f"http:{url}"
        self._session: aiohttp.ClientSession | None = None

    async def synthesize(self, text: str, voice: str, language: str) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = {"text": text, "voice": voice, "language": language}
        try:
            async with self._session.post(
                self.url, json=body, timeout=aiohttp.ClientTimeout(total=TIMEOUT)
            ) as resp:
                if resp.status != 200:
                    raise TtsError(f"the TTS server answered HTTP {resp.status}")
                return await read_body(resp, MAX_WAV)
        except (aiohttp.ClientError, TimeoutError, BodyTooLarge) as exc:
            raise TtsError(f"the TTS server failed: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def engine_from_flag(value: str) -> Engine:
    """The engine ``--tts`` names: ``espeak``, ``command:ARGV`` or ``http:URL``."""
    if value == "espeak":
        return Espeak()
    kind, sep, rest = value.partition(":")
    if sep and kind == "command":
        return Command(rest)
    if sep and kind == "http":
        return Http(rest)
    raise ValueError(f"--tts must be espeak, command:ARGV or http:URL, got {value!r}")


# ---- the speaker: cache, sharing, concurrency -----------------------------------------------


class Speaker:
    def __init__(
        self,
        engine: Engine,
        converter: AudioConverter,
        cache_bytes: int = 32 * 1024 * 1024,
        workers: int = 2,
    ) -> None:
        self.engine = engine
        self.converter = converter
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, str, str, str], bytes] = OrderedDict()
        self._cached = 0
        self._pending: dict[tuple[str, str, str, str], asyncio.Future[bytes]] = {}
        self._slots = asyncio.Semaphore(workers)

    async def speak(self, text: str, voice: str, language: str) -> bytes:
        """8 kHz µ-law audio of ``text``; `TtsError` says why there is none."""
        key = (self.engine.name, voice, language, text)
        audio = self._cache.get(key)
        if audio is not None:
            self._cache.move_to_end(key)
            return audio
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._synthesize(key))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def _synthesize(self, key: tuple[str, str, str, str]) -> bytes:
        _, voice, language, text = key
        async with self._slots:
            wav = await self.engine.synthesize(text, voice, language)
            try:
                audio = await self.converter.to_ulaw(wav)
            except WavError as exc:
                raise TtsError(f"the engine's audio is unusable: {exc}") from None
        self._remember(key, audio)
        return audio

    def _remember(self, key: tuple[str, str, str, str], audio: bytes) -> None:
        if len(audio) > self.cache_bytes:
            return
        self._cache[key] = audio
        self._cached += len(audio)
        while self._cached > self.cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._cached -= len(dropped)

    async def close(self) -> None:
        for pending in list(self._pending.values()):
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        close = getattr(self.engine, "close", None)
        if close is not None:
            await close()
