"""The equal-budget comparison of ``python -m scripts.recipe_comparison`` (issue 39): its commands, and its table."""

import math
import os
import subprocess
import sys

from pipeline.schema import compose
from scripts.recipe_comparison import RECIPES, markdown, summary
from tests.conftest import ROOT


def test_the_dry_run_prints_one_composable_training_command_per_recipe_and_seed(tone_shards, tmp_path):
    out = subprocess.run([sys.executable, "-m", "scripts.recipe_comparison", "--dry-run", "--work-dir", str(tmp_path),
                          "--data-dir", str(tone_shards), "--seeds", "0,1", "--parallel", "2",
                          "--recipes", ",".join(RECIPES)], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    commands = [line.split()[2:] for line in out.splitlines() if line.startswith("-m pipeline.train")]
    assert len(commands) == 2 * len(RECIPES)
    for args in commands:
        config = compose([a for a in args if not a.startswith("eval.classifier_uri=")])
        assert config["train"]["max_minutes"] == 20 and config["eval"]["every"] == 250
        # two at once: each run gets half the cores, so every recipe trains on the same compute
        assert config["train"]["threads_per_worker"] == max(1, (os.cpu_count() or 1) // 2)
        assert config["train"]["checkpoint_every"] == 250 and config["registry"]["register"] is False
    official = compose([a for a in commands[6] if not a.startswith("eval.classifier_uri=")])
    assert (official["loss"]["name"], official["loss"]["critic_steps"], official["train"]["ema"]["decay"]) == \
        ("wgan-gp", 5, None)


def test_the_table_takes_the_last_three_evaluations_and_the_bar_needs_both_is_and_diversity():
    def point(step, is_mean, d_self, online_is, online_d):  # real test clips' IS: 5 (is_rel = (IS - 1) / 4)
        return {"step": step, "eval/is_mean": is_mean, "eval/is_rel": (is_mean - 1) / 4, "eval/d_self_rel": d_self,
                "eval_online/is_mean": online_is, "eval_online/d_self_rel": online_d}

    points = [point(250, 1.0 + 1e-9, 0.9, 1.0, 0.9), point(500, 3.0, 0.2, 2.5, 0.6), point(750, 3.0, 0.2, 2.5, 0.6),
              point(1000, 3.0, 0.2, 2.5, 0.6)]
    s = summary(points)
    assert s["steps"] == 1000 and math.isclose(s["real_is"], 5.0)
    assert math.isclose(s["is_ema"], 0.6) and math.isclose(s["d_self_ema"], 0.2)  # good IS, collapsed
    assert math.isclose(s["is_online"], 0.5) and math.isclose(s["d_self_online"], 0.6)
    assert s["meets_bar"]  # the online generator meets both
    s_bad = summary([point(250, 3.0, 0.2, 2.0, 0.6)])  # neither meets both: IS online 0.4
    assert not s_bad["meets_bar"]
    table = markdown([{"recipe": "cpu-demo", "seed": 0, "summary": s, "minutes": 21.0, "load": [1.0, 2.5]}])
    assert "| cpu-demo | 0 | 1000 | 0.60 | 0.50 | 0.20 | 0.60 | yes | 21.0 | 1.0-2.5 |" in table
