"""The one table of metric directions and the one latent sampler."""

import pytest
import torch

from pipeline.evaluate.config import EvalError
from pipeline.evaluate.training import EarlyStopping
from wavegan.latents import sample_latents
from wavegan.metrics import HIGHER_IS_BETTER, directions_note, higher_is_better, is_better, metric_name


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
    assert all(HIGHER_IS_BETTER[key] is False for key in ("fid", "am", "d_self_rel", "d_train_rel"))


def test_latents_are_uniform_in_the_box_and_seeded_the_same_everywhere():
    z = sample_latents(512, 8, generator=torch.Generator().manual_seed(0))
    assert z.shape == (512, 8) and -1.0 <= z.min() < -0.9 and 0.9 < z.max() <= 1.0
    again = sample_latents(512, 8, generator=torch.Generator().manual_seed(0), device="meta")
    assert again.device.type == "meta"
    assert torch.equal(sample_latents(4, 8, generator=torch.Generator().manual_seed(0)), z[:4])
