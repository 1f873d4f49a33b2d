"""`argen app` in a real headless browser: each tab runs, and a bad input shows its message in place of the
result (the earlier pictures gone).

Needs the app extra and a browser (`make setup-app`: gradio, selenium, Debian's chromium + chromium-driver);
skipped where they are missing. ARGEN_APP_SCREENSHOT=FILE also saves a screenshot of the page after the
generation (how docs/app/app.png was made).
"""

from __future__ import annotations

import os
import re
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


def _text(driver: webdriver.Chrome, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def _type(driver: webdriver.Chrome, css: str, text: str) -> None:
    box = driver.find_element(By.CSS_SELECTOR, f"{css} textarea, {css} input")
    box.clear()
    box.send_keys(text)


def _refused(driver: webdriver.Chrome, text_css: str, message: str, images: tuple[str, ...]) -> None:
    """The message replaced the result text, the earlier pictures are gone, and nothing is a traceback."""
    WebDriverWait(driver, REQUEST_S).until(lambda d: message in _text(d, text_css))
    assert _text(driver, text_css).startswith("Error: ")
    assert not any(_image_loaded(driver, css) for css in images)
    assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text


def _open(driver: webdriver.Chrome, url: str, tab: str) -> WebDriverWait:
    driver.get(url)
    wait = WebDriverWait(driver, REQUEST_S)
    wait.until(lambda d: d.find_element(By.ID, "generate"))
    driver.find_element(By.XPATH, f"//button[@role='tab' and contains(., '{tab}')]").click()
    return wait


def test_sample_tab_generates_and_explains_a_bad_input(app_url: str, browser: webdriver.Chrome) -> None:
    browser.get(app_url)
    wait = WebDriverWait(browser, REQUEST_S)
    button = wait.until(lambda d: d.find_element(By.ID, "generate"))
    assert not _image_loaded(browser, "#grid")
    button.click()
    wait.until(lambda d: _image_loaded(d, "#grid") and _image_loaded(d, "#frames"))
    width = browser.execute_script("return document.querySelector('#grid img').naturalWidth")
    assert width == 3 * (10 * 34 + 2)  # ten 32 px images, 2 px padding, upscaled 3x
    stats = _text(browser, "#stats")
    assert "ear_any_fmnist" in stats and "8 passes" in stats and "GFLOPs" in stats and "CFG 2.5" in stats
    assert re.search(r"in (bf16|fp32) on cpu", stats), stats  # the dtype and device that ran
    if os.environ.get("ARGEN_APP_SCREENSHOT"):
        time.sleep(0.6)  # the growth GIF reaches its held last frame
        browser.save_screenshot(os.environ["ARGEN_APP_SCREENSHOT"])

    _type(browser, "#classes", "42")
    button.click()
    message = "class id(s) [42] out of range: this model has classes 0..9"
    _refused(browser, "#stats", message, ("#grid", "#frames"))
    _type(browser, "#classes", "3")
    button.click()  # a new result replaces the message
    wait.until(lambda d: _image_loaded(d, "#grid") and "Error" not in _text(d, "#stats"))


def test_extend_tab_extends_and_explains_a_bad_input(app_url: str, browser: webdriver.Chrome) -> None:
    wait = _open(browser, app_url, "Extend")
    wait.until(lambda d: d.find_element(By.ID, "extend")).click()
    wait.until(lambda d: _image_loaded(d, "#ext_image"))
    assert "extension: 8x8 centre tokens -> 20x20 canvas" in _text(browser, "#ext_stats")
    _type(browser, "#ext_cfg", "-2")
    browser.find_element(By.ID, "extend").click()
    _refused(
        browser, "#ext_stats", "the guidance scale (CFG) must be >= 0 (1 = off), got -2", ("#ext_image",)
    )


def test_side_by_side_tab_compares_and_explains_a_bad_input(app_url: str, browser: webdriver.Chrome) -> None:
    wait = _open(browser, app_url, "Side by side")
    _type(browser, "#cmp_classes", "0,1")
    wait.until(lambda d: d.find_element(By.ID, "compare")).click()
    wait.until(lambda d: _image_loaded(d, "#left_grid") and _image_loaded(d, "#right_grid"))
    _type(browser, "#cmp_classes", "shoe")
    browser.find_element(By.ID, "compare").click()
    message = "classes: give comma-separated whole numbers such as 0,3,7 (got 'shoe')"
    _refused(browser, "#left_stats", message, ("#left_grid", "#right_grid"))
