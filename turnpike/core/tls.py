"""TLS server contexts from a PEM certificate and key, reloaded when the files change.

Shared by every component with a TLS listener (the relay's TURN over TLS, the stream gateway's
SIP over TLS): TLS 1.2 or newer, the certificate flags ``--tls-cert``/``--tls-key``.
"""

from __future__ import annotations

import logging
import ssl

from turnpike.core.filewatch import FileWatcher

log = logging.getLogger(__name__)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class TlsReloader:
    """Reloads the certificate and key into the live context; new handshakes use the new pair.

    ``SSLContext.load_cert_chain`` on the context the listener already holds replaces its
    certificate for later handshakes, so no listener restarts and no connection drops.
    """

    def __init__(self, ctx: ssl.SSLContext, cert: str, key: str) -> None:
        self.ctx, self.cert, self.key = ctx, cert, key
        self.watchers = [FileWatcher(path, self._parse) for path in (cert, key)]
        for watcher in self.watchers:
            watcher._on_change = self._apply

    def _parse(self, data: bytes, source: str) -> bytes:
        try:
            tls_context(self.cert, self.key)  # validate the pair before touching the live one
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{source}: unusable certificate/key pair ({exc})") from None
        return data

    def _apply(self, _: bytes) -> None:
        self.ctx.load_cert_chain(self.cert, self.key)
        log.info("TLS certificate reloaded")

    def start(self) -> None:
        for watcher in self.watchers:
            watcher.start()

    async def stop(self) -> None:
        for watcher in self.watchers:
            await watcher.stop()
