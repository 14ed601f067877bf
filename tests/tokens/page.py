"""Drive the ICE servers check page in Chromium the way a person would, and read what they see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from support.browser import console_log, wait_for


@dataclass
class Outcome:
    summary: str
    rows: list[list[str]]
    console: list[str]
    url: str  # the address bar after the check
    stored: int  # items in localStorage + sessionStorage

    def row(self, edge: str, transport: str) -> list[str]:
        for row in self.rows:
            if row[0].split(" (")[0] == edge and row[1] == transport:
                return row
        raise AssertionError(f"no row for {edge} {transport} in {self.rows}")


def run_check(
    driver: Any,
    url: str,
    sid: str | None = None,
    token: str | None = None,
    timeout: float = 60.0,
) -> Outcome:
    """Open the page, type the SID and token (or press the dev button), wait for the verdict."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 10)
    if sid is None:
        button = driver.find_element(By.ID, "run-dev")
        wait_for(button.is_displayed, 10, what="the development account button")
        button.click()
    else:
        driver.find_element(By.ID, "sid").send_keys(sid)
        driver.find_element(By.ID, "token").send_keys(token or "")
        driver.find_element(By.ID, "run").click()

    def verdict() -> str | None:
        summary = driver.find_element(By.ID, "summary")
        busy = "busy" in (summary.get_attribute("class") or "")
        return None if busy or not summary.text else str(summary.text)

    summary = wait_for(verdict, timeout, what="the check's verdict")
    rows = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in driver.find_elements(By.CSS_SELECTOR, "#rows tr")
    ]
    if not driver.find_element(By.ID, "results").is_displayed():
        rows = []
    stored = driver.execute_script("return localStorage.length + sessionStorage.length")
    return Outcome(summary, rows, console_log(driver), driver.current_url, int(stored))
