"""Fixtures for the pipeline tests: one trained and registered tiny model."""

from __future__ import annotations

import shutil

import pytest
import torch

from ..conftest import checkpoints, finish, start, train_command


@pytest.fixture(scope="session")
def trained(tone_shards, tmp_path_factory) -> dict:
    """One short `make train` run whose generator is registered as wavegan-generator version 1.

    It trains with the polyphase convolutions (``model.conv_impl=polyphase``), so the same run also shows
    that form through the real entry point; the other end-to-end runs use the default (``auto``). Its budget is a
    wall-clock one (``train.max_minutes``) spent before the first log step, so it ends at step 10."""
    base = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{base}/mlflow.db"
    log = base / "train.log"
    proc = start(train_command(tone_shards, base / "ray", uri, "train.steps=null", "train.max_minutes=0.001",
                               "model.conv_impl=polyphase",
                               "tracking.system_metrics_every_s=1",  # a sample within the short run
                               "tracking.preview_every=10"), log)  # a preview sheet at its one log step
    out = finish(proc, log, timeout=900)
    assert proc.returncode == 0, out[-5000:]
    return {"uri": uri, "base": base, "checkpoint": checkpoints(base / "ray")[-1], "shards": tone_shards}


@pytest.fixture
def one_thread_own_store(monkeypatch):
    """One torch thread (shared cores); no tracking URI from the environment: each call names its store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's headless chromium through selenium and chromium-driver (make test-deps installs both)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium / chromium-driver are not installed (make test-deps installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1200,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
