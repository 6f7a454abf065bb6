"""Safe by default: checkpoints load with torch.load(weights_only=True); registered models rebuild from a JSON
config + tensors-only weights; the serving wrapper refuses bad requests with a message."""

from __future__ import annotations

import base64
import io
import json
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from mlflow.exceptions import MlflowException

from pipeline.registry.serving import AudioModel
from pipeline.train.state import CHECKPOINT_FILE, STATE_JSON, TrainState, load_checkpoint, save_state
from wavegan import build_gan
from wavegan.gan import LatentToAudio
from wavegan.losses import build_optimizers

from ..conftest import ROOT

MODEL = {**yaml.safe_load((ROOT / "conf/model/wavegan.yaml").read_text()), "dim": 4, "latent_dim": 16}
LOSS = yaml.safe_load((ROOT / "conf/loss/wgan-gp.yaml").read_text())


def trained_state(step: int = 3) -> TrainState:
    """A tiny state whose optimisers have moments (one step taken), as a real checkpoint has."""
    torch.manual_seed(0)
    gan = build_gan(MODEL)
    opt_g, opt_d = build_optimizers(LOSS, gan.generator, gan.discriminator)
    gan.discriminator(gan.generator(torch.rand(2, 16) * 2 - 1)).mean().backward()
    opt_g.step(), opt_d.step()
    return TrainState(gan=gan, G=gan.generator, D=gan.discriminator, opt_g=opt_g, opt_d=opt_d, step=step,
                      batches_seen=11, mlflow={"uri": "sqlite:///x.db", "experiment": "e", "run_id": "abc"},
                      extra={"early_stop": {"best": 2.5, "bad": 1}})


def test_checkpoint_round_trip_under_weights_only(tmp_path):
    state = trained_state()
    save_state(state, tmp_path, {"model": MODEL, "labels": ["a", "b"]})
    tensors = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)  # raises on anything but plain data
    assert set(tensors) == {"generator", "generator_ema", "discriminator", "transform", "opt_g", "opt_d", "step"}
    document = json.loads((tmp_path / STATE_JSON).read_text())
    assert (document["step"], document["batches_seen"], document["config"]["labels"]) == (3, 11, ["a", "b"])

    restored = trained_state(step=0)
    for p in restored.gan.generator.parameters():
        p.data.zero_()
    restored.load_state_dict(load_checkpoint(tmp_path))
    assert (restored.step, restored.batches_seen, restored.mlflow["run_id"]) == (3, 11, "abc")
    assert restored.extra == {"early_stop": {"best": 2.5, "bad": 1}}
    for a, b in zip(
        state.gan.generator.state_dict().values(), restored.gan.generator.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    moments = restored.opt_g.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(moments, state.opt_g.state_dict()["state"][0]["exp_avg"]) and moments.abs().sum() > 0


def test_older_single_file_checkpoint_migrates_and_code_is_refused(tmp_path):
    state = trained_state()
    legacy = {**state.tensor_state(), **state.json_state(), "config": {"model": MODEL}}
    torch.save(legacy, tmp_path / CHECKPOINT_FILE)  # the format before state.json
    loaded = load_checkpoint(tmp_path)
    assert loaded["step"] == 3 and loaded["config"]["model"] == MODEL

    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({**legacy, "config": {"path": Path("/tmp")}}, evil / CHECKPOINT_FILE)  # a class: needs unpickling
    with pytest.raises(ValueError, match="not loaded .unpickling it could run code"):
        load_checkpoint(evil)

    torn = tmp_path / "torn"
    torn.mkdir()
    save_state(state, torn, {})
    state.step = 4
    (torn / "newer").mkdir()
    save_state(state, torn / "newer", {})
    (torn / STATE_JSON).write_text((torn / "newer" / STATE_JSON).read_text())  # a newer state.json, older state.pt
    with pytest.raises(ValueError, match="come from different saves"):
        load_checkpoint(torn)


def served(model: torch.nn.Module, config: dict, tmp_path: Path, **metadata) -> AudioModel:
    """The pyfunc wrapper over ``model``'s two artifacts, as MLflow's load_context hands them over."""
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "config.json").write_text(json.dumps({**config, "metadata": metadata}))
    wrapper = AudioModel()
    wrapper.load_context(types.SimpleNamespace(artifacts={"config": str(tmp_path / "config.json"),
                                                          "weights": str(tmp_path / "weights.pt")}))
    return wrapper


def refused(wrapper: AudioModel, x, match: str, **params) -> None:
    with pytest.raises(MlflowException, match=match) as info:
        wrapper.predict(None, np.asarray(x, dtype=np.float32), params=params)
    assert info.value.get_http_status_code() == 400


