"""Typed, validated view of the `prep` config group (conf/prep/*.yaml).

Hydra hands us a DictConfig; everything below the entry point works on these
frozen dataclasses so worker processes and Ray tasks receive small, picklable
values and every bad value is reported once, up front, with the key that holds it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigError

LABEL_SOURCES = ("auto", "sc09", "folder", "regex", "file", "none")
MIN_LEN_POLICIES = ("pad", "skip")
SLICE_LENGTHS = (16384, 32768, 65536)


@dataclass(frozen=True)
class LabelConfig:
    """Where clip labels come from (see data_prep.labels for the rules)."""

    source: str = "auto"
    regex: str | None = None
    file: str | None = None


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of source files hashed into the valid and test splits."""

    valid: float = 0.1
    test: float = 0.1


@dataclass(frozen=True)
class PrepConfig:
    """How every source file becomes fixed-length clips."""

    sample_rate: int = 16000
    slice_len: int = 16384
    first_slice: bool = False
    pad_end: bool = False
    overlap: float = 0.0
    random_offset: bool = False
    drop_silent_db: float | None = None
    normalize: bool = False
    min_len_policy: str = "pad"
    split: SplitConfig = field(default_factory=SplitConfig)
    samples_per_shard: int = 2048
    labels: LabelConfig = field(default_factory=LabelConfig)
    seed: int = 0

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
        """Build and validate from the `prep` mapping (plain dict or DictConfig)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown prep key(s) {unknown}; valid keys are {sorted(known)}")
        values = dict(raw)
        labels = values.pop("labels", None) or {}
        split = values.pop("split", None) or {}
        labels = dict(labels)
        if "from" in labels:  # YAML spelling: `labels: {from: auto}`
            labels["source"] = labels.pop("from")
        _reject_unknown("prep.labels", labels, {"source", "regex", "file"})
        _reject_unknown("prep.split", split, {"valid", "test"})
        cfg = cls(**values, labels=LabelConfig(**labels), split=SplitConfig(**split))
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


def _reject_unknown(where: str, values: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {unknown}; valid keys are {sorted(known)}")
