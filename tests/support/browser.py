"""Headless Chromium for browser tests, driven by Selenium through Debian's chromedriver.

Selenium is pointed at the system ``chromium`` and ``chromedriver`` explicitly, so it never tries
to download a browser or a driver. Start one browser per test module (it takes about a second and
a lot of memory) and open pages in it; every browser gets a fresh, empty profile directory.

Selenium calls block: from an async test, call them through ``asyncio.to_thread`` so the event
loop keeps serving the app under test.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from support import require_tool

T = TypeVar("T")

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
)


@contextlib.contextmanager
def chromium(extra_flags: Sequence[str] = ()) -> Iterator[Any]:
    """A headless Chromium WebDriver with a new profile; quits and cleans up afterwards.

    Skips the test when chromium or chromedriver is missing (fails under ``CI=true``).
    """
    binary = require_tool("chromium", "apt-get install chromium")
    driver_path = require_tool("chromedriver", "apt-get install chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)


def wait_for(
    probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(interval)


def console_log(driver: Any) -> list[str]:
    """The browser console messages so far (useful in assertion messages)."""
    try:
        return [f"{e.get('level')}: {e.get('message')}" for e in driver.get_log("browser")]
    except Exception:  # some drivers have no log endpoint
        return []
