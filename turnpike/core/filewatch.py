"""Reload a configuration file when it changes, keeping the last good version when it breaks.

Polling ``os.stat`` (which follows symlinks) sees both in-place writes and the symlink swap kubelet
does when it updates a mounted Secret or ConfigMap (``..data`` is repointed to a new directory, so
the file behind the path gets a new inode). One ``stat`` per interval costs nothing and needs no
inotify limits or extra dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

Parser = Callable[[bytes, str], T]
"""Turns a file's bytes into a value; raises ``ValueError`` naming the source and the problem."""

_Signature = tuple[int, int, int, int]


class FileWatcher(Generic[T]):
    """Holds the current parsed value of one file and refreshes it when the file changes.

    The first load happens in the constructor and raises, so a process refuses to start on a broken
    file; later a broken file is logged and the last good value stays in force.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        parse: Parser[T],
        *,
        interval: float = 1.0,
        on_change: Callable[[T], None] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.path = Path(path)
        self._parse = parse
        self._interval = interval
        self._on_change = on_change
        self._log = logger or logging.getLogger(__name__)
        self._task: asyncio.Task[None] | None = None
        self._signature = self._stat()
        data = self.path.read_bytes()
        self._digest = hashlib.sha256(data).digest()
        self.current: T = parse(data, str(self.path))
        self.reloads = 0
        self.errors = 0

    def _stat(self) -> _Signature:
        st = os.stat(self.path)
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def check(self) -> bool:
        """Reload if the file changed; True when a new value was taken."""
        try:
            signature = self._stat()
            if signature == self._signature:
                return False
            data = self.path.read_bytes()
        except OSError as exc:
            # Mid-swap or deleted: keep what we have and look again next time.
            self._log.warning("cannot read %s, keeping the last good version: %s", self.path, exc)
            return False
        self._signature = signature
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            value = self._parse(data, str(self.path))
        except ValueError as exc:
            self.errors += 1
            self._log.error("ignoring broken %s, keeping the last good version: %s", self.path, exc)
            return False
        self.current = value
        self.reloads += 1
        self._log.info("reloaded %s", self.path)
        if self._on_change is not None:
            self._on_change(value)
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> FileWatcher[T]:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
