"""The web page at `/` in headless Chromium (Debian's, through Selenium): an upload, a recording from
Chromium's fake microphone (it plays a wav), and a server error followed by a good request. With
CTXPRUNE_SCREENSHOTS naming a folder, the upload and the error are saved there as PNG for the docs."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import numpy as np
import pytest
import soundfile as sf

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        f"the page tests drive Debian's Chromium: {CHROMIUM} or {CHROMEDRIVER} is missing "
        "(apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from tests.serve.conftest import CLIP, CLIP_TEXT, STATIC  # noqa: E402

pytestmark = pytest.mark.real
SCREENSHOTS = os.environ.get("CTXPRUNE_SCREENSHOTS")


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", "", text.lower()).split()


@contextmanager
def chromium(*flags: str) -> Iterator[webdriver.Chrome]:
    """Headless Chromium at 1280x1000; the binary and the driver are given, so Selenium fetches nothing."""
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_window_size(1280, 1000)
        yield driver
    finally:
        driver.quit()


def state(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def wait_for(driver, *states: str, timeout: float = 120) -> str:
    WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: state(d) in states)
    return state(driver)


def open_page(driver, url: str, task: str, language: str, model: str) -> None:
    driver.get(url + "/")
    assert wait_for(driver, "ready", "error", timeout=30) == "ready", text(driver, "error")
    Select(driver.find_element(By.ID, "task")).select_by_value(task)
    Select(driver.find_element(By.ID, "language")).select_by_value(language)
    Select(driver.find_element(By.ID, "model")).select_by_value(model)


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def submit(driver, *finished: str) -> str:
    button = driver.find_element(By.ID, "submit")
    WebDriverWait(driver, 30).until(lambda d: button.is_enabled())
    button.click()
    return wait_for(driver, *(finished or ("done", "error")))


def screenshot(driver, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SCREENSHOTS) / name))


def cells(driver) -> dict[str, float]:
    found = driver.find_elements(By.CSS_SELECTOR, "#grid .cell[data-module]")
    return {c.get_attribute("data-module"): float(c.get_attribute("data-share")) for c in found}


def test_an_upload_shows_text_grid_flops_and_latency(server_url):
    with open(CLIP, "rb") as f:
        direct = httpx2.post(
            f"{server_url}/v1/audio/transcriptions",
            files={"file": ("clip.wav", f)},
            data={"model": STATIC.name, "language": "en", "response_format": "verbose_json"},
            timeout=120,
        ).json()
    with chromium() as driver:
        open_page(driver, server_url, "transcribe", "en", STATIC.name)
        assert Select(driver.find_element(By.ID, "language")).first_selected_option.text == "English (en)"
        driver.find_element(By.ID, "file").send_keys(CLIP)
        assert submit(driver) == "done", text(driver, "error")
        shown = text(driver, "text")
        # the page shows the server's text as it is; the pruned model hears the clip, give or take a
        # word (on CPU it says "ill-sposed" for "ill-disposed")
        assert shown == direct["text"].strip()
        expected = words(CLIP_TEXT)
        assert len(words(shown)) == len(expected)
        assert sum(a != b for a, b in zip(words(shown), expected, strict=True)) <= 1, shown
        assert "young man" in text(driver, "segments")
        extra = direct["ctxprune"]
        shares = cells(driver)
        assert len(shares) == 30 and shares == dict(
            zip(extra["modules"], extra["module_ran_share"], strict=True)
        )
        assert 0 in shares.values() and 1 in shares.values()
        never = driver.find_elements(By.CSS_SELECTOR, "#grid .cell.never")
        assert len(never) == list(shares.values()).count(0) and never[0].text == "off"
        saved = re.fullmatch(r"(\d+\.\d)%", text(driver, "flops-saved"))
        assert saved and float(saved[1]) > 0
        assert float(saved[1]) == pytest.approx((1 - extra["flops_executed_share"]) * 100, abs=0.051)
        assert re.fullmatch(r"\d+\.\d\d s server · \d+\.\d\d s round trip", text(driver, "latency"))
        assert not driver.find_element(By.ID, "error").is_displayed()
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # no script errors
        screenshot(driver, "serve_page.png")


def test_a_recording_is_encoded_as_wav_and_transcribed(server_url, tmp_path):
    # Chromium's fake microphone plays a PCM wav (16 kHz 16-bit here; it resamples to the device's rate)
    # from the moment the stream opens, in a loop unless the path ends in "%noloop". Looping, 4 s hold a
    # second, cut copy ("... young man. He was..."); once, with half a second of silence ahead (the
    # recorder starts a little after the stream), the recording holds the clip exactly once.
    clip, rate = sf.read(CLIP, dtype="float32")
    audio = np.concatenate([np.zeros(rate // 2, np.float32), clip, np.zeros(rate, np.float32)])
    wav = tmp_path / "microphone.wav"
    sf.write(str(wav), audio, rate, subtype="PCM_16")
    flags = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    )
    with chromium(*flags) as driver:
        open_page(driver, server_url, "transcribe", "en", "dense")
        record = driver.find_element(By.ID, "record")
        record.click()
        WebDriverWait(driver, 10).until(lambda d: "recording" in (record.get_attribute("class") or ""))
        time.sleep(4)
        record.click()
        source = driver.find_element(By.ID, "source")  # data-kind is set once the WAV is encoded
        WebDriverWait(driver, 30).until(lambda d: source.get_attribute("data-kind") in ("recording", ""))
        assert source.get_attribute("data-kind") == "recording", text(driver, "error")
        seconds = float(re.search(r"([\d.]+) s", source.text)[1])
        assert 3.8 < seconds < 6, source.text
        assert submit(driver) == "done", text(driver, "error")
        assert words(text(driver, "text")) == words(CLIP_TEXT), text(driver, "segments")


def test_a_server_error_is_shown_and_the_next_request_works(server_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio at all\n")
    with chromium() as driver:
        open_page(driver, server_url, "transcribe", "auto", "dense")
        error = driver.find_element(By.ID, "error")
        assert not error.is_displayed()
        driver.find_element(By.ID, "file").send_keys(str(notes))
        assert submit(driver) == "error"
        assert error.is_displayed()
        assert "could not read the audio" in error.text and "not a readable audio file" in error.text
        screenshot(driver, "serve_page_error.png")
        driver.find_element(By.ID, "file").send_keys(CLIP)
        assert submit(driver) == "done", error.text
        assert not error.is_displayed()
        assert words(text(driver, "text")) == words(CLIP_TEXT)
