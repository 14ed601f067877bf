"""One log line per cause of a failure, not one per retry.

During an API outage every retry of every reconcile and rotation step fails the same way; a
traceback each time buries everything else (a 2-minute outage once wrote thousands of lines).
`Outages` logs the first failure of each cause (with its traceback), counts the repeats
silently, and logs one line when the failing work succeeds again.
"""

from __future__ import annotations

import logging


def cause_of(exc: BaseException) -> str:
    """What a failure is, without the object it happened to: the exception's type and text."""
    return f"{type(exc).__name__}: {exc}"


class Outages:
    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.failing: dict[str, tuple[str, int]] = {}  # work → (cause, repeats)

    def failed(self, work: str, exc: BaseException) -> None:
        cause = cause_of(exc)
        previous = self.failing.get(work)
        if previous is not None and previous[0] == cause:
            self.failing[work] = (cause, previous[1] + 1)
            return
        self.failing[work] = (cause, 0)
        if any(c == cause for w, (c, _) in self.failing.items() if w != work):
            return  # the same cause is already reported for other work: one line per cause
        self.logger.warning("%s failed (%s); retrying, repeats not logged", work, cause)

    def succeeded(self, work: str) -> None:
        previous = self.failing.pop(work, None)
        if previous is not None:
            self.logger.info("%s works again after %d more failure(s)", work, previous[1])
