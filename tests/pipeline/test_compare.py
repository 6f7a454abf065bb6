"""``make compare`` (python -m pipeline.compare) and the promotion gate's use of it, on tiny real models.

Three class-conditional WaveGANs (the tiny preset's model, d=8, untrained, different seeds) are saved as training
checkpoints and registered through ``register_generator`` into a real SQLite MLflow store, each from its own run,
next to real tone shards; a fourth checkpoint has no MLflow run. The browser tests open the pages in Debian's
headless Chromium (``make test`` installs it) as a file and through ``python -m pipeline.tracking.server``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import urllib.request
from contextlib import redirect_stdout
from pathlib import Path

import mlflow
import pytest
import soundfile as sf
import torch
import yaml
from mlflow import MlflowClient

from data_prep.demo_data import build as build_demo
from data_prep.loader import read_manifest
from data_prep.manifest import label_names
from data_prep.shard import ShardSettings, make_shards
from pipeline.compare.cli import main as compare_main
from pipeline.tracking.client import Tracking
from pipeline.train.state import TrainState, save_state
from wavegan import build_gan
from wavegan.losses import build_optimizers

from ..conftest import ROOT, free_port, kill_group, wait_for

MODEL_NAME = "wavegan-generator"
MODEL = {**yaml.safe_load((ROOT / "conf/model/wavegan.yaml").read_text()), "dim": 8}  # preset=tiny's model
LABELS = ["c4", "e4", "g4"]  # three of the tone shards' ten labels: smaller pages, same code path
AUDIO = re.compile(r'<audio controls preload="auto" src="data:audio/wav;base64,([^"]+)">')


pytestmark = pytest.mark.usefixtures("one_thread_own_store")


def checkpoint(directory: Path, seed: int, shards: str, names: list[str], tracking: dict) -> Path:
    """A training checkpoint as pipeline.train writes it (state.pt + state.json), of an untrained tiny model."""
    torch.manual_seed(seed)
    model = {**MODEL, "num_classes": len(names)}
    gan = build_gan(model)
    loss = yaml.safe_load((ROOT / "conf/loss/wgan-gp.yaml").read_text())
    opt_g, opt_d = build_optimizers(loss, gan.generator, gan.discriminator)
    run = {k: tracking[k] for k in ("uri", "experiment", "run_id")} if tracking.get("run_id") else {}
    state = TrainState(gan=gan, G=gan.generator, D=gan.discriminator, opt_g=opt_g, opt_d=opt_d, step=5 + seed,
                       mlflow=run)
    directory.mkdir(parents=True)
    settings = {k: v for k, v in tracking.items() if k != "run_id"}
    save_state(state, directory, {"model": model, "loss": loss, "data": {"dir": shards}, "tracking": settings,
                                  "label_names": names,
                                  "registry": {"register": True, "model_name": MODEL_NAME, "weights": "auto"}})
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tone shards, a SQLite store with versions 1-3 (one training run each), and a bare checkpoint."""
    from ray.train import Checkpoint

    from pipeline.registry.generator import register_generator
    from pipeline.train.state import load_checkpoint

    root = tmp_path_factory.mktemp("compare")
    build_demo("tones", root / "tones", per_class=3, seed=0, workers=1)
    shards = str(root / "shards")
    make_shards(ShardSettings.from_mapping({"src": str(root / "tones"), "out": shards, "workers": 1,
                                            "progress": False, "prep": {"labels": {"from": "auto"}}}))
    names = label_names(read_manifest(shards))
    store = {"uri": f"sqlite:///{root}/mlflow.db", "artifact_root": str(root / "artifacts"), "experiment": "wavegan"}
    client = MlflowClient(store["uri"])
    tracking = Tracking.from_config(store)
    runs = {}
    for seed, version in enumerate(("1", "2", "3")):
        run_id = client.create_run(tracking.experiment_id, run_name=f"train-{version}").info.run_id
        client.log_param(run_id, "data.dir", shards)  # as a training run records its data
        folder = checkpoint(root / f"ckpt{version}", seed, shards, names, {**store, "run_id": run_id})
        config = load_checkpoint(folder)["config"]
        assert register_generator(config, Checkpoint.from_directory(str(folder)), tracking.for_run(run_id)) == version
        runs[version] = run_id
    for version, score in (("1", "3.5"), ("2", "3.6"), ("3", "4.0")):
        client.set_model_version_tag(MODEL_NAME, version, "eval.is_mean", score)
    client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    bare = checkpoint(root / "bare", 7, shards, names, {"run_id": None})
    return {"root": root, "shards": shards, "names": names, "store": store, "client": client, "runs": runs,
            "bare": bare}


