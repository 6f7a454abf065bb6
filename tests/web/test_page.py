"""The drum-machine page of ``make web`` in headless Chromium, opened as a file and through ``make web-serve``
(``python -m pipeline.export.serve``): onnxruntime-web's audio against PyTorch's, every pad, Save, copy/paste of
latents and their refusals, the network and the console."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import wave

import numpy as np
import pytest
import torch

from pipeline.generate import load_generator
from pipeline.tracking.client import Tracking
from tests.conftest import ROOT, free_port, kill_group, run_env, wait_for
from tests.web.models import LABELS

SLICE_LEN, SAMPLE_RATE = 16384, 16000

READY = """
const done = arguments[arguments.length - 1];
wavegan.ready.then(() => done({
  pads: wavegan.pads.map(p => [p.buffer.length, p.buffer.sampleRate, p.buffer.numberOfChannels]),
  threads: wavegan.threads(), isolated: self.crossOriginIsolated,
  identity: document.getElementById('identity').textContent,
  message: document.getElementById('message').hidden ? '' : document.getElementById('message').textContent,
}), e => done({error: String(e)}));
"""
GENERATE = """
const [z, labels, n, done] = arguments;
wavegan.generate(z, labels, n).then(clips => done(clips.map(c => Array.from(c))), e => done(String(e)));
"""
PAD = "return Array.from(wavegan.pads[arguments[0]].buffer.getChannelData(0))"


def reference(exported: dict, z: torch.Tensor, labels: list[int]) -> np.ndarray:
    """PyTorch's audio for (z, labels) from the registered model, through the generation path."""
    from wavegan.sampling import generate

    if "model" not in exported:
        exported["model"] = load_generator("models:/wavegan-generator/1",
                                           tracking=Tracking.from_config(exported["store"])).model
    return generate(exported["model"], z, torch.tensor(labels)).numpy()[:, 0]


def requests(driver) -> list[str]:
    """URLs the page asked for since the last call (Chromium's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def wait_message(driver, contains: str) -> str:
    deadline = time.time() + 10
    while time.time() < deadline:
        text = driver.execute_script("const m = document.getElementById('message'); return m.hidden ? '' : "
                                     "m.textContent")
        if contains in text:
            return text
        time.sleep(0.1)
    pytest.fail(f"no visible message containing {contains!r}")


def exercise(driver, exported: dict, url: str, origin: str) -> dict:
    """Open the page and check what both ways of opening it must do; returns the READY state."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get_log("performance"), driver.get_log("browser")  # only this page's entries from here on
    driver.get(url)
    state = driver.execute_async_script(READY)
    assert "error" not in state and not state["message"], state
    assert state["pads"] == [[SLICE_LEN, SAMPLE_RATE, 1]] * 8, state["pads"]
    assert "wavegan-generator v1" in state["identity"] and exported["run_id"] in state["identity"], state
    assert "eval IS 2.5" in state["identity"], state["identity"]

    # onnxruntime-web vs PyTorch: seeded latents, every label, through the page's generate and a pad's paste z
    from wavegan.latents import sample_latents

    z = sample_latents(len(LABELS), 100, generator=torch.Generator().manual_seed(7))
    labels = list(range(len(LABELS)))
    expected = reference(exported, z, labels)
    got = np.array(driver.execute_async_script(GENERATE, z.flatten().tolist(), labels, len(LABELS)))
    assert got.shape == (len(LABELS), SLICE_LEN)
    assert np.abs(got - expected).max() <= 1e-3, np.abs(got - expected).max()
    assert np.abs(expected).max() > 1e-3  # the model says something the comparison can miss

    box = driver.find_element(By.ID, "zbox")
    box.clear()
    box.send_keys(json.dumps({"label": LABELS[2], "z": z[0].tolist()}))
    driver.find_element(By.CSS_SELECTOR, "#pad3 .paste").click()
    wait_for(lambda: driver.execute_script("return document.querySelector('#pad3 select').value") == "2", 10,
             "pad 3's label to follow the pasted one")
    pad3 = reference(exported, z[:1], [2])[0]
    wait_for(lambda: np.abs(np.array(driver.execute_script(PAD, 2)) - pad3).max() <= 1e-3, 10,
             "pad 3 to hold the pasted latent's audio")

    # copy z gives back what was pasted
    driver.find_element(By.CSS_SELECTOR, "#pad3 .copy").click()
    copied = json.loads(box.get_attribute("value"))
    assert copied["label"] == LABELS[2] and np.allclose(copied["z"], z[0].numpy(), atol=1e-7)

    # refusals, visible on the page
    box.clear()
    box.send_keys(json.dumps({"z": [0.5] * 12}))
    driver.find_element(By.CSS_SELECTOR, "#pad1 .paste").click()
    assert "100 numbers, got 12" in wait_message(driver, "100 numbers")
    box.clear()
    box.send_keys(json.dumps({"label": "cowbell", "z": z[0].tolist()}))
    driver.find_element(By.CSS_SELECTOR, "#pad1 .paste").click()
    assert "not in this model" in wait_message(driver, "cowbell")

    # keys: 1 plays pad 1, Shift+2 draws a new z for pad 2
    before = driver.execute_script("return Array.from(wavegan.pads[1].z)")
    played = driver.execute_script("return wavegan.timings.length")
    driver.find_element(By.TAG_NAME, "h1").click()
    ActionChains(driver).send_keys("1").key_down(Keys.SHIFT).send_keys("2").key_up(Keys.SHIFT).perform()
    wait_for(lambda: driver.execute_script("return wavegan.timings.length") >= played + 2, 10, "two pads to play")
    assert driver.execute_script("return Array.from(wavegan.pads[1].z)") != before

    # Save: a 16-bit mono WAV of pad 3 at 16 kHz
    for old in driver.downloads.glob("*.wav"):
        old.unlink()
    driver.find_element(By.CSS_SELECTOR, "#pad3 .save").click()
    saved = wait_for(lambda: [p for p in driver.downloads.glob("pad3-*.wav")], 10, "the saved WAV")[0]
    assert saved.name == f"pad3-{LABELS[2]}.wav"
    with wave.open(io.BytesIO(saved.read_bytes())) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (
            1, 2, SAMPLE_RATE, SLICE_LEN)
        pcm = np.frombuffer(wav.readframes(SLICE_LEN), dtype="<i2") / 32767
    assert np.abs(pcm - np.clip(pad3, -1, 1)).max() <= 1e-3

    outside = [u for u in requests(driver) if not u.startswith((origin, "data:", "blob:"))]
    assert not outside, outside
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    return state


