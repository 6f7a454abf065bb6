"""Every config group and section has a schema that Hydra checks: a wrong type, an unknown key and a missing value
fail at composition (common.hydra_cli.check_overrides, what every command runs before anything else), naming the
key. tests/test_cli.py runs a few of these as the commands themselves."""

from __future__ import annotations

import re
import shutil

import pytest

import data_prep.config
from common import hydra_cli
from common.hydra_cli import CONF_DIR, UsageError, check_overrides
from pipeline import schema

SHARDS = ("src=/data/in", "out=/data/out")

# group: the primary config, a file of conf/ and a key it states, an override of the wrong type, a misspelt key
# and the key it means
GROUPS = {
    "model": ("config", "model/wavegan.yaml", "dim", "model.dim=big", "model.dimm=3", "model.dim"),
    "loss": ("config", "loss/wgan-gp.yaml", "gp_weight", "loss.gp_weight=strong", "loss.gp_wieght=5", "loss.gp_weight"),
    "data": ("config", "data/default.yaml", "shuffle_block", "data.num_workers=two", "data.shufle_block=9",
             "data.shuffle_block"),
    "train": ("config", "train/default.yaml", "log_every", "train.steps=abc", "train.stepz=5", "train.steps"),
    "cluster": ("config", "cluster/local.yaml", "num_workers", "cluster.use_gpu=maybe", "cluster.num_worker=2",
                "cluster.num_workers"),
    "tracking": ("config", "tracking/local.yaml", "experiment", "tracking.preview_every=often",
                 "tracking.experimnt=x", "tracking.experiment"),
    "eval": ("config", "eval/default.yaml", "n_nn", "eval.n_nn=many", "eval.n_nnn=5", "eval.n_nn"),
    "registry": ("config", "config.yaml", "model_name", "registry.register=maybe", "registry.model_nam=x",
                 "registry.model_name"),
    "prep": ("shards", "shards.yaml", "engine", "prep.slice_len=long", "prep.slicelen=3", "prep.slice_len"),
}
SCHEMAS = {"config": schema, "shards": data_prep.config}


def problem(config_name: str, *overrides: str) -> str:
    extra = SHARDS if config_name == "shards" else ()
    with pytest.raises(UsageError) as exc:
        check_overrides(config_name, [*extra, *overrides], schema=SCHEMAS[config_name], command="cmd")
    return str(exc.value).splitlines()[0]


@pytest.fixture
def conf_copy(tmp_path, monkeypatch):
    """A copy of conf/ that check_overrides composes from, to edit."""
    copy = tmp_path / "conf"
    shutil.copytree(CONF_DIR, copy)
    monkeypatch.setattr(hydra_cli, "CONF_DIR", copy)
    return copy


@pytest.mark.parametrize("group", GROUPS)
def test_a_wrong_type_fails_at_composition_naming_the_key(group):
    config_name, _, _, wrong, _, _ = GROUPS[group]
    key, value = wrong.split("=")
    assert problem(config_name, wrong).startswith(f"{key}={value}: Value '{value}'")


@pytest.mark.parametrize("group", GROUPS)
def test_an_unknown_key_fails_at_composition_naming_the_nearest(group):
    config_name, _, _, _, typo, meant = GROUPS[group]
    key = typo.split("=")[0]
    assert problem(config_name, typo).startswith(f"unknown key {key}; did you mean {meant}")
    # added on purpose (+key=value): Hydra adds it, the schema has no such key
    assert problem(config_name, f"+{typo}").startswith(f"unknown key {key}:")


@pytest.mark.parametrize("group", GROUPS)
def test_a_missing_value_fails_at_composition_naming_the_key(group, conf_copy):
    config_name, path, key, _, _, meant = GROUPS[group]
    assert problem(config_name, f"{meant}=???") == f"{meant} has no value (???): set it, e.g. cmd {meant}=..."
    yaml = conf_copy / path  # a config file that lacks a key of the schema
    text, n = re.subn(rf"^( *){key}:.*\n", "", yaml.read_text(), count=1, flags=re.M)
    assert n == 1
    yaml.write_text(text)
    full_key = key if config_name == "shards" else f"{group}.{key}"
    assert problem(config_name) == f"{full_key} has no value (???): set it, e.g. cmd {full_key}=..."