def store_args(world: dict) -> list[str]:
    return [f"tracking.uri={world['store']['uri']}", f"tracking.artifact_root={world['store']['artifact_root']}"]


def run_compare(world: dict, capsys, *args: str) -> tuple[int, str, str]:
    code = compare_main([*args, *store_args(world)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(page: str) -> list[list[str]]:
    """The base64 WAVs of each comparison row (its two figures), in page order."""
    sections = re.findall(r'<section class="row">(.*?)</section>', page)
    return [AUDIO.findall(section) for section in sections]


@pytest.fixture(scope="module")
def compared(world, tmp_path_factory, request) -> dict:
    """``make compare`` with the defaults (A=@champion -> v1, B=latest -> v3), three labels, two latents each."""
    if any(item.name == "test_logged_page_plays_in_the_mlflow_ui" for item in request.session.items):
        request.getfixturevalue("ui_server")  # boots while the tests before the UI test run
    out, stdout = tmp_path_factory.mktemp("pages"), io.StringIO()
    with redirect_stdout(stdout):  # capsys is function-scoped
        code = compare_main(["--n", "2", "--label", "C4,E4,g4", "--reference", "3", "--out", str(out),
                             *store_args(world)])
    assert code == 0, stdout.getvalue()
    return {"out": out, "page": out / "v1_vs_v3.html", "stdout": stdout.getvalue()}


# ----------------------------------------------------------------------------------------------------
# The page, the log and the tag


def test_same_version_is_refused(world, capsys, tmp_path):
    code, _, err = run_compare(world, capsys, "--a", "latest", "--b", f"models:/{MODEL_NAME}/3", "--out",
                               str(tmp_path))
    assert code == 2 and "same model (models:/wavegan-generator/3)" in err and "nothing to compare" in err
    assert not list(tmp_path.iterdir())
    code, _, err = run_compare(world, capsys, "--a", "@nobody", "--out", str(tmp_path))
    assert code == 2 and "models:/wavegan-generator@nobody not found" in err and "champion" in err


def test_conditional_rows_are_headed_by_label_and_share_latents(world, compared):
    page = compared["page"].read_text()
    assert re.findall(r"<h2>([^<]+)</h2>", page) == [*LABELS, "Real clips (training shards)"]
    pairs = rows(page)
    assert len(pairs) == 2 * len(LABELS) and all(len(pair) == 2 for pair in pairs)
    clips = [[sf.read(io.BytesIO(base64.b64decode(wav)), dtype="float32") for wav in pair] for pair in pairs]
    assert all(rate == 16000 and audio.shape == (16384,) for pair in clips for audio, rate in pair)
    assert all(abs(a[0] - b[0]).max() > 1e-3 for a, b in clips), "A (v1) and B (v3) have different weights"
    # the same latent and label drive A in the page and a fresh generation from version 1
    from pipeline.generate import load_generator
    from wavegan.latents import sample_latents
    from wavegan.sampling import generate

    v1 = load_generator(f"models:/{MODEL_NAME}/1", tracking=Tracking(world["store"]["uri"]))
    z = sample_latents(2, 100, generator=torch.Generator().manual_seed(0))
    fresh = generate(v1.model, z, torch.full((2,), v1.label_ids(["e4"])[0]))[1, 0].numpy()
    assert abs(clips[3][0][0] - fresh).max() <= 1 / 32767 + 1e-6  # row "e4 · latent 2", A
    header = page.split("<h2>")[0]
    assert "models:/wavegan-generator/1" in header and "@champion" in header and "3.5" in header and "4.0" in header
    assert "<h3>e4 · latent 2</h3>" in page and page.count('src="data:image/png;base64,') == 4 * len(LABELS) + 3
    assert "http://" not in page and "https://" not in page


def test_page_is_logged_to_b_run_and_tagged_on_b_version(world, compared):
    client = world["client"]
    logged = [a.path for a in client.list_artifacts(world["runs"]["3"], "compare")]
    assert "compare/v1_vs_v3.html" in logged
    assert not client.list_artifacts(world["runs"]["1"], "compare"), "nothing goes to A's run"
    uri = client.get_model_version(MODEL_NAME, "3").tags["compare.vs.v1"]
    assert uri.endswith("/compare/v1_vs_v3.html") and uri in compared["stdout"]
    mlflow.set_tracking_uri(world["store"]["uri"])
    assert mlflow.artifacts.load_text(uri) == compared["page"].read_text()


def test_blind_mode_shuffles_rows_and_keeps_the_key_apart(world, compared, capsys, tmp_path):
    code, out, _ = run_compare(world, capsys, "--blind", "--no-log", "--n", "2", "--label", ",".join(LABELS),
                               "--reference", "0", "--out", str(tmp_path))
    assert code == 0 and "not logged" in out
    page = (tmp_path / "v1_vs_v3_blind.html").read_text()
    key = json.loads((tmp_path / "v1_vs_v3_blind.key.json").read_text())
    captions = re.findall(r"<figcaption[^>]*>([^<]*)</figcaption>", page)
    assert set(captions) == {"1", "2"} and 'class="a"' not in page and 'class="b"' not in page
    assert "v1_vs_v3_blind.key.json" not in page and '"rows"' not in page
    plain = rows(compared["page"].read_text())
    blind = rows(page)
    assert len(key["rows"]) == len(blind) == len(plain)
    for (a, b), shown, entry in zip(plain, blind, key["rows"], strict=True):
        assert shown == ([a, b] if entry["1"] == "A" else [b, a]), entry  # the key says what the page hides
    assert not world["client"].get_model_version(MODEL_NAME, "3").tags["compare.vs.v1"].endswith("_blind.html")


def test_bare_checkpoint_goes_to_outputs_compare_and_logs_nothing(world, capsys, tmp_path, monkeypatch):
    client = world["client"]

    def logged_state():
        return ({v.version: dict(v.tags) for v in client.search_model_versions(f"name='{MODEL_NAME}'")},
                {r: [a.path for a in client.list_artifacts(r, "compare")] for r in world["runs"].values()})

    before = logged_state()
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_compare(world, capsys, "--a", "2", "--b", str(world["bare"]), "--n", "1", "--reference", "0")
    assert code == 0, out
    assert (tmp_path / "outputs/compare/v2_vs_bare-step12.html").is_file()
    assert "has no MLflow run" in out and logged_state() == before


def test_checkpoint_with_a_run_logs_to_that_run_without_a_tag(world, capsys, tmp_path):
    client = world["client"]
    tags = dict(client.get_model_version(MODEL_NAME, "3").tags)
    code, out, _ = run_compare(world, capsys, "--a", "1", "--b", str(world["root"] / "ckpt3"), "--n", "1",
                               "--reference", "0", "--label", "c4", "--out", str(tmp_path))
    assert code == 0, out
    logged = [a.path for a in client.list_artifacts(world["runs"]["3"], "compare")]
    assert "compare/v1_vs_ckpt3-step7.html" in logged and "tag" not in out.split("logged to", 1)[1]
    assert dict(client.get_model_version(MODEL_NAME, "3").tags) == tags, "a checkpoint is no registered version"


# ----------------------------------------------------------------------------------------------------
# make promote: python -m pipeline.promote, as the Makefile calls it


def promote_cli(world: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": world["store"]["uri"]}
    return subprocess.run([sys.executable, "-m", "pipeline.promote", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_promote_prints_the_comparison_and_can_require_one(world, compared, capsys, monkeypatch):
    from pipeline.promote import main as promote_main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", world["store"]["uri"])
    # the refusal through the function `python -m pipeline.promote` runs (a second process costs ~12 s of imports)
    assert promote_main(["--version", "2", "--require-comparison"]) == 1
    err = capsys.readouterr().err
    assert "version 2 has not been compared with the current champion (version 1)" in err
    assert "make compare A=@champion B=2" in err
    client = world["client"]
    assert str(client.get_registered_model(MODEL_NAME).aliases["champion"]) == "1"
    done = promote_cli(world, "--version", "3", "--require-comparison")
    assert done.returncode == 0, done.stderr
    uri = client.get_model_version(MODEL_NAME, "3").tags["compare.vs.v1"]
    assert "-> version 3 (was version 1)" in done.stdout and f"comparison with version 1: {uri}" in done.stdout
    assert str(client.get_registered_model(MODEL_NAME).aliases["champion"]) == "3"
    client.set_registered_model_alias(MODEL_NAME, "champion", "1")  # as the other tests expect


# ----------------------------------------------------------------------------------------------------
# A real browser: Debian's chromium + chromium-driver through selenium (the browser fixture: tests/pipeline/conftest.py)


MEDIA_STATE = """
const done = arguments[arguments.length - 1];
const deadline = Date.now() + 30000;
(function poll() {
  const audio = [...document.querySelectorAll('audio')];
  const images = [...document.querySelectorAll('img')];
  const ready = audio.every(a => a.readyState >= 1) && images.every(i => i.complete);
  if (ready || Date.now() > deadline) {
    done({
      rows: [...document.querySelectorAll('section.row')].map(s => [...s.querySelectorAll('audio')].map(
        a => ({duration: a.duration, error: a.error && a.error.code, src: a.currentSrc.slice(0, 22)}))),
      images: images.map(i => i.naturalWidth),
      resources: performance.getEntriesByType('resource').map(e => e.name),
      navigation: performance.getEntriesByType('navigation').map(e => e.name),
      captions: [...document.querySelectorAll('figcaption')].map(f => f.textContent),
    });
  } else { setTimeout(poll, 100); }
})();
"""


def check_playable(state: dict, pairs: int, location: str) -> None:
    assert len(state["rows"]) == pairs and all(len(row) == 2 for row in state["rows"])
    for row in state["rows"]:
        for audio in row:
            assert audio["error"] is None and audio["src"] == "data:audio/wav;base64,", audio
            assert abs(audio["duration"] - 16384 / 16000) < 0.01, audio  # decoded by the browser: 1.024 s
    assert state["images"] and all(width > 0 for width in state["images"]), state["images"]
    assert all(name.startswith("data:") for name in state["resources"]), state["resources"]
    assert all(name.startswith(location) for name in state["navigation"]), state["navigation"]


@pytest.mark.slow
def test_page_plays_in_a_browser_offline_on_a_phone_and_in_the_dark(browser, compared, world, capsys, tmp_path):
    browser.set_window_size(1200, 900)
    browser.get(compared["page"].as_uri())
    state = browser.execute_async_script(MEDIA_STATE)
    check_playable(state, 2 * len(LABELS), "file://")
    assert state["captions"][:2] == ["A · v1", "B · v3"]
    tops = "return [...document.querySelector('section.row').querySelectorAll('figure')].map(f => f.offsetTop)"
    wide = browser.execute_script(tops)
    assert wide[0] == wide[1], "side by side on a wide screen"

    browser.set_window_size(390, 844)  # a phone
    overflow = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert overflow[0] <= overflow[1], overflow
    narrow = browser.execute_script(tops)
    assert narrow[1] > narrow[0], "stacked on a phone"

    background = "return getComputedStyle(document.body).backgroundColor"
    light = browser.execute_script(background)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    dark = browser.execute_script(background)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert light == "rgb(255, 255, 255)" and dark == "rgb(18, 18, 22)", (light, dark)

    browser.set_window_size(1200, 900)
    code, _, _ = run_compare(world, capsys, "--blind", "--no-log", "--n", "1", "--label", "c4", "--reference", "0",
                             "--out", str(tmp_path))
    assert code == 0
    browser.get((tmp_path / "v1_vs_v3_blind.html").as_uri())
    state = browser.execute_async_script(MEDIA_STATE)
    check_playable(state, 1, "file://")
    assert state["captions"] == ["1", "2"], "blind: no A / B on the clips"


@pytest.fixture(scope="module")
def ui_server(world, tmp_path_factory):
    """``make mlflow-ui`` (pipeline/tracking/server.py) over the test store, started without waiting for it: it
    takes up to a minute to boot on two busy cores, which the tests before the UI test then overlap."""
    port, log = free_port(), tmp_path_factory.mktemp("ui") / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.tracking.server", "--port", str(port), "--backend-store-uri",
         world["store"]["uri"], "--artifacts", world["store"]["artifact_root"]],
        cwd=ROOT, env={**os.environ, "MLFLOW_WORKERS": "1"},  # mlflow server's own default is 4 booting workers
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    yield {"port": port, "proc": server, "log": log}
    kill_group(server)


@pytest.mark.slow
def test_logged_page_plays_in_the_mlflow_ui(browser, compared, world, ui_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    port = ui_server["port"]

    def healthy() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
        except OSError:
            return False

    wait_for(healthy, 180, "the MLflow server", ui_server["proc"], ui_server["log"])
    run_id = world["runs"]["3"]
    experiment = world["client"].get_run(run_id).info.experiment_id
    browser.set_window_size(1200, 900)
    browser.get(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs/{run_id}/artifacts/compare/v1_vs_v3.html")
    try:
        frame = WebDriverWait(browser, 90).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "iframe.mlflow-html-iframe")))
        browser.switch_to.frame(frame)
        WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.querySelectorAll('audio').length"))
        state = browser.execute_async_script(MEDIA_STATE)
    finally:
        browser.switch_to.default_content()
    check_playable(state, 2 * len(LABELS), "blob:")  # the UI hands the artifact to a sandboxed frame


# ----------------------------------------------------------------------------------------------------
# A training run by name: the real Ray run of tests/pipeline/conftest.py (shared with the registry tests)


@pytest.mark.slow
def test_a_run_name_resolves_to_the_checkpoint_training_registers(trained, capsys, tmp_path):
    storage = f"train.storage_path={trained['base'] / 'ray'}"
    store = [f"tracking.uri={trained['uri']}"]
    code = compare_main(["--a", str(trained["checkpoint"]), "--b", "tiny", "--out", str(tmp_path), storage, *store])
    err = capsys.readouterr().err
    assert code == 2 and f"same model ({trained['checkpoint'].resolve()})" in err, err  # the run's last checkpoint
    best = "registry.checkpoint=best"
    code = compare_main(["--a", "1", "--b", "tiny", "--out", str(tmp_path), storage, best, *store])
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint scored by registry.metric=eval/is_mean" in err, err
    code = compare_main(["--a", "1", "--b", "nope", "--out", str(tmp_path), storage, *store])
    err = capsys.readouterr().err
    assert code == 2 and "'nope' is neither a model URI" in err and "runs there: ['tiny']" in err, err
