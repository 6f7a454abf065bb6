"""`make serve` (mlflow models serve) of a registered generator, as a client meets it: the serving contract
of pipeline/registry/serving.py answered over HTTP on 127.0.0.1, a SpecGAN that serves, and a bounded load test."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from ..conftest import ROOT, free_port, kill_group, wait_for

pytestmark = pytest.mark.slow


class Server:
    """``mlflow models serve`` of one model URI, as the Makefile's ``serve`` target runs it."""

    def __init__(self, tracking_uri: str, model_uri: str, folder: Path):
        self.port, self.log = free_port(), folder / "serve.log"
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
               "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=folder, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.alive, 300, "the model server", self.proc, self.log)

    def alive(self) -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=5).status == 200
        except OSError:
            return False

    def post(self, body: dict | bytes, timeout: float = 120) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/invocations", data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def close(self) -> None:
        kill_group(self.proc)


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """The generator that training registered (version 1), served."""
    served = Server(trained["uri"], "models:/wavegan-generator/1", tmp_path_factory.mktemp("serve"))
    yield served
    served.close()


def latents(n: int, seed: int = 0) -> list:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 100)).astype(np.float32).tolist()


def test_bad_requests_get_400_with_a_message(server):
    nan = latents(1)
    nan[0][3] = float("nan")  # json.dumps writes NaN, which MLflow's parser accepts
    cases = {
        "NaN": ({"inputs": nan}, "inputs must be finite"),
        "1e30": ({"inputs": [[1e30] * 100]}, "latents must lie in [-1, 1]"),
        "batch of 65": ({"inputs": latents(65)}, "65 rows in one request; at most 64"),
        "unknown format": ({"inputs": latents(1), "params": {"format": "mp3"}}, "format must be one of"),
        "labels to an unconditional model": ({"inputs": latents(1), "params": {"labels": ["zero"]}}, "unconditional"),
        "wrong latent size": ({"inputs": [[0.0] * 7]}, ""),
    }
    for what, (body, message) in cases.items():
        status, answer = server.post(body)
        assert status == 400, (what, status, answer)
        assert message in answer.get("message", ""), (what, answer)
    assert server.alive()


def test_floats_and_playable_wav(server, trained):
    import mlflow
    import torch

    from pipeline.registry.safe_format import load_registered

    status, floats = server.post({"inputs": latents(2)})
    assert status == 200
    audio = np.asarray(floats["predictions"], dtype=np.float32)
    assert audio.shape == (2, 1, 16384) and np.isfinite(audio).all()
    mlflow.set_tracking_uri(trained["uri"])
    local = load_registered("models:/wavegan-generator/1")[0]
    np.testing.assert_allclose(audio, local(torch.tensor(latents(2))).detach().numpy(), atol=1e-5)

    status, wavs = server.post({"inputs": latents(2), "params": {"format": "wav"}})
    assert status == 200 and len(wavs["predictions"]) == 2
    clip, rate = sf.read(io.BytesIO(base64.b64decode(wavs["predictions"][0])), dtype="float32")
    info = sf.info(io.BytesIO(base64.b64decode(wavs["predictions"][0])))
    assert (rate, info.frames, info.subtype, info.channels) == (16000, 16384, "PCM_16", 1)
    np.testing.assert_allclose(clip, audio[0, 0], atol=1 / 32767 + 1e-6)


def test_bounded_load(server, capsys):
    """4 clients x 25 requests of 4 latents each: every answer 200, the server alive after; latencies reported."""
    clients, per_client, batch = 4, 25, 4
    process = psutil.Process(server.proc.pid)
    rss_before = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])

    def client(index: int) -> list[tuple[int, float]]:
        results = []
        for request in range(per_client):
            start = time.perf_counter()
            status, _ = server.post({"inputs": latents(batch, seed=index * 1000 + request)}, timeout=60)
            results.append((status, time.perf_counter() - start))
        return results

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = [r for rs in pool.map(client, range(clients), timeout=900) for r in rs]
    wall = time.perf_counter() - start
    rss_after = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    statuses = [status for status, _ in done]
    assert len(done) == clients * per_client and statuses.count(200) == len(done), sorted(set(statuses))
    assert server.alive()
    p50, p90, p99 = np.percentile([s for _, s in done], [50, 90, 99])
    with capsys.disabled():
        print(f"\n[serve load] {clients} clients x {per_client} requests x {batch} latents: {len(done)} x 200 in "
              f"{wall:.1f} s ({len(done) / wall:.1f} req/s, {len(done) * batch / wall:.1f} clips/s); latency p50 "
              f"{p50 * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; server RSS "
              f"{rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB")


def test_registered_specgan_serves(tmp_path):
    """A SpecGAN (Griffin-Lim inside the wrapper) registered in the same format answers with audio."""
    import mlflow
    import torch
    import yaml

    from pipeline.registry.safe_format import log_safe_model, signature_for
    from wavegan import build_gan
    from wavegan.gan import LatentToAudio

    cfg = {**yaml.safe_load((ROOT / "conf/model/specgan.yaml").read_text()), "dim": 4, "griffin_lim_iters": 4}
    torch.manual_seed(0)
    gan = build_gan(cfg)
    gan.transform.fit([torch.rand(4, 1, 16384) * 2 - 1])  # spectrogram moments, as training computes them
    model = LatentToAudio(gan).eval()
    z = torch.rand(2, 100) * 2 - 1
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("specgan-serving",
                                                                 artifact_location=str(tmp_path / "artifacts")))
    with mlflow.start_run():
        info = log_safe_model(model, {"kind": "generator", "model": cfg}, name="generator",
                              registered_model_name="specgan-generator", metadata={"sample_rate": 16000},
                              signature=signature_for(z.numpy(), model(z).detach().numpy(), ("format", "labels")),
                              input_example=z.numpy())
    served = Server(uri, f"models:/specgan-generator/{info.registered_model_version}", tmp_path)
    try:
        status, wavs = served.post({"inputs": latents(1), "params": {"format": "wav"}})
        assert status == 200, wavs
        info = sf.info(io.BytesIO(base64.b64decode(wavs["predictions"][0])))
        assert (info.samplerate, info.frames) == (16000, 16384)
        status, answer = served.post({"inputs": [[float("inf")] * 100]})
        assert status == 400 and "finite" in answer["message"]
    finally:
        served.close()
