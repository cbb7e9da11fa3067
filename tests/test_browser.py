"""The page of `dlx serve` in a real browser: headless Chromium (Debian's chromium and
chromium-driver packages, driven by Selenium) draws a digit, uploads a PNG, sees predictions and
submits a label, signing its requests with WebCrypto."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from test_serve import add_user, digit_png, start_server, trained

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM.exists() and DRIVER.exists()),
                       reason="Debian packages chromium and chromium-driver are not installed"),
]


@pytest.fixture
def server(tmp_path):
    # the defaults (about 0.97 on digits): a clear stroke must be read right
    run = trained(tmp_path / "run", "trainer.epochs=null", "trainer.batch_size=128")
    state = tmp_path / "state"
    key_id, secret = add_user(state, "browser")
    proc, base = start_server(run, state)
    yield base, key_id, secret, state
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1000,800", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_draw_upload_predict_and_submit_in_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, key_id, secret, state = server
    browser.get(base + "/")
    browser.find_element(By.ID, "keyid").send_keys(key_id)
    browser.find_element(By.ID, "secret").send_keys(secret)
    result = browser.find_element(By.ID, "result")

    # draw a "1": a vertical stroke through the middle of the canvas
    pad = browser.find_element(By.ID, "pad")
    ActionChains(browser).move_to_element_with_offset(pad, 0, -100).click_and_hold() \
        .move_by_offset(0, 60).move_by_offset(0, 60).move_by_offset(0, 60).release().perform()
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 30).until(lambda d: result.text.startswith("Prediction:") or d.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == ""
    assert result.text == "Prediction: 1"  # the canvas went through the digits preprocessing
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars > div")
    assert len(bars) == 10
    browser.save_screenshot(str(tmp_path / "drawn.png"))

    # upload a PNG of a digit, then submit its true label as a sample
    png, label = digit_png(7)
    (tmp_path / "digit.png").write_bytes(png)
    browser.execute_script("document.getElementById('result').textContent = ''")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "digit.png"))
    browser.find_element(By.ID, "upload").click()
    WebDriverWait(browser, 30).until(lambda d: result.text.startswith("Prediction:"))
    assert result.text == f"Prediction: {label}"
    from selenium.webdriver.support.select import Select

    Select(browser.find_element(By.ID, "label")).select_by_visible_text(str(label))
    browser.find_element(By.ID, "submit").click()
    thanks = browser.find_element(By.ID, "thanks")
    WebDriverWait(browser, 30).until(lambda d: thanks.text.startswith("stored as") or d.find_element(By.ID, "error").text)
    assert thanks.text.startswith(f"stored as {label}"), browser.find_element(By.ID, "error").text
    assert len(list((state / "samples" / str(label)).glob("*.png"))) == 1
    browser.save_screenshot(str(tmp_path / "uploaded.png"))
    assert (tmp_path / "uploaded.png").stat().st_size > 10_000
