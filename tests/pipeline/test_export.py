"""``make export`` (python -m pipeline.export): the ONNX file against PyTorch through onnxruntime (CPU), for WaveGAN
in every conv_impl, conditional or not, SpecGAN's exportable part, the registry's EMA weights and a trained
checkpoint; what is logged and tagged; what is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch
import yaml

from pipeline.export import SHA256_TAG, ExportError
from pipeline.export.cli import main as export_main
from pipeline.export.onnx_file import export, metadata_of, read_metadata, sha256
from pipeline.export.page import build_page
from pipeline.generate import load_generator
from pipeline.tracking.client import Tracking
from wavegan import build_gan
from wavegan.gan import LatentToAudio
from wavegan.latents import sample_latents
from wavegan.sampling import generate

from ..conftest import ROOT, run_env
from ..web.models import LABELS, register

pytestmark = pytest.mark.usefixtures("one_thread_own_store")


def run_onnx(path, z: torch.Tensor, labels: torch.Tensor | None) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"z": z.numpy()} | ({} if labels is None else {"labels": labels.numpy()})
    return session.run(None, feeds)[0]


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict:
    return register(tmp_path_factory.mktemp("export") / "store")


def test_export_of_the_champion_matches_pytorch_on_ema_weights_and_is_logged_and_tagged(registered, tmp_path):
    out = tmp_path / "champion.onnx"  # logged as export/generator.onnx all the same
    result = subprocess.run([sys.executable, "-m", "pipeline.export", "--model", "models:/wavegan-generator@champion",
                             "--out", str(out), *registered["args"]], cwd=ROOT, env=run_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "max abs diff" in result.stdout and [p.name for p in tmp_path.iterdir()] == [out.name]  # weights inside

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = {i.name: (i.shape, i.type) for i in session.get_inputs()}
    assert inputs == {"z": (["batch", 100], "tensor(float)"), "labels": (["batch"], "tensor(int64)")}, inputs
    assert [o.name for o in session.get_outputs()] == ["audio"]

    # 64 seeded latents, every label, against the registered model through the generation path
    model = load_generator("models:/wavegan-generator/1", tracking=Tracking.from_config(registered["store"])).model
    z = sample_latents(64, 100, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(64) % len(LABELS)
    got = run_onnx(out, z, labels)
    assert got.shape == (64, 1, 16384)
    assert np.abs(got - generate(model, z, labels).numpy()).max() <= 1e-4
    # the EMA weights the registry holds, not the online ones of the checkpoint
    with torch.no_grad():
        ema, online = registered["ema"].eval()(z, labels).numpy(), registered["online"].eval()(z, labels).numpy()
    assert np.abs(got - ema).max() <= 1e-4 < np.abs(got - online).max()

    meta = read_metadata(out)
    assert (meta["sample_rate"], meta["slice_len"], json.loads(meta["label_names"])) == ("16000", "16384", LABELS)
    assert (meta["model_name"], meta["model_version"], meta["run_id"], meta["eval_is"], meta["generator_weights"]) == (
        "wavegan-generator", "1", registered["run_id"], "2.5", "ema")
    client, digest = registered["client"], sha256(out)
    assert client.get_model_version("wavegan-generator", "1").tags[SHA256_TAG] == digest
    logged = client.download_artifacts(registered["run_id"], "export/generator.onnx", str(tmp_path / "dl"))
    assert sha256(type(out)(logged)) == digest


@pytest.mark.parametrize("model", [
    {"name": "wavegan", "conv_impl": "reference", "num_classes": 3, "label_bias": True},
    {"name": "wavegan", "conv_impl": "polyphase", "num_classes": 0, "post_proc_filt_len": 32},
    {"name": "wavegan", "conv_impl": "auto", "num_classes": 2, "upsample": "nn"},
    {"name": "specgan", "num_classes": 3},
], ids=["reference-label-bias", "polyphase-postfilter", "auto-nn", "specgan"])
def test_every_conv_impl_and_specgan_export_within_tolerance(model, tmp_path):
    torch.manual_seed(0)
    config = {**yaml.safe_load((ROOT / f"conf/model/{model['name']}.yaml").read_text()), "dim": 4, **model}
    gan = build_gan(config)
    if gan.transform is not None:  # SpecGAN's moments, as training fits them
        gan.transform.fit([sample_latents(4, 16384).unsqueeze(1) * 0.5])
    module = LatentToAudio(gan).eval()
    names = [f"c{i}" for i in range(module.num_classes)]
    out = tmp_path / "g.onnx"
    result = export(module, out, metadata_of(module, names, {"source": "test"}))
    assert result["max_abs_diff"] <= 1e-4 and result["sha256"] == sha256(out)
    z = sample_latents(5, 100, generator=torch.Generator().manual_seed(1))  # a batch size not exported with
    labels = torch.arange(5) % module.num_classes if module.num_classes else None
    got = run_onnx(out, z, labels)
    if config["name"] == "wavegan":
        assert result["output"] == "audio" and read_metadata(out)["output"] == "audio"
        expected = generate(module, z, labels).numpy()
    else:  # the generator and the de-normalisation: STFT magnitudes, Griffin-Lim left to the consumer
        assert result["output"] == "magnitude"
        with torch.no_grad():
            expected = gan.transform.denormalise(gan.generator(z, labels)).numpy()
        with pytest.raises(ExportError, match="not audio"):
            build_page(out, tmp_path / "page")
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4


@pytest.mark.slow
def test_a_trained_checkpoint_exports_and_logs_to_its_run(trained, tmp_path, capsys):
    out = tmp_path / "generator.onnx"
    code = export_main(["--model", str(trained["checkpoint"]), "--out", str(out), f"tracking.uri={trained['uri']}"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    model = load_generator(checkpoint=str(trained["checkpoint"])).model  # the polyphase run's EMA / online choice
    z = sample_latents(8, model.latent_dim, generator=torch.Generator().manual_seed(0))
    assert np.abs(run_onnx(out, z, None) - generate(model, z).numpy()).max() <= 1e-4
    from mlflow import MlflowClient

    run_id = read_metadata(out)["run_id"]
    assert [a.path for a in MlflowClient(trained["uri"]).list_artifacts(run_id, "export")] == ["export/generator.onnx"]


def test_what_is_not_a_generator_is_refused_in_one_line(registered, tmp_path, capsys):
    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
    for bad in (tmp_path / "weights.pt", tmp_path / "nowhere"):
        code = export_main(["--model", str(bad), "--out", str(tmp_path / "g.onnx"), *registered["args"]])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and str(bad) in err and "checkpoint folder" in err, err
    assert not (tmp_path / "g.onnx").exists()
