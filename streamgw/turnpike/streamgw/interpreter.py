"""The TwiML interpreter: runs a call's documents verb by verb.

Each verb is a small handler in `HANDLERS` (like the relay's STUN method table). A handler
returns `NEXT` to go on with the next verb, `END` to stop, or a `Source` to leave this document
for another (``<Redirect>``, an ``action`` URL). One runner task per call; a REST redirect cancels
it and starts another, while streams started by ``<Start>`` keep going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from yarl import URL

from turnpike.streamgw import twiml
from turnpike.streamgw.egress import redact
from turnpike.streamgw.fetch import FetchError
from turnpike.streamgw.ingress import Source
from turnpike.streamgw.stream import StreamSpec
from turnpike.streamgw.tts import TtsError
from turnpike.streamgw.wav import WavError

if TYPE_CHECKING:
    from turnpike.streamgw.call import Call
    from turnpike.streamgw.stream import Fork

log = logging.getLogger(__name__)


class _End:
    pass


END: Final = _End()
NEXT: Final = None
SAY_FAILED = 13500
Step = Source | _End | None
Handler = Callable[["Call", Any], Awaitable[Step]]


def resolve(call: Call, url: str) -> str:
    """A URL from TwiML, relative to the document it came from."""
    base = call.doc_url
    return str(URL(base).join(URL(url))) if base else url


# ---- the verbs ------------------------------------------------------------------------------


async def start(call: Call, verb: twiml.Start) -> Step:
    fork = launch(call, verb.stream, bidirectional=False)
    if not verb.action:
        return NEXT
    # Hosted semantics: the stream is started, then the action URL's TwiML replaces the rest.
    extra = (("StreamSid", fork.sid),) if fork is not None else ()
    return Source(url=verb.action, method=verb.method, extra=extra)


async def stop_stream(call: Call, verb: twiml.StopStream) -> Step:
    fork = call.forks.find(verb.name)
    if fork is not None and not fork.spec.bidirectional:
        await fork.stop_and_wait()
    return NEXT


async def connect(call: Call, verb: twiml.Connect) -> Step:
    fork = launch(call, verb.stream, bidirectional=True)
    if fork is not None:
        await fork.done.wait()
    if not verb.action:
        return NEXT
    extra = [("StreamSid", fork.sid)] if fork is not None else []
    if fork is not None and fork.error is not None:
        extra.append(("StreamError", str(fork.error)))
    return Source(url=verb.action, method=verb.method, extra=tuple(extra))


async def pause(call: Call, verb: twiml.Pause) -> Step:
    await asyncio.sleep(verb.length)
    return NEXT


async def play(call: Call, verb: twiml.Play) -> Step:
    url = resolve(call, verb.url)
    shown = f"<Play> {redact(url)}"  # for messages: customers' URLs may carry credentials
    try:
        data = await call.fetcher.audio(url, shown)
        audio = await call.gateway.converter.to_ulaw(data)
    except FetchError as exc:
        call.report(exc.code, exc.detail)
        return NEXT
    except WavError as exc:
        call.report(12300, f"{shown}: {exc}")
        return NEXT
    await play_audio(call, audio, verb.loop)
    return NEXT


async def say(call: Call, verb: twiml.Say) -> Step:
    try:
        audio = await call.speaker.speak(verb.text, verb.voice or "", verb.language or "")
    except TtsError as exc:
        call.report(SAY_FAILED, f"<Say>: {exc}")
        return NEXT
    await play_audio(call, audio, verb.loop)
    return NEXT


async def play_audio(call: Call, audio: bytes, loop: int) -> None:
    """Into the call's outbound audio, ``loop`` times (0: until the call ends)."""
    rounds = 0
    while call.live and (loop == 0 or rounds < loop):
        rounds += 1
        await call.media.playout.play(audio)


async def gather(call: Call, verb: twiml.Gather) -> Step:
    """Collect DTMF: nested prompts play until the first key; then keys until ``numDigits``,
    ``finishOnKey`` or ``timeout`` seconds without one."""
    digits = ""
    with call.collect_digits() as keys:
        key = await _prompts_until_key(call, verb.prompts, keys)
        while True:
            if key is None:
                key = await _next_key(keys, verb.timeout)
                if key is None:
                    break
            if key == verb.finish_on_key:
                break
            digits += key
            key = None
            if verb.num_digits is not None and len(digits) >= verb.num_digits:
                break
    # Hosted semantics: without an action, the keys go to the document's own URL (inline TwiML
    # has none, so it goes on with the next verb).
    action = verb.action or call.doc_url
    if action and (digits or verb.action_on_empty_result):
        return Source(url=action, method=verb.method, extra=(("Digits", digits),))
    return NEXT


