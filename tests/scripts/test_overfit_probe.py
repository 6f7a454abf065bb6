"""The overfit probe of ``python -m scripts.overfit_probe`` (issue 39): distinct nearest training clips per label."""

import re
import subprocess
import sys

import torch

from data_prep.loader import read_manifest
from scripts.overfit_probe import nearest_clips, per_label
from tests.conftest import ROOT
from tests.pipeline.test_evaluate import MODEL, make_checkpoint


def test_a_memorising_generator_hits_every_training_clip_and_a_collapsed_one_one_per_label():
    train = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(0))
    train_labels = torch.tensor([0, 0, 0, 1, 1, 1])
    memorised = train + 1e-3
    rows = per_label(nearest_clips(memorised, train), train_labels, train_labels, ["a", "b"])
    assert [(r["distinct"], r["train_clips"], r["same_label"]) for r in rows] == [(3, 3, 1.0), (3, 3, 1.0)]
    collapsed = train[[0, 0, 0, 4, 4, 4]] + 1e-3
    rows = per_label(nearest_clips(collapsed, train), train_labels, train_labels, ["a", "b"])
    assert [r["distinct"] for r in rows] == [1, 1]
    wrong = per_label(nearest_clips(collapsed, train), torch.tensor([1, 1, 1, 0, 0, 0]), train_labels, ["a", "b"])
    assert [r["same_label"] for r in wrong] == [0.0, 0.0]  # clips of the other label


def test_the_probe_through_its_entry_point_on_a_checkpoint(tone_shards, tmp_path):
    names = read_manifest(str(tone_shards))["labels"]["names"]
    checkpoint = make_checkpoint(tmp_path / "ckpt", str(tone_shards), {"uri": f"sqlite:///{tmp_path}/m.db",
                                 "experiment": "wavegan"}, None, model={**MODEL, "num_classes": len(names)})
    out = subprocess.run([sys.executable, "-m", "scripts.overfit_probe", "--checkpoint", str(checkpoint),
                          "--data-dir", str(tone_shards), "--per-label", "3"], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=300).stdout
    rows = re.findall(r"  (\w+): (\d+) distinct nearest training clips of its (\d+)", out)
    assert [name for name, _, _ in rows] == names, out
    assert all(1 <= int(distinct) <= 3 and int(clips) > 0 for _, distinct, clips in rows)
    assert re.search(r"\|D\|self [\d.]+ \(sets of \d+\), \|D\|train [\d.]+", out), out
