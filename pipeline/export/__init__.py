"""``make export`` / ``make web``: a registered generator as one ONNX file, and a drum-machine page that runs it.

    python -m pipeline.export                                   # models:/wavegan-generator@champion -> ONNX
    python -m pipeline.export --model models:/wavegan-generator/3 --web
    python -m pipeline.export --model ray_results/tiny/checkpoint_.../ --no-log
    python -m pipeline.export.serve                             # make web-serve: the pages on 127.0.0.1

The model is what ``make compare`` accepts (a model URI, the shorthands @alias / latest / 7, a checkpoint
folder, a training run). ``torch.onnx.export`` writes ``generator.onnx`` (weights inside, opset 18) with
input ``z`` (batch x latent_dim, float32), for a class-conditional model ``labels`` (batch, int64), and
output ``audio`` (batch x channels x slice_len); the sample rate, slice length, label names and the
registered identity (name, version, run, evaluation IS) ride along as ONNX metadata. The file is kept only
when onnxruntime (CPU) and PyTorch agree within 1e-4 (max abs) on 64 seeded latents covering every label.

SpecGAN: its audio comes from Griffin-Lim over complex STFTs, which torch 2.11's exporter writes as complex
tensors onnxruntime cannot load. Its ONNX holds the generator and the de-normalisation, i.e. output
``magnitude`` (batch x 128 x 128 linear STFT magnitudes in SpecGAN's framing, metadata ``output=magnitude``),
checked the same way; the browser page needs audio and refuses SpecGAN.

The file and its sha256 are logged to the version's MLflow run (``export/``) and the version is tagged
``export.onnx.sha256``; ``--web`` also writes ``outputs/web/<name>-v<N>/`` and logs it (``web/<name>-v<N>/``,
beside the compare pages). A checkpoint without a run is written locally only.
"""

from __future__ import annotations

from pathlib import Path

EXPORT_DIR, WEB_DIR = Path("outputs/export"), Path("outputs/web")
SHA256_TAG = "export.onnx.sha256"


class ExportError(ValueError):
    """An export that cannot be made as asked; the message names the bad value and what to do."""
