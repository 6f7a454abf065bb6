"""Sweeps (``make sweep``): the sweep config, the collapse guard and ranking, and a real 3-trial sweep on Ray Tune."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from common.errors import ConfigError
from pipeline.schema import compose
from pipeline.sweep.__main__ import compose_sweep, split
from pipeline.sweep.config import Guard, SweepConfig, override
from pipeline.sweep.ranking import WORST, Trial, rank, reproduce_command, summarize, table, trial_score
from pipeline.sweep.trial import PARENT_TAG, TRIAL_TAG
from pipeline.train.state import load_checkpoint
from wavegan.metrics import relative_inception_score

from ..conftest import ROOT, run_env, store_with_classifier


def sweep_config(**changes) -> SweepConfig:
    section = compose_sweep(["sweep=tiny"])["sweep"]
    section.update(changes)
    return SweepConfig.from_config(section)


def test_the_sweep_config_is_checked_with_the_key_and_what_to_write():
    assert sweep_config().samples() == 1 and sweep_config(trials=6).samples() == 3  # each grid point per sample
    with pytest.raises(ConfigError, match=r"sweep.trials=3: expected a positive multiple of the grid's 2 points"):
        sweep_config(trials=3)
    with pytest.raises(ConfigError, match=r"sweep.space.loss.optim.lr=\{'range'"):
        sweep_config(space={"loss.optim.lr": {"range": [1, 2]}}).dimensions()
    with pytest.raises(ConfigError, match=r"loguniform=\[0, 1\]: both bounds must be > 0"):
        sweep_config(space={"loss.optim.lr": {"loguniform": [0, 1]}}).grid_size()
    with pytest.raises(ConfigError, match=r"low < high"):
        sweep_config(space={"loss.optim.lr": {"uniform": [2, 1]}}).grid_size()
    with pytest.raises(ConfigError, match="unknown key sweep.trails; did you mean sweep.trials"):
        compose_sweep(["sweep=tiny", "sweep.trails=3"])
    # sweep=/sweep.* set the sweep, everything else goes to the trials
    assert split(["sweep=tiny", "sweep.trials=6", "data.dir=x", "+sweep.seed=1"]) == (
        ["sweep=tiny", "sweep.trials=6", "+sweep.seed=1"], ["data.dir=x"])


def test_a_searched_key_or_value_that_makes_no_training_config_fails_before_ray(tmp_path):
    from pipeline.sweep.driver import check_space

    base = ["preset=tiny", f"train.storage_path={tmp_path}"]
    with pytest.raises(ConfigError, match=r"sweep.space.loss.optim.rl: the training config has no key "
                                          r"loss.optim.rl \(did you mean loss.optim.lr"):
        check_space(sweep_config(space={"loss.optim.rl": {"grid": [1e-4]}}, trials=1), base)
    with pytest.raises(ConfigError, match="model.dim"):  # a listed value of the wrong type
        check_space(sweep_config(space={"model.dim": {"choice": [8, "wide"]}}, trials=1), base)


def test_overrides_read_back_as_the_values_they_carry(tmp_path):
    values = {"loss.optim.lr": 3.1e-05, "train.ema.decay": 0.995, "train.run_name": "a b's", "train.compile": True,
              "train.epochs": None}
    config = compose([f"train.storage_path={tmp_path}", *(override(k, v) for k, v in values.items())])
    for key, value in values.items():
        section, _, leaf = key.rpartition(".")
        node = config
        for part in section.split("."):
            node = node[part]
        assert node[leaf] == value, key


def test_a_collapsed_or_unrecognisable_evaluation_or_a_diverged_run_scores_the_worst_and_never_ranks_best():
    guard = Guard(collapse_ratio=0.5, quality_floor=0.1)
    assert trial_score({"eval/is_mean": 2.0, "eval/d_self_rel": 0.8, "eval/is_rel": 0.3}, "eval/is_mean", guard) == 2.0
    assert trial_score({"eval/is_mean": 3.0, "eval/d_self_rel": 0.2}, "eval/is_mean", guard) == -WORST
    assert trial_score({"eval/fid": 3.0, "eval/d_self_rel": 0.2}, "eval/fid", guard) == WORST  # lower is better
    assert trial_score({"diverged": 1, "step": 10}, "eval/is_mean", guard) == -WORST
    # noise: spread like real clips (|D|self rel 1.1) but nothing the classifier can place (IS 1.08 of 9.4)
    noise = {"eval/is_mean": 1.08, "eval/d_self_rel": 1.1, "eval/is_rel": relative_inception_score(1.08, 9.4)}
    assert guard.fails(noise) == "below the quality floor"
    assert trial_score(noise, "eval/is_mean", guard) == -WORST
    assert trial_score(noise, "eval/is_mean", Guard(0.5, 0.0)) == 1.08  # quality_floor 0: no floor
    history = [{"step": 10, "eval/is_mean": 1.5, "eval/d_self_rel": 0.9, "eval/is_rel": 0.2, "checkpoint_path": "/c10"},
               {"step": 20, "eval/is_mean": 4.0, "eval/d_self_rel": 0.1, "checkpoint_path": "/c20"},  # collapsed
               {"step": 30, "eval/is_mean": 1.8, "eval/d_self_rel": 0.7},
               {"step": 40, "eval/is_mean": 1.9, "eval/d_self_rel": 0.9, "eval/is_rel": 0.05}]  # below the floor
    seen = summarize(history, "eval/is_mean", guard)
    assert (seen["best"], seen["best_step"], seen["failed_evals"], seen["last_step"]) == (1.8, 30, 2, 40)
    assert (seen["checkpoint"], seen["checkpoint_step"]) == ("/c10", 10)  # the best kept one: step 20 collapsed
    collapsed_only = summarize(history[1:2], "eval/is_mean", guard)
    assert collapsed_only["best"] is None and collapsed_only["d_self_rel"] == 0.1
    trials = [Trial("t0", "s-t0", {"loss.optim.lr": 1.0}, "completed", 20),  # every evaluation collapsed
              Trial("t1", "s-t1", {"loss.optim.lr": 1e-4}, "completed", 30, best=1.8, best_step=30),
              Trial("t2", "s-t2", {"loss.optim.lr": 3e-4}, "completed", 30, best=2.2, best_step=10)]
    assert [t.trial_id for t in rank(trials, "eval/is_mean")] == ["t2", "t1", "t0"]
    assert [t.trial_id for t in rank(trials, "eval/fid")][-1] == "t0"  # unranked stays last either way
    command = reproduce_command(["preset=tiny", "data.dir=rel", "data.dir=/abs"], trials[2], "again")
    assert command == "make train ARGS='preset=tiny data.dir=/abs loss.optim.lr=0.0003 train.run_name=again'"
    rows = table(trials, "eval/is_mean").splitlines()
    assert rows[2].startswith("| 1 | s-t2 |") and rows[4].startswith("| - | s-t0 |")


def test_the_cluster_job_runs_the_same_sweep_with_every_place_absolute(tmp_path, monkeypatch):
    """make sweep-cluster: the job's command is the sweep's, its places made absolute after the user's overrides."""
    import argparse
    import os

    from pipeline.sweep.cluster import sweep_entrypoint

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    command, env = sweep_entrypoint(argparse.Namespace(
        overrides=["sweep=tiny", "data.dir=shards", "sweep.trials=6"], tracking_uri="http://mlflow:5000"))
    assert command[:5] == ["python", "-m", "pipeline.sweep", "sweep=tiny", "sweep.trials=6"]
    ours, training = split(command[3:])
    assert training[0] == "data.dir=shards"  # the last value of a key wins: the absolute one, appended
    assert compose([*sweep_config().train, *training])["data"]["dir"] == str(tmp_path / "shards")
    assert f"train.storage_path={tmp_path / 'ray_results'}" in training and env == {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    bad = subprocess.run([sys.executable, "-m", "pipeline.sweep.cluster", "sweep=tiny", "sweep.trails=3"], cwd=ROOT,
                         env={**os.environ, "RAY_ADDRESS": "http://127.0.0.1:1"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown key sweep.trails" in bad.stderr  # before contacting the cluster


@pytest.mark.slow
def test_make_sweep_runs_nested_trials_cuts_the_bad_one_and_prints_a_reproduce_command(tone_shards, classifier_store,
                                                                                        tmp_path):
    """2 trials of preset=tiny, one at a time; lr 1.0 collapses the generator (|D|self 0), so ASHA cuts it at
    its first rung (step 10), right after a healthy trial recorded that rung."""
    uri, storage = store_with_classifier(classifier_store, tmp_path), tmp_path / "ray"
    args = [f"data.dir={tone_shards}", f"train.storage_path={storage}", f"tracking.uri={uri}",
            f"tracking.artifact_root={tmp_path / 'mlartifacts'}", "cluster.dashboard=false", "sweep.register_best=true"]
    done = subprocess.run(["make", "--no-print-directory", "sweep", "SWEEP=tiny", f"ARGS={shlex.join(args)}"],
                          cwd=ROOT, env=run_env(), capture_output=True, text=True, timeout=1200)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("wavegan").experiment_id
    parents = client.search_runs([experiment], filter_string="tags.`wavegan.sweep` LIKE 'tiny-%' and "
                                                            "tags.`wavegan.sweep.config` = 'tiny'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    assert len(children) == 2
    by_lr = {float(c.data.params["loss.optim.lr"]): c for c in children}
    assert set(by_lr) == {1e-4, 1.0}
    bad = by_lr[1.0]
    assert bad.data.tags["wavegan.sweep.outcome"] == "stopped by the scheduler at step 10", out[-6000:]
    assert bad.info.status == "KILLED" and bad.data.metrics["step"] == 10
    assert f"{bad.data.tags[TRIAL_TAG]} stopped by the scheduler at step 10" in out
    assert by_lr[1e-4].data.tags["wavegan.sweep.outcome"] == "completed"  # the first ran every rung
    assert by_lr[1e-4].info.status == "FINISHED" and by_lr[1e-4].data.metrics["step"] == 40
    # trials never register; the sweep registers its best trial's best evaluated checkpoint (sweep.register_best)
    versions = client.search_model_versions("name = 'wavegan-generator'")
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]

    # the parent holds the table; the console ends with the ranking and the reproduce command
    assert "| rank | trial | loss.optim.lr | eval/is_mean |" in parent.data.tags["mlflow.note.content"]
    assert len(client.list_artifacts(parent.info.run_id)) == 2  # trials.md, trials.json
    best_run = parent.data.tags["wavegan.sweep.best_run"]
    assert best_run != bad.info.run_name
    best_child = next(c for c in children if c.info.run_name == best_run)
    assert versions[0].run_id == best_child.info.run_id
    assert f"registered wavegan-generator version 1 from {best_run}" in out
    assert versions[0].tags["train.step"] in ("20", "40")  # checkpoints every 20 steps (evaluations every 10)
    match = re.search(r"^\[sweep\] reproduce: (make train ARGS=.*)$", out, re.MULTILINE)
    assert match and match.group(1) == parent.data.tags["wavegan.sweep.reproduce"]
    # the command composes the best trial's config: everything but the run's name and registration
    argv = shlex.split(shlex.split(match.group(1))[2].removeprefix("ARGS="))
    again = compose(argv)
    trained = load_checkpoint(sorted(p for p in (storage / best_run).glob("checkpoint_*") if p.is_dir())[-1])["config"]
    for key in ("model", "loss", "data", "eval", "cluster"):
        assert again[key] == trained[key], key
    assert {k: v for k, v in again["train"].items() if k != "run_name"} == \
        {k: v for k, v in trained["train"].items() if k != "run_name"}
    assert again["registry"] == {**trained["registry"], "register": True}


def test_the_loss_family_the_critic_steps_the_conditioning_and_whole_recipes_can_be_searched(tmp_path):
    """A config group is a dimension like any key (grid or choice over its options); a preset is a whole recipe, and a
    trial's value replaces the base's. ``conf/sweep/recipe.yaml`` puts cpu-demo against the reference's recipe."""
    from pipeline.sweep.driver import check_space
    from pipeline.sweep.trial import TrialSpec, trial_overrides

    base = ["preset=tiny", f"train.storage_path={tmp_path}"]
    space = {"loss": {"grid": ["dcgan", "wgan-gp"]}, "loss.critic_steps": {"grid": [1, 5]},
             "model.label_embedding": {"choice": ["normal", "uniform"]}}
    sweep = sweep_config(space=space, trials=4)
    check_space(sweep, base)
    spec = TrialSpec("s", base, [], {}, "run", sweep.metric, sweep.guard)
    values = {"loss": "dcgan", "loss.critic_steps": 5, "model.label_embedding": "normal"}
    config = compose(trial_overrides(spec, values, "t1"))
    assert (config["loss"]["name"], config["loss"]["critic_steps"], config["model"]["label_embedding"]) == \
        ("dcgan", 5, "normal")
    with pytest.raises(ConfigError, match=r"loss is a config group: search it with grid or choice over its options "
                                          r"\(dcgan, lsgan, wgan, wgan-gp\)"):
        sweep_config(space={"loss": {"grid": ["dcgan", "hinge"]}}, trials=2).dimensions()

    recipes = SweepConfig.from_config(compose_sweep(["sweep=recipe"])["sweep"])
    assert recipes.grid_size() == 4 and [d.key for d in recipes.dimensions()] == ["preset", "model.label_embedding"]
    check_space(recipes, [*recipes.train, "preset=tiny", f"train.storage_path={tmp_path}"])  # the base's is replaced
    official = compose(trial_overrides(TrialSpec("s", ["preset=tiny"], [], {}, "r", recipes.metric, recipes.guard),
                                       {"preset": "cpu-wgan-gp"}, "t2"))
    loss = official["loss"]
    assert (loss["name"], loss["critic_steps"], loss["gp_weight"], loss["optim"]["lr"], loss["optim"]["betas"]) == \
        ("wgan-gp", 5, 10.0, 1e-4, [0.5, 0.9])
    assert official["train"]["ema"]["decay"] is None and official["model"]["dim"] == 8


def test_the_best_checkpoint_remembers_which_generator_its_evaluation_chose():
    """sweep.register_best registers the generator the training's evaluation chose there (select/online)."""
    guard = Guard(collapse_ratio=0.5, quality_floor=0.0)
    history = [{"step": step, "eval/is_mean": is_mean, "eval/d_self_rel": d_self, "checkpoint_path": path,
                "select/online": online}
               for step, is_mean, d_self, path, online in ((250, 2.0, 0.8, "/a", 0.0), (500, 3.0, 0.9, "/b", 1.0),
                                                           (750, 4.0, 0.1, "/c", 0.0))]  # the last: collapsed
    seen = summarize(history, "eval/is_mean", guard)
    assert (seen["checkpoint"], seen["checkpoint_step"], seen["checkpoint_online"]) == ("/b", 500, True)
    assert summarize(history[:1], "eval/is_mean", guard)["checkpoint_online"] is False
    assert summarize([{k: v for k, v in history[0].items() if k != "select/online"}], "eval/is_mean",
                     guard)["checkpoint_online"] is None  # a run from before the choice: auto (the EMA)
