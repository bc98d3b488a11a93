"""The page in a real browser (headless Chromium driven by Selenium) against a real
uvicorn server: the form is built from /schema, a film and a record give the
probabilities FusionClassifier.predict gives, an out-of-range value is refused next to
its field by the browser and, when the browser's check is bypassed, by the server.

Skips with the reason when Chromium, its driver or the serve extra is missing
(``.ci/run`` installs them where apt is available). Set FUSION_SERVE_SCREENSHOT=PATH
to keep the screenshot (docs/serve.png, on the README and the serving page, is made so), and
FUSION_SERVE_TEST_MODEL=RUN_DIR to drive another model than the tiny test one.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from fusion import FusionClassifier, synthetic

pytest.importorskip("fastapi", reason="the service is tested with the serve extra: pip install '.[serve]'")
pytest.importorskip("uvicorn", reason="the service is tested with the serve extra: pip install '.[serve]'")
pytest.importorskip("selenium", reason="the browser test needs selenium, a test tool: pip install '.[test]'")

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from fusion.serve import create_app
from fusion.serve.server import server_config

WAIT_S = 30


def _browser_paths() -> tuple[str, str]:
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "no headless browser on this machine (chromium and chromedriver): "
            "apt-get install -y chromium chromium-driver, as .ci/run does where apt is available"
        )
    return browser, driver


@pytest.fixture(scope="module")
def model(request) -> Path:
    override = os.environ.get("FUSION_SERVE_TEST_MODEL")
    return Path(override) if override else request.getfixturevalue("tiny_runs")["fused"]


@pytest.fixture(scope="module")
def server(model):
    """A real uvicorn server in a thread, on a free port of 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Configured as python -m fusion.serve does (its header deadline, keep-alive, limits).
    server = uvicorn.Server(server_config(create_app(model), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the uvicorn server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # with both paths given, Selenium looks nothing up online
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        "--window-size=1180,1400",
    ):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as err:  # a browser that cannot start here is a missing browser
        pytest.skip(f"headless chromium could not start: {str(err).splitlines()[0][:200]}")
    yield driver
    driver.quit()


def _state(driver, *states: str):
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in states
    )
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def _fill(driver, record: dict) -> None:
    for name, value in record.items():
        field = driver.find_element(By.ID, f"field-{name}")
        if field.tag_name == "select":
            field.find_element(By.CSS_SELECTOR, f"option[value='{value}']").click()
        else:
            field.clear()
            field.send_keys(f"{value:g}" if isinstance(value, float) else str(value))


def test_page_predicts_like_the_library_and_shows_field_errors(server, browser, model, tmp_path):
    clf = FusionClassifier.load(model)
    record, image = synthetic.example(seed=7, image_size=256)
    record = {k: v for k, v in record.items() if not (isinstance(v, float) and math.isnan(v))}
    film = tmp_path / "film.png"
    image.save(film)

    browser.get(server)
    _state(browser, "ready")
    assert "Research tool, not a diagnosis" in browser.find_element(By.TAG_NAME, "body").text
    spo2 = browser.find_element(By.ID, "field-spo2")
    assert spo2.get_attribute("min") == "50" and spo2.get_attribute("max") == "100"
    assert "%" in browser.find_element(By.CSS_SELECTOR, "label[for=field-spo2]").text

    _fill(browser, record)
    browser.find_element(By.ID, "image").send_keys(str(film))
    browser.find_element(By.ID, "predict").click()
    assert _state(browser, "done", "refused", "error") == "done"

    expected = clf.predict(record, film)
    rows = browser.find_elements(By.CSS_SELECTOR, "#probabilities tr[data-class]")
    shown = {row.get_attribute("data-class"): float(row.get_attribute("data-probability")) for row in rows}
    assert shown == pytest.approx(expected.probabilities, abs=1e-12)
    for row in rows:  # the figures a person reads
        p = expected.probabilities[row.get_attribute("data-class")]
        assert abs(float(row.find_element(By.CSS_SELECTOR, "td.value").text) - p) <= 0.0005 + 1e-9
    assert browser.find_element(By.ID, "label").text == expected.label
    assert browser.find_element(By.ID, "modalities").text == "image + record"
    heatmap = browser.find_element(By.ID, "heatmap")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", heatmap) >= 256
    assert browser.find_elements(By.CSS_SELECTOR, "#drivers tr[data-feature]")
    shares = [float(s.get_attribute("data-share")) for s in browser.find_elements(By.CSS_SELECTOR, "#shares div")]
    assert sum(shares) == pytest.approx(1.0)
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
    if os.environ.get("FUSION_SERVE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["FUSION_SERVE_SCREENSHOT"])

    # Out of range: the browser refuses it next to the field, before any request.
    _fill(browser, {"spo2": 140})
    browser.find_element(By.ID, "predict").click()
    assert _state(browser, "invalid") == "invalid"
    assert "'spo2' must be a number in [50, 100]" in browser.find_element(By.ID, "error-spo2").text

    # With the browser's check removed, the server refuses it: its message, next to the field.
    browser.execute_script(
        "const f = document.getElementById('field-spo2'); f.removeAttribute('min'); f.removeAttribute('max');"
    )
    browser.find_element(By.ID, "predict").click()
    assert _state(browser, "refused") == "refused"
    with pytest.raises(ValueError) as refused:
        clf.predict({**record, "spo2": 140}, film)
    assert browser.find_element(By.ID, "error-spo2").text == str(refused.value)
    assert browser.find_element(By.ID, "error-form").text == ""
