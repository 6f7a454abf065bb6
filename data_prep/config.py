"""The schema and typed view of data prep's config: the `prep` group (conf/prep/*.yaml) and conf/shards.yaml.

:class:`PrepConfig` states the prep keys and their defaults (conf/prep/default.yaml only points here; the presets
override some). :func:`register` stores the schemas in Hydra's ConfigStore, so composing conf/shards.yaml checks
every value's type and rejects unknown keys, naming the key; :func:`check` then checks the values (slice lengths,
fractions, label sources). Everything below the entry point works on these dataclasses, so worker processes and Ray
tasks receive small, picklable values and every bad value is reported once, up front, with the key that holds it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigError
from common.typed import config_key, typed

LABEL_SOURCES = ("auto", "sc09", "folder", "regex", "file", "none")
MIN_LEN_POLICIES = ("pad", "skip")
SLICE_LENGTHS = (16384, 32768, 65536)


@dataclass
class LabelConfig:
    """Where clip labels come from (see data_prep.labels for the rules). ``source`` is the key ``prep.labels.from``."""

    source: str = field(default="auto", metadata={"key": "from"})  # auto | sc09 | folder | regex | file | none
    regex: str | None = None  # with from=regex: searched in the file name; group `label`, else group 1, else the match
    file: str | None = None  # with from=file: CSV rows path,label or JSON {path: label}; paths relative to src


@dataclass
class SplitConfig:
    """Fractions of source files hashed (by relative path) into the valid and test splits; the rest is train.
    Ignored for files under top-level train/ valid/ test/ folders."""

    valid: float = 0.1
    test: float = 0.1


@dataclass
class PrepConfig:
    """How every source file becomes fixed-length clips (``prep``)."""

    sample_rate: int = 16000  # Hz; everything is resampled to this rate
    slice_len: int = 16384  # samples per clip: 16384 | 32768 | 65536
    first_slice: bool = False  # only the first slice of each file
    pad_end: bool = False  # keep the last partial slice, zero padded
    overlap: float = 0.0  # fraction of a slice shared by consecutive slices, in [0, 1)
    random_offset: bool = False  # start slicing at a random offset below one hop (seeded per file)
    drop_silent_db: float | None = None  # drop slices whose RMS is below this many dBFS (e.g. -60); None = keep all
    normalize: bool = False  # scale each file so its peak is full scale
    min_len_policy: str = "pad"  # files shorter than one slice: pad (one zero-padded clip) | skip
    split: SplitConfig = field(default_factory=SplitConfig)
    samples_per_shard: int = 2048  # clips per tar shard (the last shard of a split may hold fewer)
    labels: LabelConfig = field(default_factory=LabelConfig)
    seed: int = 0  # file order in shards and random offsets

    @property
    def hop(self) -> int:
        """Distance in samples between the starts of consecutive slices."""
        return max(1, int(round(self.slice_len * (1.0 - self.overlap))))

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping in the YAML spelling (`labels.from`), as recorded in the manifest."""
        out = dataclasses.asdict(self)
        out["labels"]["from"] = out["labels"].pop("source")
        return out

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> PrepConfig:
        """The typed, validated `prep` group from a plain mapping (the YAML spelling)."""
        cfg = typed(cls, raw, "prep")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not isinstance(self.sample_rate, int) or self.sample_rate < 1000:
            raise ConfigError(f"prep.sample_rate={self.sample_rate!r}: expected an integer rate in Hz, e.g. 16000")
        if self.slice_len not in SLICE_LENGTHS:
            raise ConfigError(f"prep.slice_len={self.slice_len!r}: WaveGAN supports {list(SLICE_LENGTHS)}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError(f"prep.overlap={self.overlap!r}: expected a fraction in [0, 1)")
        if self.drop_silent_db is not None and (not math.isfinite(self.drop_silent_db) or self.drop_silent_db >= 0):
            raise ConfigError(
                f"prep.drop_silent_db={self.drop_silent_db!r}: expected a negative dBFS level such as -60, "
                "or null to keep silent slices"
            )
        if self.min_len_policy not in MIN_LEN_POLICIES:
            raise ConfigError(f"prep.min_len_policy={self.min_len_policy!r}: expected one of {list(MIN_LEN_POLICIES)}")
        if not isinstance(self.samples_per_shard, int) or self.samples_per_shard < 1:
            raise ConfigError(f"prep.samples_per_shard={self.samples_per_shard!r}: expected a positive integer")
        valid, test = float(self.split.valid), float(self.split.test)
        if valid < 0 or test < 0 or valid + test >= 1:
            raise ConfigError(f"prep.split valid={valid}, test={test}: each must be >= 0 and together < 1")
        if self.labels.source not in LABEL_SOURCES:
            raise ConfigError(f"prep.labels.from={self.labels.source!r}: expected one of {list(LABEL_SOURCES)}")
        if self.labels.source == "regex" and not self.labels.regex:
            raise ConfigError("prep.labels.from=regex needs prep.labels.regex, e.g. '^([a-z]+)_'")
        if self.labels.source == "file" and not self.labels.file:
            raise ConfigError("prep.labels.from=file needs prep.labels.file: a CSV (path,label) or JSON {path: label}")
        if self.labels.regex:
            try:
                re.compile(self.labels.regex)
            except re.error as exc:
                raise ConfigError(
                    f"prep.labels.regex={self.labels.regex!r} is not a valid regular expression: {exc}"
                ) from exc


# The Hydra schemas. `labels.from` is a Python keyword: the class Hydra sees spells LabelConfig's fields as in YAML
# (its __init__, repr and eq would not compile; Hydra never calls them: typed views are LabelConfig).
_label_fields = dataclasses.fields(LabelConfig)
LabelSchema = dataclass(init=False, repr=False, eq=False)(type("LabelConfig", (), {
    "__annotations__": {config_key(f): typing.get_type_hints(LabelConfig)[f.name] for f in _label_fields},
    **{config_key(f): f.default for f in _label_fields},
}))


@dataclass
class PrepSchema(PrepConfig):
    labels: LabelSchema = field(default_factory=LabelSchema)


@dataclass
class ShardsConfig:
    """conf/shards.yaml's own keys (the values and what they do are there)."""

    src: str
    out: str
    list_file: str | None
    engine: str
    workers: int | None
    overwrite: bool
    progress: bool


@dataclass
class ShardsSchema(ShardsConfig):
    """The whole of conf/shards.yaml: its own keys and the prep group."""

    prep: PrepSchema = field(default_factory=PrepSchema)


def register() -> None:
    """Store the schema in Hydra's ConfigStore (``schema/shards``, with the prep group's); call before composing
    conf/shards.yaml. Storing again replaces them."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="schema", name="shards", node=ShardsSchema)


def check(config: Mapping[str, Any]) -> None:
    """Raise ConfigError naming the key for a composed, resolved conf/shards.yaml that cannot work: keys added
    with ``+``, and values out of range."""
    typed(ShardsConfig, {k: v for k, v in config.items() if k != "prep"}, "")
    PrepConfig.from_mapping(config["prep"])
