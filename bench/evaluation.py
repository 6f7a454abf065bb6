"""Evaluation benchmarks: classifier inference clips/s and the nearest-neighbour |D| searches.

* Classifier: ``wavegan.classifier.classify`` (log-mel front end + CNN, softmax and embeddings) with
  the paper's classifier (``conf/eval/default.yaml``) and the CPU one (``conf/eval/cpu.yaml``), on
  random audio (speed does not depend on the weights), against the log-mel front end alone.
* |D|self (1000 generated clips against each other, as the paper) and |D|train (1000 against the
  SC09 training set, 18,620 clips) with ``wavegan.distances.d_self`` / ``d_train`` on features of the
  classifier's input shape (128 mel bins x 128 frames). When fewer reference clips are timed
  (``--quick``), |D|train is projected linearly to 18,620 (the search is a chunked brute force,
  linear in the reference set).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import yaml

from bench.core import CONF, SC09_TRAIN_CLIPS, Row, Sizes, human_seconds, measure
from wavegan.classifier import EvalClassifier, classify
from wavegan.distances import d_self, d_train, log_mel_features

SECTION = "eval"
PAPER_IS_CLIPS = 50_000


def _classifier_kwargs(name: str) -> dict:
    default = yaml.safe_load((CONF / "eval" / "default.yaml").read_text())["classifier"]
    if name == "paper":
        return default
    return {**default, **yaml.safe_load((CONF / "eval" / "cpu.yaml").read_text())["classifier"]}


def run(device: torch.device, sizes: Sizes, log: Callable[[str], None]) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    details: dict = {"method": __doc__.split("\n\n", 1)[1].strip(), "classifiers": {}}
    gen = torch.Generator().manual_seed(0)
    front_rate = None
    for name, n in sizes.cls_clips.items():
        model = EvalClassifier(**_classifier_kwargs(name)).to(device).eval()
        audio = torch.rand(n, 1, model.slice_len, generator=gen) * 1.8 - 0.9
        batch = min(n, 64)
        if front_rate is None:
            log("[bench] eval: log-mel front end")
            t_front = measure(
                lambda model=model, audio=audio, batch=batch: log_mel_features(
                    model.front_end, audio, batch_size=batch
                ),
                repeats=sizes.repeats,
                warmup=sizes.warmup,
                device=device,
            )
            front_rate = n / t_front["best_s"]
            details["log_mel_clips_per_s"] = front_rate
            rows.append(Row(SECTION, "log-mel front end", front_rate, "clips/s",
                            note="STFT 1024/128 + 128 mel bins + log + standardise"))
        log(f"[bench] eval: {name} classifier on {n} clips")
        t = measure(
            lambda model=model, audio=audio, batch=batch: classify(model, audio, batch_size=batch),
            repeats=sizes.repeats,
            warmup=sizes.warmup,
            device=device,
        )
        rate = n / t["best_s"]
        params = sum(p.numel() for p in model.parameters())
        details["classifiers"][name] = {"clips": n, "batch": batch, "time": t, "clips_per_s": rate,
                                        "params": params}
        rows.append(Row(SECTION, f"classifier inference ({name})", rate, "clips/s",
                        reference="log-mel front end alone", ratio=rate / front_rate,
                        note=f"{params / 1e6:.2f} M params; the paper's 50k-clip IS: "
                             f"{human_seconds(PAPER_IS_CLIPS / rate)}"))

    n_mels, frames = 128, 128
    q = torch.randn(sizes.nn_queries, n_mels, frames, generator=gen).to(device)
    log(f"[bench] eval: |D|self on {sizes.nn_queries} clips")
    t_self = measure(lambda: d_self(q), repeats=1, warmup=0, device=device)
    ref = torch.randn(sizes.nn_train, n_mels, frames, generator=gen).to(device)
    log(f"[bench] eval: |D|train {sizes.nn_queries} vs {sizes.nn_train} clips")
    t_train = measure(lambda: d_train(q, ref), repeats=1, warmup=0, device=device)
    projected = t_train["best_s"] * SC09_TRAIN_CLIPS / sizes.nn_train
    details["nearest_neighbour"] = {"queries": sizes.nn_queries, "features": n_mels * frames,
                                    "d_self": t_self, "d_train": t_train, "train_clips": sizes.nn_train,
                                    "d_train_projected_sc09_s": projected}
    rows.append(Row(SECTION, f"|D|self {sizes.nn_queries} vs {sizes.nn_queries}", t_self["best_s"], "s",
                    note=f"{n_mels}x{frames} log-mel features, float64 chunked search"))
    rows.append(Row(SECTION, f"|D|train {sizes.nn_queries} vs {SC09_TRAIN_CLIPS:,} (SC09 train)", projected, "s",
                    reference=f"|D|self {sizes.nn_queries} vs {sizes.nn_queries}",
                    ratio=projected / t_self["best_s"],
                    note="measured" if sizes.nn_train == SC09_TRAIN_CLIPS else
                    f"projected from {sizes.nn_train:,} reference clips ({t_train['best_s']:.2f} s)"))
    return rows, details
