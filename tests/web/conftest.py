"""Fixtures of the page tests: a registered generator exported with its page by the real entry point, and
Debian's headless Chromium (``make test`` installs it) with its network and console logs and a download folder."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_env
from tests.web.models import register


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict:
    """``python -m pipeline.export --web`` of a conditional tiny WaveGAN (EMA weights) registered as version 1."""
    root = tmp_path_factory.mktemp("web")
    world = register(root / "store")
    web = root / "web"
    result = subprocess.run([sys.executable, "-m", "pipeline.export", "--model", "@champion", "--web",
                             "--web-out", str(web), "--out", str(root / "generator.onnx"), *world["args"]],
                            cwd=ROOT, env=run_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {**world, "web": web, "page": web / "wavegan-generator-v1", "onnx": root / "generator.onnx",
            "stdout": result.stdout}


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium / chromium-driver are not installed (make test-deps installs them)")
    from bench.web import headless_chromium

    driver = headless_chromium(tmp_path_factory.mktemp("chromium-profile"), logs=True)
    downloads = tmp_path_factory.mktemp("downloads")
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()
