"""The one table of metric directions and the one latent sampler."""

import pytest
import torch

from common.errors import ConfigError
from pipeline.evaluate.config import EvalError
from pipeline.evaluate.training import EarlyStopping, prepare_training_eval
from wavegan.latents import sample_latents
from wavegan.metrics import (
    HIGHER_IS_BETTER,
    NEAREST_REAL,
    directions_note,
    higher_is_better,
    is_better,
    metric_name,
)


def test_logged_and_per_label_names_go_the_way_of_their_metric():
    assert metric_name("eval/fid/seven") == metric_name("fid/seven") == metric_name("fid") == "fid"
    assert not higher_is_better("eval/fid") and higher_is_better("eval/is_mean") and higher_is_better("mis/zero")
    assert is_better("fid/seven", 1.0, 2.0) and not is_better("is_mean", 1.0, 2.0)
    assert higher_is_better("some_new_score")  # unlisted: higher is better, as promotion always did


def test_early_stopping_takes_its_direction_from_the_table():
    assert EarlyStopping("eval/fid").mode == "min" and EarlyStopping("eval/is_mean").mode == "max"
    assert EarlyStopping("eval/other", "min").mode == "min"  # a metric the table does not know: as configured
    with pytest.raises(EvalError, match="improves towards min"):
        EarlyStopping("eval/fid", "max")


def test_the_report_note_names_every_table1_direction():
    note = directions_note()
    assert note.startswith("higher is better: IS, mIS; lower is better: FID, AM")
    assert note.endswith("nearest 1 (the real clips') is best: |D|self, |D|train")
    assert all(HIGHER_IS_BETTER[key] is False for key in ("fid", "am"))


def test_the_ratios_to_the_real_clips_have_no_direction_and_nothing_ranks_by_them(tmp_path):
    """|D|self 1.0 is as varied as the data: 0.2 (collapsed) and 3.0 (noise) are both worse, so early stopping, the
    checkpoint ranking, the sweep and promotion refuse it by name instead of preferring one end."""
    from pipeline.promote import PromotionError, promote
    from pipeline.sweep.__main__ import compose_sweep
    from pipeline.sweep.config import SweepConfig

    assert set(NEAREST_REAL) == {"d_self_rel", "d_train_rel"} and not set(NEAREST_REAL) & set(HIGHER_IS_BETTER)
    with pytest.raises(ValueError, match=r"eval/d_self_rel is best at 1.0 .* registry.collapse_ratio"):
        higher_is_better("eval/d_self_rel")
    with pytest.raises(EvalError, match="train.early_stop.metric: eval/d_train_rel is best at 1.0"):
        EarlyStopping("eval/d_train_rel")
    section = {**compose_sweep(["sweep=tiny"])["sweep"], "metric": "eval/d_self_rel"}
    with pytest.raises(ConfigError, match="sweep.metric: eval/d_self_rel is best at 1.0"):
        SweepConfig.from_config(section)
    config = {"eval": {"every": 0}, "registry": {"checkpoint": "best", "metric": "eval/d_self_rel"}}
    with pytest.raises(ConfigError, match="registry.metric: eval/d_self_rel is best at 1.0"):
        prepare_training_eval(config, tracking=None)
    with pytest.raises(PromotionError, match="d_self_rel is best at 1.0"):
        promote(None, "1", metric="d_self_rel")


def test_latents_are_uniform_in_the_box_and_seeded_the_same_everywhere():
    z = sample_latents(512, 8, generator=torch.Generator().manual_seed(0))
    assert z.shape == (512, 8) and -1.0 <= z.min() < -0.9 and 0.9 < z.max() <= 1.0
    again = sample_latents(512, 8, generator=torch.Generator().manual_seed(0), device="meta")
    assert again.device.type == "meta"
    assert torch.equal(sample_latents(4, 8, generator=torch.Generator().manual_seed(0)), z[:4])