async def _prompts_until_key(
    call: Call, prompts: tuple[twiml.Prompt, ...], keys: asyncio.Queue[str]
) -> str | None:
    """Run the prompts; the first key interrupts them (barge-in) and is returned."""
    speaking = asyncio.create_task(_prompts(call, prompts))
    first = asyncio.create_task(keys.get())
    try:
        await asyncio.wait({speaking, first}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        first.cancel()
        speaking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await speaking
        call.media.playout.clear()
    return first.result() if first.done() and not first.cancelled() else None


async def _prompts(call: Call, prompts: tuple[twiml.Prompt, ...]) -> None:
    for prompt in prompts:
        await HANDLERS[type(prompt)](call, prompt)


async def _next_key(keys: asyncio.Queue[str], timeout: float) -> str | None:
    try:
        return await asyncio.wait_for(keys.get(), timeout)
    except TimeoutError:
        return None


async def reject(call: Call, verb: twiml.Reject) -> Step:
    call.reject(verb.reason)
    return END


async def hangup(call: Call, verb: twiml.Hangup) -> Step:
    return END


async def redirect(call: Call, verb: twiml.Redirect) -> Step:
    return Source(url=verb.url, method=verb.method)


HANDLERS: dict[type, Handler] = {
    twiml.Start: start,
    twiml.StopStream: stop_stream,
    twiml.Connect: connect,
    twiml.Pause: pause,
    twiml.Play: play,
    twiml.Hangup: hangup,
    twiml.Redirect: redirect,
    twiml.Say: say,
    twiml.Gather: gather,
    twiml.Reject: reject,
}


def launch(call: Call, stream: twiml.Stream, bidirectional: bool) -> Fork | None:
    spec = StreamSpec(
        url=stream.url,
        name=stream.name,
        track=stream.track,
        status_callback=stream.status_callback,
        status_callback_method=stream.status_callback_method,
        parameters=stream.parameters,
        bidirectional=bidirectional,
    )
    return call.launch_stream(spec)


# ---- the runner -----------------------------------------------------------------------------


class Runner:
    """The one task that runs a call's TwiML."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self._task: asyncio.Task[None] | None = None

    def redirect(self, source: Source) -> None:
        """Run new TwiML now, abandoning whatever verb is running."""
        old = self._task
        self._task = asyncio.get_running_loop().create_task(
            self._execute(source, old), name=f"twiml {self.call.sid}"
        )

    async def cancel(self) -> None:
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _execute(self, source: Source, previous: asyncio.Task[None] | None) -> None:
        call = self.call
        if previous is not None and not previous.done():
            previous.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        try:
            current: Source | None = source
            while current is not None and call.live:
                try:
                    document = await self._load(current)
                except FetchError as exc:
                    call.report(exc.code, exc.detail)
                    break
                current = await self._run(document)
        except asyncio.CancelledError:
            call.stop_connect()
            raise
        except Exception as exc:  # a fault must end the call visibly, never leave it hanging
            log.exception("call %s: running TwiML failed", call.sid)
            call.record_issue(31900, f"running TwiML failed: {type(exc).__name__}", None)
            call.stop_connect()
        # The document ran out (or failed): the hosted service hangs up here.
        call.end("end of TwiML")

    async def _load(self, source: Source) -> twiml.Document:
        if source.document is not None:
            return source.document
        assert source.url is not None
        call = self.call
        url = resolve(call, source.url)
        params = call.request_params()
        params.update(source.extra)
        text = await call.fetcher.document(url, source.method, params, call.account.auth_token)
        call.doc_url = url
        try:
            return await twiml.parse_async(text)
        except twiml.TwimlError as exc:
            raise FetchError(exc.code, f"{redact(url)}: {exc}") from None

    async def _run(self, document: twiml.Document) -> Source | None:
        for verb in document.verbs:
            if not self.call.live:
                return None
            if not isinstance(verb, twiml.Reject):
                self.call.answer()
            step = await HANDLERS[type(verb)](self.call, verb)
            if step is END:
                return None
            if isinstance(step, Source):
                return step
        return None
