"""Re-running a training run under the same name: resume, refuse a changed config, or start fresh (train.resume)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from common.errors import ConfigError
from pipeline.schema import compose
from pipeline.train.preflight import prepare
from pipeline.train.resume import plan_start

from ..conftest import ROOT, run_env, train_command


def started(storage: Path, config: dict, name: str = "tiny") -> Path:
    """A run folder as Ray Train leaves it: a checkpoint whose state.json holds the config it started with."""
    folder = storage / name / "checkpoint_000000"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"step": 20, "config": config}))
    return folder


def config_for(storage: Path | str, *overrides: str) -> dict:
    return compose(["preset=tiny", f"train.storage_path={storage}", *overrides])


def test_unchanged_or_resumable_changes_resume_and_say_what_changed(tmp_path, capsys):
    started(tmp_path, config_for(tmp_path))
    _, same = plan_start(config_for(tmp_path))
    assert same.resumed and same.changes == {} and same.run_name == "tiny"
    config, more = plan_start(config_for(tmp_path, "train.steps=400", "tracking.preview_every=5", "eval.every=10"))
    assert more.resumed and config["train"]["run_name"] == "tiny"
    assert more.changes == {"train.steps": (40, 400), "tracking.preview_every": (20, 5), "eval.every": (0, 10)}
    assert "resuming run 'tiny' with eval.every: 0 -> 10; tracking.preview_every: 20 -> 5; train.steps: 40 -> 400" \
        in capsys.readouterr().out


def test_other_changes_are_refused_naming_each_key_and_the_ways_on(tmp_path):
    started(tmp_path, config_for(tmp_path))
    with pytest.raises(ConfigError) as refused:
        plan_start(config_for(tmp_path, "loss.optim.lr=0.003", "model.dim=4", "train.steps=400"))
    message = str(refused.value)
    assert "loss.optim.lr: 0.0001 -> 0.003" in message and "model.dim: 8 -> 4" in message
    assert "train.steps" not in message  # resumable: not among the refused
    assert "train.run_name=<new name>" in message and "train.resume=never" in message


def test_resume_never_starts_under_a_free_name_and_must_needs_a_run(tmp_path, capsys):
    with pytest.raises(ConfigError, match="holds no checkpoint to resume"):
        plan_start(config_for(tmp_path, "train.resume=must"))
    config, fresh = plan_start(config_for(tmp_path, "train.resume=never"))  # nothing there yet: its own name
    assert (fresh.run_name, fresh.resumed, config["train"]["run_name"]) == ("tiny", False, "tiny")
    started(tmp_path, config_for(tmp_path))
    started(tmp_path, config_for(tmp_path), name="tiny-2")
    config, fresh = plan_start(config_for(tmp_path, "train.resume=never", "loss.optim.lr=0.003"))
    assert (fresh.run_name, fresh.resumed, config["train"]["run_name"]) == ("tiny-3", False, "tiny-3")
    assert "starting 'tiny-3'" in capsys.readouterr().out
    _, must = plan_start(config_for(tmp_path, "train.resume=must"))
    assert must.resumed


def test_a_refused_rerun_through_make_train_touches_nothing(tone_shards, tmp_path):
    """The measured mistake: the same run name with another learning rate. Exit 2 with one message, before Ray
    or MLflow start; the earlier run's checkpoint and (absent) MLflow store stay as they were."""
    storage, uri = tmp_path / "ray", f"sqlite:///{tmp_path}/mlflow.db"
    command = train_command(tone_shards, storage, uri)
    overrides = [arg for arg in command[3:] if "=" in arg]  # the run's overrides, as python -m pipeline.train got them
    folder = started(storage, prepare(compose(overrides)))
    before = (folder / "state.json").read_bytes()
    proc = subprocess.run([*command, "loss.optim.lr=0.003"], cwd=ROOT, env=run_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "loss.optim.lr: 0.0001 -> 0.003" in proc.stderr and "Traceback" not in proc.stderr
    assert (folder / "state.json").read_bytes() == before and not (tmp_path / "mlflow.db").exists()
    assert "Ray run" not in proc.stdout


def test_the_same_rules_on_object_storage(tmp_path):
    """s3:// and gs:// run folders are read through fsspec, like any path: here its in-memory filesystem."""
    import fsspec

    storage = f"memory://{tmp_path.name}/ray"
    with fsspec.open(f"{storage}/tiny/checkpoint_2026-01-01_00-00-00.000000/state.json", "w") as fh:
        fh.write(json.dumps({"step": 20, "config": config_for(storage)}))
    assert plan_start(config_for(storage, "train.steps=99"))[1].changes == {"train.steps": (40, 99)}
    with pytest.raises(ConfigError, match="model.dim: 8 -> 4"):
        plan_start(config_for(storage, "model.dim=4"))
    assert plan_start(config_for(storage, "train.resume=never"))[1].run_name == "tiny-2"


def test_a_run_stored_before_a_key_existed_compares_with_the_value_it_trained_with():
    """loss.mode_seeking (issue 39) did not exist before: such a run trained without it (0.0), and resumes as it
    was; model.label_embedding absent is the normal embedding those runs had, so the new default is a change."""
    from pipeline.train.resume import differences

    new = compose(["preset=tiny"])
    old = json.loads(json.dumps(new))
    del old["loss"]["mode_seeking"]
    assert differences(old, new) == {}
    del old["model"]["label_embedding"]
    assert differences(old, new) == {"model.label_embedding": ("normal", new["model"]["label_embedding"])}