@pytest.mark.slow
def test_page_opened_as_a_file_generates_offline_single_threaded(chromium, exported):
    state = exercise(chromium, exported, (exported["page"] / "index.html").as_uri(), "file://")
    assert state["threads"] == 1 and not state["isolated"]

    chromium.set_window_size(390, 844)  # a phone: one column, nothing wider than the screen
    width = chromium.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width
    colours = {}
    for scheme in ("light", "dark"):  # the reader's theme, with the compare page's colours
        chromium.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                 {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
        colours[scheme] = chromium.execute_script("return getComputedStyle(document.body).backgroundColor")
    chromium.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    chromium.set_window_size(1200, 900)
    assert colours == {"light": "rgb(255, 255, 255)", "dark": "rgb(18, 18, 22)"}, colours


@pytest.mark.slow
def test_page_served_by_web_serve_is_cross_origin_isolated_and_threaded(chromium, exported, tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    server = subprocess.Popen([sys.executable, "-m", "pipeline.export.serve", "--dir", str(exported["web"]),
                               "--port", str(port)], cwd=ROOT, env=run_env(), stdout=log.open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "[web-serve]" in log.read_text(), 60, "web-serve to listen", server, log)
        origin = f"http://127.0.0.1:{port}/"
        state = exercise(chromium, exported, f"{origin}wavegan-generator-v1/", origin)
    finally:
        kill_group(server)
    assert state["isolated"], "COOP/COEP headers make the page cross-origin isolated"
    assert state["threads"] == min(4, chromium.execute_script("return navigator.hardwareConcurrency"))


def test_the_page_is_logged_beside_the_compare_pages(exported):
    client = exported["client"]
    logged = {a.path for a in client.list_artifacts(exported["run_id"], "web/wavegan-generator-v1")}
    assert {"web/wavegan-generator-v1/index.html", "web/wavegan-generator-v1/generator.onnx",
            "web/wavegan-generator-v1/inline"} <= logged, logged
