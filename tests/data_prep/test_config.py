"""conf/shards.yaml and conf/prep/*.yaml compose into valid settings; bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data_prep.config import ConfigError, PrepConfig, register
from data_prep.shard import ShardSettings

CONF = Path(__file__).resolve().parents[2] / "conf"


def settings(*overrides: str) -> ShardSettings:
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="shards", overrides=["src=/data/in", "out=/data/out", *overrides])
    return ShardSettings.from_mapping(OmegaConf.to_container(cfg, resolve=True))


def test_presets_compose():
    default = settings()
    assert (default.engine, default.workers, default.overwrite, default.list_file) == ("local", None, False, None)
    assert default.prep == PrepConfig()
    sc09 = settings("prep=sc09").prep
    assert (sc09.first_slice, sc09.pad_end, sc09.min_len_policy, sc09.slice_len) == (True, True, "pad", 16384)
    long = settings("prep=long", "prep.slice_len=65536", "engine=ray", "workers=3").prep
    assert (long.overlap, long.drop_silent_db, long.slice_len) == (0.5, -60.0, 65536)
    labels = settings("prep.labels.from=regex", "prep.labels.regex='^(\\w+)-'").prep.labels  # quoted for Hydra
    assert (labels.source, labels.regex) == ("regex", "^(\\w+)-")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("prep.slice_len=1000", "prep.slice_len=1000"),
        ("prep.overlap=1.0", "prep.overlap"),
        ("prep.drop_silent_db=10", "prep.drop_silent_db"),
        ("prep.min_len_policy=trim", "prep.min_len_policy"),
        ("prep.split.valid=0.95", "prep.split"),
        ("prep.labels.from=regex", "prep.labels.regex"),
        ("prep.labels.from=file", "prep.labels.file"),
        ("+prep.slicelen=3", "unknown key prep.slicelen"),
        ("+prep.labels.form=regex", "unknown key prep.labels.form"),
        ("engine=spark", "engine='spark'"),
        ("workers=0", "workers=0"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        settings(override)


def test_a_plain_mapping_is_typed_with_the_yaml_spelling():
    prep = PrepConfig.from_mapping({"slice_len": 32768, "labels": {"from": "folder"}, "split": {"valid": 0.2}})
    assert (prep.slice_len, prep.labels.source, prep.split.valid, prep.split.test) == (32768, "folder", 0.2, 0.1)
    assert prep.to_dict()["labels"] == {"from": "folder", "regex": None, "file": None}
    with pytest.raises(ConfigError, match=r"prep\.first_slice='yes': expected bool"):
        PrepConfig.from_mapping({"first_slice": "yes"})
