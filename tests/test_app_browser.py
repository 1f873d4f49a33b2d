"""`argen app` in a real headless browser: the page generates an image, and a bad input shows an error.

Needs the app extra and a browser (`make setup-app`: gradio, selenium, Debian's chromium + chromium-driver);
skipped where they are missing. ARGEN_APP_SCREENSHOT=FILE also saves a screenshot of the page after the
generation (how docs/app/app.png was made).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not Path(CHROMEDRIVER).is_file(), reason="no chromedriver (apt-get install chromium chromium-driver)"
)
START_S, REQUEST_S = 60, 120  # generous: CI machines are shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "argen", "--threads", "1", "app", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, url = time.monotonic() + START_S, None
        while url is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"argen app exited with {proc.returncode}")
            if "serving on" in line:
                url = line.split("serving on ")[1].split()[0]
            assert time.monotonic() < deadline, f"argen app did not start in {START_S} s"
        assert url.startswith(f"http://127.0.0.1:{port}"), url  # bound to this machine only
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1100",
    ):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="argen_chromium_") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        if Path("/usr/bin/chromium").is_file():
            options.binary_location = "/usr/bin/chromium"
        service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield driver
        finally:
            driver.quit()


def _image_loaded(driver: webdriver.Chrome, css: str) -> bool:
    """True once the <img> under `css` has a decoded picture."""
    images = driver.find_elements(By.CSS_SELECTOR, f"{css} img")
    return any(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in images
    )


def test_page_generates_an_image_and_shows_errors(app_url: str, browser: webdriver.Chrome) -> None:
    browser.get(app_url)
    wait = WebDriverWait(browser, REQUEST_S)
    button = wait.until(lambda d: d.find_element(By.ID, "generate"))
    assert not _image_loaded(browser, "#grid")
    button.click()
    wait.until(lambda d: _image_loaded(d, "#grid") and _image_loaded(d, "#frames"))
    width = browser.execute_script("return document.querySelector('#grid img').naturalWidth")
    assert width == 3 * (10 * 34 + 2)  # ten 32 px images, 2 px padding, upscaled 3x
    stats = browser.find_element(By.ID, "stats").text
    assert "ear_any_fmnist" in stats and "8 passes" in stats and "GFLOPs" in stats
    if os.environ.get("ARGEN_APP_SCREENSHOT"):
        time.sleep(0.6)  # the growth GIF reaches its held last frame
        browser.save_screenshot(os.environ["ARGEN_APP_SCREENSHOT"])

    classes = browser.find_element(By.CSS_SELECTOR, "#classes textarea, #classes input")
    classes.clear()
    classes.send_keys("42")
    button.click()
    wait.until(lambda d: "out of range" in d.find_element(By.TAG_NAME, "body").text)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "class id(s) [42] out of range: this model has classes 0..9" in body
    assert "Traceback" not in body
