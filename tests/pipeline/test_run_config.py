"""The typed view of a training run: built from the composed config (a plain dict), every key read from conf/,
every value checked against its schema's type."""

import copy

import pytest

from bench.core import compose
from pipeline.train.run_config import ConfigError, RunConfig, StepSettings
from pipeline.train.step import IterationConfig

PLAN = {"total_steps": 10, "batches_per_epoch": 3, "steps_per_epoch": 0.5}


def test_the_composed_config_gives_every_typed_value():
    cfg = {**compose("preset=tiny", "train.ema.decay=0.99", "loss=wgan"), **PLAN}
    run = RunConfig.from_config(cfg)
    assert run.loss.name == "wgan" and run.loss.clip == cfg["loss"]["clip"] and run.loss.gp_weight is None
    assert run.train.ema.decay == 0.99 and run.train.log_every == cfg["train"]["log_every"]
    assert run.data.split == cfg["data"]["split"] and run.plan.total_steps == 10
    step = IterationConfig.from_config(cfg)
    assert (step.loss, step.clip, step.ema_decay, step.global_batch) == ("wgan", run.loss.clip, 0.99,
                                                                      cfg["train"]["batch_size"])


def test_a_missing_key_is_named_not_defaulted():
    cfg = {**compose("preset=tiny"), **PLAN}
    broken = copy.deepcopy(cfg)
    del broken["data"]["shuffle_block"]
    with pytest.raises(ConfigError, match=r"data\.shuffle_block is missing .*conf/data/"):
        RunConfig.from_config(broken)
    del broken["train"]["ema"]["start_step"]
    with pytest.raises(ConfigError, match=r"train\.ema\.start_step is missing"):
        StepSettings.from_config(broken)
    with pytest.raises(ConfigError, match="derived values"):
        RunConfig.from_config(compose("preset=tiny"))  # not through prepare: no plan


def test_a_wrong_type_in_a_stored_config_is_named():
    """What travels is the plain dict (state.json, Ray workers): its views check the types too."""
    cfg = {**compose("preset=tiny"), **PLAN}
    for group, key, value, message in (("train", "batch_size", "8", r"train\.batch_size='8': expected int"),
                                       ("loss", "critic_steps", 2.5, r"loss\.critic_steps=2\.5: expected int"),
                                       ("data", "pin_memory", "yes", r"data\.pin_memory='yes': expected bool")):
        broken = copy.deepcopy(cfg)
        broken[group][key] = value
        with pytest.raises(ConfigError, match=message):
            RunConfig.from_config(broken)
    broken = copy.deepcopy(cfg)
    broken["train"]["ema"] = {"decay": "high", "start_step": 0}
    with pytest.raises(ConfigError, match=r"train\.ema\.decay='high': expected a number"):
        StepSettings.from_config(broken)
    broken = copy.deepcopy(cfg)
    broken["loss"]["lr_decay"] = {"start": 5, "end": 2, "final": 0.1}
    with pytest.raises(ConfigError, match="needs 0 <= start < end"):
        RunConfig.from_config(broken)


def test_registering_the_best_checkpoint_scores_every_checkpoint_and_ranks_by_the_metric(tone_shards):
    from pipeline.train.driver import checkpoint_config
    from pipeline.train.preflight import prepare

    last = prepare(compose("preset=tiny", f"data.dir={tone_shards}"))
    assert last["eval"]["every"] == 0 and checkpoint_config(last).checkpoint_score_attribute is None
    best = prepare(compose("preset=tiny", f"data.dir={tone_shards}", "registry.checkpoint=best"))
    assert best["eval"]["every"] == best["train"]["checkpoint_every"]  # no evaluation asked: one per checkpoint
    kept = checkpoint_config(best)
    assert (kept.checkpoint_score_attribute, kept.checkpoint_score_order, kept.num_to_keep) == \
        ("select/score", "max", best["train"]["keep_checkpoints"])  # eval/is_mean of the better generator
    fid = checkpoint_config(prepare(compose("preset=tiny", f"data.dir={tone_shards}", "registry.checkpoint=best",
                                            "registry.metric=eval/fid", "eval.every=5")))
    assert fid.checkpoint_score_order == "min"  # the direction comes from wavegan.metrics
    with pytest.raises(ConfigError, match="registry.checkpoint must be last or best, got 'first'"):
        prepare(compose("preset=tiny", f"data.dir={tone_shards}", "registry.checkpoint=first"))


def test_a_split_smaller_than_a_global_batch_or_a_batch_the_workers_do_not_divide_is_refused(tone_shards):
    """Both before Ray starts, naming both numbers (the data stream needs whole global batches, split evenly)."""
    from data_prep.manifest import read_manifest
    from pipeline.train.preflight import prepare

    train = read_manifest(str(tone_shards))["splits"]["train"]["samples"]
    with pytest.raises(ConfigError, match=rf"holds {train} clips, fewer than one global batch "
                                          rf"\(train.batch_size={train + 1}\)"):
        prepare(compose("preset=tiny", f"data.dir={tone_shards}", f"train.batch_size={train + 1}"))
    with pytest.raises(ConfigError, match=r"train.batch_size=8 must split evenly over cluster.num_workers=3"):
        prepare(compose("preset=tiny", f"data.dir={tone_shards}", "cluster.num_workers=3"))
    with pytest.raises(ConfigError, match=r"loss.mode_seeking pairs each worker's clips two by two, but "
                                          r"train.batch_size=8 over cluster.num_workers=8 gives 1 a worker"):
        prepare(compose("preset=tiny", f"data.dir={tone_shards}", "cluster.num_workers=8", "loss.mode_seeking=1"))
