"""Headless Chromium through Selenium: screenshots of the report, and the browser test's driver.

Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/install`` installs them) and ``selenium``
(the ``test`` extra). The driver is named explicitly, so Selenium Manager never goes to the network, and
Chromium starts with its background networking off (on a closed network it otherwise hangs).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnnbench.errors import BenchError

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = ("install it with `apt-get install chromium chromium-driver` (Debian; `.ci/install` does it) "
                "and `pip install -c .ci/constraints.txt selenium` (the test extra)")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def missing() -> str | None:
    """Why headless Chromium cannot be driven here (None: it can)."""
    if not CHROMIUM.is_file():
        return f"no {CHROMIUM}"
    if not CHROMEDRIVER.is_file():
        return f"no {CHROMEDRIVER}"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed"
    return None


@contextlib.contextmanager
def chromium(profile: Path | None = None, width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile in ``profile`` (a temporary folder by default)."""
    reason = missing()
    if reason:
        raise BenchError(f"headless Chromium is not available ({reason}); {INSTALL_HINT}")
    from selenium import webdriver  # lazy: selenium
    from selenium.webdriver.chrome.service import Service  # lazy: selenium

    with contextlib.ExitStack() as stack:
        if profile is None:
            profile = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cnnbench-chromium-")))
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        from selenium.common.exceptions import WebDriverException  # lazy: selenium

        try:
            driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        except WebDriverException as exc:
            first = (exc.msg or str(exc)).strip().splitlines()[0] if (exc.msg or str(exc)).strip() else "no message"
            raise BenchError(f"headless Chromium failed to start: {first}") from None
        try:
            yield driver
        except WebDriverException as exc:
            raise BenchError(f"headless Chromium failed: {(exc.msg or type(exc).__name__).strip()[:200]}") from None
        finally:
            driver.quit()


def screenshot(page: Path, width: int = 1280, height: int = 1500) -> bytes:
    """PNG of the top of ``page`` in a ``width`` x ``height`` window (less when the page is shorter), with a
    256-colour palette: a third of the bytes, no visible difference on a page of text and line plots."""

    from PIL import Image  # lazy: PIL

    with chromium(width=width, height=height) as driver:
        driver.get(Path(page).resolve().as_uri())
        full = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(width, min(height, max(full, 200)))
        image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    buffer = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
