"""``make mlflow-ui`` over the session's trained run, in a real browser: the experiment opens in the UI's training
mode on its runs table, the run page shows the run's description and its dataset, the registered version its
description. Screenshots go to the test's folder, and to ``$WAVEGAN_SCREENSHOTS`` (docs/img for the README)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from data_prep.manifest import read_manifest

from ..conftest import ROOT, free_port, kill_group, wait_for

pytestmark = pytest.mark.slow
MODEL = "wavegan-generator"


@pytest.fixture(scope="module")
def ui(trained, tmp_path_factory):
    """``python -m pipeline.tracking.server`` (``make mlflow-ui``) over the trained run's store; its printed page."""
    port, log = free_port(), tmp_path_factory.mktemp("mlflow-ui") / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.tracking.server", "--port", str(port), "--backend-store-uri", trained["uri"],
         "--artifacts", str(trained["base"] / "mlartifacts")],
        cwd=ROOT, env={**os.environ, "MLFLOW_WORKERS": "1"}, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True)

    def healthy() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 180, "the MLflow server", server, log)
        page = re.search(r"the runs of wavegan: (\S+)", log.read_text())
        assert page, log.read_text()
        yield {"base": f"http://127.0.0.1:{port}", "page": page.group(1)}
    finally:
        kill_group(server)


def page_text(browser, url: str, *expected: str, timeout: float = 90) -> str:
    """Open ``url`` and wait until the page's text holds every ``expected`` string; that text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    try:
        WebDriverWait(browser, timeout).until(
            lambda d: all(s in d.find_element(By.TAG_NAME, "body").text for s in expected))
    except Exception:
        pytest.fail(f"{url} never showed {expected}:\n{browser.find_element(By.TAG_NAME, 'body').text[:3000]}")
    return browser.find_element(By.TAG_NAME, "body").text


def screenshot(browser, name: str, folder: Path) -> None:
    """A small palette PNG of the window into ``folder`` (and ``$WAVEGAN_SCREENSHOTS``, when set)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB").quantize(64)
    for target in filter(None, (folder, os.environ.get("WAVEGAN_SCREENSHOTS"))):
        Path(target).mkdir(parents=True, exist_ok=True)
        image.save(Path(target) / f"{name}.png", optimize=True)


def test_the_experiment_opens_on_its_training_runs(browser, ui, trained):
    assert ui["page"].startswith(f"{ui['base']}/#/experiments/"), ui
    assert ui["page"].endswith("?workflowType=machine_learning"), ui
    text = page_text(browser, ui["page"], "Run Name", "Dataset", "tiny")
    assert "/overview" not in browser.current_url and "Token Usage" not in text, text  # not the GenAI overview
    assert f"{Path(trained['shards']).name} (" in text, text  # the runs table's Datasets column


def test_the_run_page_shows_its_description_and_dataset(browser, ui, trained, tmp_path):
    client = MlflowClient(trained["uri"])
    run = client.get_run(client.get_model_version(MODEL, "1").run_id)
    fingerprint = read_manifest(str(trained["shards"]))["fingerprint"]
    url = f"{ui['base']}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning"
    browser.set_window_size(1280, 1180)  # tall enough to show the description below the datasets
    text = page_text(browser, url, "Data: shards", f"make generate MODEL_URI=models:/{MODEL}/1", "Datasets")
    assert f"Datasets\n{Path(trained['shards']).name} ({fingerprint[:36]})\nTraining" in text, text
    screenshot(browser, "mlflow-run", tmp_path)


def test_the_registered_version_says_what_it_is(browser, ui, tmp_path):
    browser.set_window_size(1280, 860)
    text = page_text(browser, f"{ui['base']}/#/models/{MODEL}/versions/1?workflowType=machine_learning",
                     "Generate: make generate", "train.step")
    assert "Serve: make serve" in text and "data.fingerprint" in text, text
    screenshot(browser, "mlflow-model", tmp_path)
