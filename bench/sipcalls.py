"""The SIP side of the stream gateway benchmark: calls placed with INVITE instead of REST.

Same interface as `bench.streamgw.Gateway` (``create(twiml, remotes)``, ``hangup(sids)``): each
TwiML the benchmark runs is a number in the gateway's numbers file, and each call is an INVITE
from its own UDP socket offering the RTP sender's address, then ACK; hanging up is BYE. The user
agent is `turnpike.dev.sipcall.SipLeg` (the same as ``turnpike dev call --via-sip``); the sockets
live on one event loop kept between steps.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from turnpike.dev.sipcall import SipLeg


class SipGateway:
    def __init__(self, port: int, numbers: dict[str, str]) -> None:
        self.port = port
        self.numbers = numbers  # TwiML → the number that runs it
        self.loop = asyncio.new_event_loop()
        self.legs: dict[str, SipLeg] = {}

    @staticmethod
    def numbers_file(path: Path, account: str, documents: list[str]) -> dict[str, str]:
        """Write a numbers file giving each document a number; returns TwiML → number."""
        numbers = {doc: f"+1555010{n:04d}" for n, doc in enumerate(documents)}
        entries = [
            {"number": num, "accountSid": account, "twiml": doc} for doc, num in numbers.items()
        ]
        path.write_text(json.dumps({"numbers": entries}))
        return numbers

    def create(self, twiml: str, remotes: list[tuple[str, int]]) -> list[dict[str, Any]]:
        return self.loop.run_until_complete(self._create(self.numbers[twiml], remotes))

    async def _create(self, number: str, remotes: list[tuple[str, int]]) -> list[dict[str, Any]]:
        sem = asyncio.Semaphore(32)
        uri = f"sip:{number}@127.0.0.1:{self.port}"

        async def one(remote: tuple[str, int]) -> dict[str, Any]:
            leg = SipLeg("127.0.0.1", ("127.0.0.1", self.port), uri, "+15550001111")
            async with sem:
                await leg.open()
                try:
                    media, sid = await leg.invite(remote[0], remote[1])
                except BaseException:
                    leg.close()
                    raise
            if sid is None or media.remote is None:
                leg.close()
                raise RuntimeError("the gateway's 200 OK named no call or no media address")
            self.legs[sid] = leg
            host, port = media.remote
            return {"sid": sid, "rtp": {"local": f"{host}:{port}"}}

        return list(await asyncio.gather(*(one(r) for r in remotes)))

    def hangup(self, sids: list[str]) -> None:
        self.loop.run_until_complete(self._hangup(sids))

    async def _hangup(self, sids: list[str]) -> None:
        sem = asyncio.Semaphore(32)

        async def one(sid: str) -> None:
            leg = self.legs.pop(sid, None)
            if leg is None:
                return
            try:
                async with sem:
                    await leg.bye()
            except (TimeoutError, RuntimeError):
                pass  # the call is gone either way; the step's numbers already say what happened
            finally:
                leg.close()

        await asyncio.gather(*(one(s) for s in sids))

    def close(self) -> None:
        self.hangup(list(self.legs))
        self.loop.close()
