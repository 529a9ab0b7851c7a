"""``fsar app`` end to end in a real browser: Debian's headless Chromium driven by Selenium.

Starts ``fsar app`` on a free loopback port (``--port 0``), adds two actions by uploading
their clips, uploads a query, waits for the verdict, asserts the label on the page, checks a
corrupt upload gets a message, records a query from Chromium's fake webcam, and saves a
screenshot (``tmp_path/app.png``; also copied into ``$FSAR_ARTIFACTS`` when set).

Skips, with the reason printed by pytest's ``-ra``, only where no Chromium/chromedriver is
installed (``.ci/run`` installs Debian's ``chromium chromium-driver``) or the [app] extra is
missing. No driver is downloaded: the service path is given, which keeps Selenium Manager off.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("FSAR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FSAR_CHROMEDRIVER", "/usr/bin/chromedriver")

pytestmark = pytest.mark.slow

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(f"no Chromium at {CHROMIUM} and chromedriver at {CHROMEDRIVER} "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)
pytest.importorskip("selenium", reason="selenium (the [app] extra) is not installed")
pytest.importorskip("fastapi", reason="the [app] extra is not installed")

from app_clips import TINY_FLAGS, write_clip, write_clips  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture()
def server(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "server.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "fsar", "app", "--port", "0", "--workdir", str(tmp_path / "work"),
         "--reject", "off", "--max-upload-mb", "5", *TINY_FLAGS],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    url = None
    deadline = time.time() + 240
    while time.time() < deadline and url is None:
        if process.poll() is not None:
            break
        log.seek(0)
        match = re.search(r"http://127\.0\.0\.1:\d+/", log.read())
        url = match.group(0) if match else None
        time.sleep(0.5)
    if url is None:
        process.kill()
        log.seek(0)
        pytest.fail(f"fsar app did not start:\n{log.read()}")
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture()
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1300",
                 # a test-pattern camera, granted without a prompt: the webcam recording path
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="fsar-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait(driver, condition, timeout=180, what="the page"):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.3).until(lambda d: condition(d))
    except Exception:
        message = driver.find_element(By.ID, "message").text
        raise AssertionError(f"timed out waiting for {what}; message on the page: {message!r}") from None


def test_browser_adds_actions_recognises_and_shows_why(server, browser, tmp_path):
    clips = write_clips(tmp_path / "clips", clips=3)
    browser.get(server)
    wait(browser, lambda d: "no actions yet" in d.find_element(By.ID, "actions").text, what="the empty list")
    for name in ("red", "green", "blue"):
        browser.find_element(By.ID, "action-name").send_keys(name)
        browser.find_element(By.ID, "action-files").send_keys("\n".join(str(p) for p in clips[name][:2]))
        browser.find_element(By.ID, "add-button").click()
        wait(browser, lambda d, n=name: f"{n} (2 clips)" in d.find_element(By.ID, "actions").text, what=f"action {name}")

    # a corrupt upload: a message on the page, not a trace
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video")
    browser.find_element(By.ID, "query-file").send_keys(str(fake))
    browser.find_element(By.ID, "predict-button").click()
    wait(browser, lambda d: "not a readable video" in d.find_element(By.ID, "message").text, what="the error message")
    assert "Traceback" not in browser.page_source

    query = clips["green"][2]
    browser.find_element(By.ID, "query-file").send_keys(str(query))
    browser.find_element(By.ID, "predict-button").click()
    verdict = wait(browser, lambda d: d.find_element(By.ID, "verdict").get_attribute("data-label"), what="the verdict")
    assert verdict == "green"
    assert browser.find_element(By.ID, "verdict").text.startswith("green")
    assert not browser.find_element(By.ID, "message").is_displayed()
    wait(browser, lambda d: d.execute_script(
        "const i = document.getElementById('explanation'); return i.complete && i.naturalWidth > 0;"),
        what="the explanation picture")
    rows = browser.find_elements(By.CSS_SELECTOR, "#ranking tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows][0] == "green" and len(rows) == 3

    screenshot = tmp_path / "app.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("FSAR_ARTIFACTS"):
        target = Path(os.environ["FSAR_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target / "app.png")

    # "none of these" from the page: with a threshold, a query below it is rejected, one above is named
    browser.find_element(By.CSS_SELECTOR, "#reject option[value='0.7']").click()
    wait(browser, lambda d: "rejecting below 70%" in d.find_element(By.ID, "calibration").text, what="the threshold")
    unknown = write_clip(tmp_path / "grey.mp4", (128, 128, 128), seed=99)
    browser.find_element(By.ID, "query-file").send_keys(str(unknown))
    browser.find_element(By.ID, "predict-button").click()
    wait(browser, lambda d: d.find_element(By.ID, "explanation").get_attribute("data-query") == "grey.mp4",
         what="the grey verdict")
    cells = browser.find_elements(By.CSS_SELECTOR, "#ranking tr")[0].find_elements(By.TAG_NAME, "td")
    top_class, top_probability = cells[0].text, float(cells[1].text.rstrip("%")) / 100
    label = browser.find_element(By.ID, "verdict").get_attribute("data-label")
    assert label == ("none of these" if top_probability < 0.7 else top_class)

    # remove an action from the page
    browser.find_element(By.CSS_SELECTOR, "button[title='remove blue']").click()
    wait(browser, lambda d: "blue" not in d.find_element(By.ID, "actions").text, what="the removal")


def test_browser_records_a_query_from_the_webcam(server, browser, tmp_path):
    clips = write_clips(tmp_path / "clips", clips=2)
    browser.get(server)
    for name in ("red", "green"):
        browser.find_element(By.ID, "action-name").send_keys(name)
        browser.find_element(By.ID, "action-files").send_keys("\n".join(str(p) for p in clips[name]))
        browser.find_element(By.ID, "add-button").click()
        wait(browser, lambda d, n=name: f"{n} (2 clips)" in d.find_element(By.ID, "actions").text, what=f"action {name}")
    browser.find_element(By.ID, "record-button").click()
    label = wait(browser, lambda d: d.find_element(By.ID, "verdict").get_attribute("data-label")
                 or ("error" if d.find_element(By.ID, "message").is_displayed() else None), what="the webcam verdict")
    assert label in ("red", "green"), browser.find_element(By.ID, "message").text