def test_a_wrong_value_in_a_config_file_names_the_key_and_the_file(conf_copy):
    (conf_copy / "preset" / "typo.yaml").write_text("# @package _global_\nmodel:\n  dimm: 8\n")
    assert problem("config", "preset=typo") == \
        "model.dimm: Key 'dimm' not in 'WaveGANModel' (in conf/preset/typo.yaml)"
    (conf_copy / "preset" / "typo.yaml").write_text("# @package _global_\ntrain:\n  steps: many\n")
    assert problem("config", "preset=typo") == \
        "train.steps: Value 'many' of type 'str' could not be converted to Integer (in conf/preset/typo.yaml)"


@pytest.mark.parametrize("override, message", [
    ("model.num_classes=many", "model.num_classes='many': expected int or auto"),
    ("loss.lr_decay={start:1,end:soon,final:0.1}", "loss.lr_decay={'start': 1, 'end': 'soon', 'final': 0.1}"),
    ("loss.optim_d=fast", "loss.optim_d='fast': expected null or keys of loss.optim"),
    ("train.early_stop={metric:eval/fid,patience:long}", "train.early_stop.patience='long': expected int"),
    ("train.early_stop={metric:eval/fid,patiense:3}", "unknown key train.early_stop.patiense"),
])
def test_values_hydra_cannot_type_are_checked_at_composition_too(override, message):
    """A number or auto, null or a mapping: typed Any for Hydra, checked by pipeline.schema.check."""
    assert problem("config", override).startswith(message)


def test_what_the_schemas_accept():
    check_overrides("config", ["preset=cpu-demo", "model.num_classes=auto", "loss.lr_decay={start:1,end:5,final:0.1}",
                               "loss.optim_d={lr:4e-4}", "train.early_stop={metric:eval/fid,patience:3}",
                               "train.epochs=7"], schema=schema)
    for preset in ("sc09", "long", "specgan", "tiny", "cpu-demo"):
        check_overrides("config", [f"preset={preset}"], schema=schema)
    for preset in ("sc09", "long", "nsynth", "drums", "piano"):
        check_overrides("shards", [*SHARDS, f"prep={preset}"], schema=data_prep.config)
    # showing the config (--cfg job, --help) needs no value yet: the command line is not complete
    check_overrides("shards", [], schema=data_prep.config, complete=False)
    with pytest.raises(UsageError, match=r"out has no value \(\?\?\?\)"):
        check_overrides("shards", [], schema=data_prep.config)


def test_the_eval_and_tracking_configs_of_pipeline_evaluate_are_composed_and_checked_by_hydra():
    from pipeline.evaluate.config import EvalError, load_eval_config, load_tracking_config

    cpu = load_eval_config("cpu", ["n_nn=200"])
    assert (cpu["n_nn"], cpu["classifier"]["channels"], cpu["n_generated_during_training"]) == (200, [8, 16, 16, 16],
                                                                                                200)
    assert load_tracking_config(["uri=sqlite:///x.db"])["uri"] == "sqlite:///x.db"
    for name, overrides, message in (("cpu", ["n_nnz=3"], "unknown key eval.n_nnz; did you mean eval.n_nn?"),
                                     ("cpu", ["n_nn=many"], "eval.n_nn=many: Value 'many'"),
                                     ("cpuu", [], "unknown eval 'cpuu'; did you mean cpu?"),
                                     ("mine.yaml", [], "name an option of conf/eval/ (cpu, default)")):
        with pytest.raises(EvalError, match=re.escape(message)):
            load_eval_config(name, overrides)
    with pytest.raises(EvalError, match=re.escape("tracking.preview_every=often: Value 'often'")):
        load_tracking_config(["preview_every=often"])
