"""The training driver's preflight: what it refuses before Ray starts."""

from __future__ import annotations

import subprocess

from ..conftest import ROOT, run_env, train_command


def test_training_that_evaluates_stops_before_ray_when_no_classifier_is_registered(tone_shards, tmp_path):
    """In-training evaluation needs the classifier of ``make classifier``; the driver only looks it up, and
    without one it stops before Ray starts, naming the command (nothing is trained on the way)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "ray"
    proc = subprocess.run(train_command(tone_shards, storage, uri, "eval=cpu", "eval.every=20"), cwd=ROOT,
                          env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"make classifier DATA={tone_shards} EVAL=cpu" in proc.stderr, proc.stderr
    assert "Ray run" not in proc.stdout and not storage.exists()  # no trainer was made
    assert "training wavegan-classifier" not in proc.stdout + proc.stderr
