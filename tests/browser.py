"""A real browser for the screens' tests: Debian's Chromium, headless, driven by selenium
through Debian's chromedriver. Nothing is downloaded: both paths are given explicitly and
Selenium Manager is told to stay offline.

Starting Chromium takes a second or more, so a test module shares one (`browser` fixture,
module scope); each test opens its own pages. Never skipped: without Chromium the test fails
and says how to get it (scripts/setup.sh installs it, and CI runs that).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--window-size=1400,1000",
    "--force-device-scale-factor=1",
]

T = TypeVar("T")


def start_browser(profile: Path) -> Any:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"the browser tests need Debian's chromium and chromium-driver "
                    f"({', '.join(missing)} missing): run `bash scripts/setup.sh`, or "
                    f"`apt-get install chromium chromium-driver`", pytrace=False)
    os.environ["SE_OFFLINE"] = "true"   # Selenium Manager must never fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(15)
    driver.set_script_timeout(15)
    return driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    profile = Path(tempfile.mkdtemp(prefix="kitchen-edge-chromium-"))
    driver = start_browser(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; fail saying `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the page is between two states: look again
            last = exc
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what}" + (f" (last error: {last})"
                                                              if last else ""))


def post_from_page(driver: Any, url: str, body: dict[str, Any] | None = None,
                   csrf: bool = True) -> dict[str, Any]:
    """POST from inside the page (same origin, the session cookie goes along), as its own
    script does; returns {"status", "text"}."""
    result: dict[str, Any] = driver.execute_async_script("""
        const [url, body, withCsrf, done] = arguments;
        const meta = document.querySelector('meta[name="csrf-token"]');
        const headers = {"Content-Type": "application/json"};
        if (withCsrf && meta) headers["X-CSRF-Token"] = meta.content;
        fetch(url, {method: "POST", credentials: "same-origin", headers: headers,
                    body: JSON.stringify(body || {})})
          .then(async (r) => done({status: r.status, text: await r.text()}))
          .catch((e) => done({status: 0, text: String(e)}));
    """, url, body, csrf)
    return result


__all__ = ["CHROMEDRIVER", "CHROMIUM", "browser", "post_from_page", "start_browser",
           "wait_for"]
