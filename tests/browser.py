"""Open a local HTML report in headless Chromium and read back what a reader would see.

Not a test file: tests call :func:`require_browser` (skip, or fail under ``CI=true``, when the browser
is missing) and then :func:`open_page`. It drives Debian's ``chromium`` with ``chromium-driver`` through
selenium, handing selenium the chromedriver path so that Selenium Manager never downloads anything.
Requests to the network (http, https, ws, ftp) are blocked in the browser, so nothing leaves the
machine; they are listed in ``external_requests`` (Chromium logs no console error for a blocked load).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

FIX = "apt-get install chromium chromium-driver; pip install selenium"
WINDOW = (1280, 800)
# Root in a container: no sandbox, no GPU, no small /dev/shm; file:// pages may read files beside them.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--allow-file-access-from-files", f"--window-size={WINDOW[0]},{WINDOW[1]}"]
LOCAL_SCHEMES = {"file", "data"}
BLOCKED = ["http:*", "https:*", "ws:*", "wss:*", "ftp:*"]


@dataclass
class PageReport:
    images: list[tuple[str, int]]  # (src, shortened; naturalWidth after load, 0 when it did not load)
    console_errors: list[str]  # console.error, uncaught exceptions, failed resource loads
    headings: list[str]  # text of every <h2>, in document order
    section_ids: list[str]  # id of the <section> around each <h2> ("" when none), parallel to headings
    external_requests: list[str]  # every URL the page asked for whose scheme is not file or data
    screenshot: Path  # full-page PNG: the whole document, not only the viewport
    viewport: tuple[int, int]  # window.innerWidth, innerHeight


def find_chromium() -> tuple[str, str] | None:
    """(browser binary, chromedriver), or None when either is missing."""
    # The real binary before Debian's /usr/bin/chromium shell wrapper (which adds flags of its own).
    browsers = ["/usr/lib/chromium/chromium"] + [shutil.which(n) for n in ("chromium", "chromium-browser",
                                                                          "google-chrome")]
    drivers = [shutil.which("chromedriver"), "/usr/lib/chromium/chromedriver"]
    browser = next((b for b in browsers if b and os.access(b, os.X_OK)), None)
    driver = next((d for d in drivers if d and os.access(d, os.X_OK)), None)
    return (browser, driver) if browser and driver else None


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, naming the fix; None when they can."""
    missing = [] if importlib.util.find_spec("selenium") else ["selenium"]
    if find_chromium() is None:
        missing.append("chromium/chromedriver")
    return f"needs {' and '.join(missing)}: {FIX}" if missing else None


def require_browser() -> None:
    """Skip the calling test when the browser is missing, or fail it under CI=true (CI installs it)."""
    reason = skip_reason()
    if reason is not None:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)


def _short(src: str, limit: int = 60) -> str:
    return src if len(src) <= limit else src[: limit - 3] + "..."


_READ_PAGE = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); }))).then(() => {
  const h2 = Array.from(document.querySelectorAll('h2'));
  const attrs = Array.from(document.querySelectorAll('[src], link[href]'))
      .map(e => e.src || e.href).filter(Boolean);
  done({images: imgs.map(i => [i.getAttribute('src') || '', i.naturalWidth]),
        headings: h2.map(h => h.textContent.trim()),
        sections: h2.map(h => (h.closest('section') || {}).id || ''),
        urls: performance.getEntriesByType('resource').map(e => e.name).concat(attrs),
        viewport: [window.innerWidth, window.innerHeight]});
});
"""


def _driver(browser: str, chromedriver: str):
    os.environ.setdefault("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must not go online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


def _requested_urls(driver) -> list[str]:
    """URLs of every request the browser sent (or tried to send) for the page: the DevTools network log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _screenshot(driver, path: Path) -> None:
    # DevTools capture with captureBeyondViewport and a clip of the whole CSS content size: one call,
    # no window resizing (which in headless mode would also change the layout's viewport height).
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True, "clip": clip})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def open_page(html_path: Path, screenshot: Path, timeout: float = 30.0) -> PageReport:
    """Load ``html_path`` (file://) in headless Chromium, wait for its images, read it, save a screenshot."""
    found = find_chromium()
    if found is None:
        raise RuntimeError(skip_reason())
    driver = _driver(*found)
    try:
        driver.set_page_load_timeout(timeout)
        driver.set_script_timeout(timeout)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": BLOCKED})
        driver.get(Path(html_path).resolve().as_uri())
        page = driver.execute_async_script(_READ_PAGE)
        _screenshot(driver, screenshot)
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        urls = dict.fromkeys(page["urls"] + _requested_urls(driver))  # ordered, no repeats
    finally:
        driver.quit()
    return PageReport(images=[(_short(src), int(width)) for src, width in page["images"]],
                      console_errors=errors, headings=page["headings"], section_ids=page["sections"],
                      external_requests=[u for u in urls if urlparse(u).scheme not in LOCAL_SCHEMES],
                      screenshot=Path(screenshot), viewport=tuple(page["viewport"]))
