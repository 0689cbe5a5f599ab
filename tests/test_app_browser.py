"""The restoration page in a real browser: Debian's chromium driven by selenium (no browser download).

Starts app.py on a free loopback port, picks a held-out test digit, restores it and checks that the
samples, the mean and the timing appear, runs RED-Diff-100 beside it; uploads a corrupt file and checks the message on the page;
stops the server. DAVI_APP_SCREENSHOT=docs/app.png also saves a screenshot of the restored page.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.slow

if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); "
                ".ci/run installs them with apt-get", allow_module_level=True)
pytest.importorskip("gradio", reason="the optional extra davi[app] is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="the optional extra davi[browser-test] is not installed")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

START_TIMEOUT = 60  # seconds for the server to answer (Gradio's import dominates)
ACTION_TIMEOUT = 60  # seconds for a restore, the first of which loads the mapper and the digits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    log = open(tmp_path / "app.log", "w")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DAVI_APP_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}: {(tmp_path / 'app.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer on {url} within {START_TIMEOUT} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1150"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def test_restore_a_test_digit_and_reject_a_corrupt_upload(server, browser, tmp_path):
    wait = WebDriverWait(browser, ACTION_TIMEOUT)
    browser.get(server)
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#restore")))

    # pick held-out test digit 7 through the slider's number box
    box = browser.find_element(By.CSS_SELECTOR, "#index input[type=number]")
    box.clear()
    box.send_keys("7\n")
    browser.find_element(By.CSS_SELECTOR, "#restore").click()
    wait.until(lambda d: "DAVI" in text_of(d, "#timing"))
    timing = text_of(browser, "#timing")
    assert "ms per image" in timing and "8 samples" in timing, timing
    samples = browser.find_elements(By.CSS_SELECTOR, "#gallery img")
    assert len(samples) >= 8
    for elem_id in ("measurement", "lift", "mean", "std", "truth"):
        img = browser.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
        assert img and img[0].get_attribute("src"), f"no image in #{elem_id}"
    assert "⚠" not in text_of(browser, "#status")

    # RED-Diff-100 on the same measurement, with its time
    browser.find_element(By.CSS_SELECTOR, "#red-diff").click()
    wait.until(lambda d: "RED-Diff-100" in text_of(d, "#red-diff-timing"))
    assert "s per image" in text_of(browser, "#red-diff-timing")
    assert browser.find_elements(By.CSS_SELECTOR, "#red-diff-out img")
    shot = os.environ.get("DAVI_APP_SCREENSHOT")
    if shot:
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(ROOT / shot))

    # a corrupt upload: a message on the page, not a traceback
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not the rest of a PNG")
    browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Upload')]").click()
    file_input = WebDriverWait(browser, 10).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
    file_input.send_keys(str(corrupt))
    wait.until(lambda d: "not a readable image" in text_of(d, "#status"))
    assert "corrupt.png" in text_of(browser, "#status")
    assert "Traceback" not in browser.page_source