def test_serving_contract_floats_wav_and_refusals(tmp_path):
    torch.manual_seed(0)
    model = LatentToAudio(build_gan(MODEL)).eval()
    wrapper = served(model, {"kind": "generator", "model": MODEL, "serving": {"max_batch": 4,
                                                                              "latent_tolerance": 1e-3}}, tmp_path)
    z = np.random.default_rng(0).uniform(-1, 1, (3, 16)).astype(np.float32)
    audio = wrapper.predict(None, z)
    np.testing.assert_allclose(audio, model(torch.from_numpy(z)).detach().numpy(), atol=1e-6)
    edge = z.copy()
    edge[0, 0] = 1.0005  # within tolerance: clamped to 1
    clamped = z.copy()
    clamped[0, 0] = 1.0
    np.testing.assert_allclose(wrapper.predict(None, edge), wrapper.predict(None, clamped), atol=1e-6)

    wavs = wrapper.predict(None, z, params={"format": "wav"})
    clip, rate = sf.read(io.BytesIO(base64.b64decode(wavs[1])), dtype="float32")
    assert len(wavs) == 3 and rate == 16000 and clip.shape == (16384,)
    np.testing.assert_allclose(clip, audio[1, 0], atol=1 / 32767 + 1e-6)

    nan = z.copy()
    nan[2, 5] = np.nan
    refused(wrapper, nan, r"finite: NaN or infinity in row\(s\) \[2\]")
    refused(wrapper, np.full((1, 16), 1e30), "must lie in \\[-1, 1\\].*magnitude 1e\\+30")
    refused(wrapper, np.zeros((5, 16)), "5 rows in one request; at most 4")
    refused(wrapper, np.zeros((1, 17)), r"shape \(batch, 16\)")
    refused(wrapper, z, "format must be one of", format="mp3")
    refused(wrapper, z, "unconditional", labels=["a"])


def test_conditional_generator_takes_labels_by_name_or_id(tmp_path):
    torch.manual_seed(0)
    cfg = {**MODEL, "num_classes": 3}
    model = LatentToAudio(build_gan(cfg)).eval()
    wrapper = served(model, {"kind": "generator", "model": cfg}, tmp_path, label_names=["dog", "cat", "cow"])
    z = np.random.default_rng(0).uniform(-1, 1, (2, 16)).astype(np.float32)
    by_name = wrapper.predict(None, z, params={"labels": ["cat", "cow"]})
    by_id = wrapper.predict(None, z, params={"labels": ["1", "2"]})
    expected = model(torch.from_numpy(z), torch.tensor([1, 2])).detach().numpy()
    np.testing.assert_allclose(by_name, expected, atol=1e-6)
    np.testing.assert_allclose(by_id, expected, atol=1e-6)
    one = wrapper.predict(None, z, params={"labels": ["dog"]})  # one label for the whole batch
    np.testing.assert_allclose(one, model(torch.from_numpy(z), torch.tensor([0, 0])).detach().numpy(), atol=1e-6)
    refused(wrapper, z, r"unknown label 'horse': valid labels are \['dog', 'cat', 'cow'\]", labels=["horse"])
    refused(wrapper, z, "class-conditional: pass params.labels", labels=[])
    refused(wrapper, z, "3 entries for 2 rows", labels=["dog", "cat", "cow"])


# ----------------------------------------------------------------------------------------------------
# Through a real MLflow store: nothing is unpickled when a registered version loads

PROBE = """
import json, os, sys
import numpy as np
import mlflow
from pipeline.registry.safe_format import load_registered

loading, found = False, []
sys.addaudithook(lambda event, args: found.append(f"{args[0]}.{args[1]}") if loading and event == "pickle.find_class"
                 else None)
mlflow.set_tracking_uri(sys.argv[1])
loading = True
module, config = load_registered(sys.argv[2])
by_project, found = found, []
pyfunc = mlflow.pyfunc.load_model(sys.argv[2])
audio = pyfunc.predict(np.zeros((1, module.latent_dim), np.float32))
by_pyfunc, found = found, []
os.environ["WAVEGAN_ALLOW_PICKLE"] = "1"
old = load_registered(sys.argv[3])[0]
loading = False
print(json.dumps({"type": type(module).__name__, "project": by_project, "pyfunc": by_pyfunc, "kind": config["kind"],
                  "shape": list(audio.shape), "old": found, "old_type": type(old).__name__}))
"""


@pytest.mark.slow
def test_registered_version_loads_without_unpickling_and_old_pickles_need_opt_in(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    import mlflow

    from pipeline.registry.safe_format import PickledModelError, load_registered, log_safe_model, signature_for

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("safe", artifact_location=str(tmp_path / "art")))
    torch.manual_seed(0)
    model = LatentToAudio(build_gan(MODEL)).eval()
    z = torch.rand(2, 16) * 2 - 1
    out = model(z).detach().numpy()
    with mlflow.start_run():
        log_safe_model(
            model,
            {"kind": "generator", "model": MODEL},
            name="generator",
            registered_model_name="g",
            signature=signature_for(z.numpy(), out, ("format", "labels")),
            input_example=z.numpy(),
            metadata={},
        )
        mlflow.pytorch.log_model(model, name="old", registered_model_name="g", serialization_format="pickle",
                                 code_paths=[str(ROOT / "wavegan")])  # how versions were registered before

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/g/1", dst_path=str(tmp_path / "v1")))
    stored = sorted(p.name for p in local.rglob("*") if p.is_file())
    assert "weights.pt" in stored and "config.json" in stored
    assert not [name for name in stored if name.endswith((".pkl", ".pickle", ".pth"))], stored
    monkeypatch.delenv("WAVEGAN_ALLOW_PICKLE", raising=False)
    with pytest.raises(PickledModelError, match="old pickled format.*WAVEGAN_ALLOW_PICKLE=1"):
        load_registered("models:/g/2")

    # a fresh interpreter that records every class a pickle resolves (the audit event pickle.find_class)
    done = subprocess.run([sys.executable, "-c", PROBE, uri, "models:/g/1", "models:/g/2"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["type"] == "LatentToAudio" and seen["kind"] == "generator" and seen["shape"] == [1, 1, 16384]
    assert seen["project"] == [] and seen["pyfunc"] == [], "a registered version must load without unpickling"
    assert "unpickling an old-format model" in done.stderr and seen["old_type"] == "LatentToAudio"
    assert any("LatentToAudio" in name for name in seen["old"]), "the probe must see a pickled module load"
