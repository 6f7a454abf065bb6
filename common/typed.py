"""Typed views of plain config dicts: a dataclass built from a section, every value checked against its field's type.

Hydra checks the composed config against the same dataclasses (registered in its ConfigStore by each stage's
``register``), so a bad command line fails at composition. What travels afterwards is the resolved plain dict
(to Ray workers, into checkpoints' state.json, MLflow params, registered models), and it is read back here, in
plain Python: the GPU benchmark machines run the training step with torch alone, without omegaconf.

A field's config key is its name, or ``field(metadata={"key": ...})`` where the YAML spelling is a Python keyword
(``prep.labels.from``). Supported annotations: int, float, str, bool, Any, ``X | None``, ``list[X]``,
``dict[str, X]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from common.errors import ConfigError

T = TypeVar("T")


def config_key(f: dataclasses.Field) -> str:
    """The key that holds ``f`` in the config (its name unless the metadata says otherwise)."""
    return f.metadata.get("key", f.name)


def typed(cls: type[T], section: Any, where: str, *, strict: bool = True) -> T:
    """``cls`` built from ``section``, the config at ``where`` (e.g. ``train``; "" for the root).

    ``strict``: a key ``cls`` does not declare is an error; otherwise a view reads only its own keys. A field
    without a default must be present. Raises ConfigError naming the key and what it holds."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}={section!r}: expected a mapping of {_keys(cls)}")
    hints = typing.get_type_hints(cls)
    fields = {config_key(f): f for f in dataclasses.fields(cls) if f.init}
    if strict:
        unknown = sorted(set(section) - set(fields))
        if unknown:
            raise ConfigError(f"unknown key {_join(where, unknown[0])}: {where or 'the config'} holds {_keys(cls)}")
    values = {}
    for key, f in fields.items():
        if key not in section:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                home = f"conf/{where.split('.')[0]}/" if where else "conf/"
                raise ConfigError(f"{_join(where, key)} is missing from the config: {home} states it; compose the "
                                  f"config through Hydra (the commands do), or set {_join(where, key)}")
            continue
        values[f.name] = _value(hints[f.name], section[key], _join(where, key), strict)
    return cls(**values)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _keys(cls: type) -> str:
    return ", ".join(config_key(f) for f in dataclasses.fields(cls))


def _value(tp: Any, value: Any, where: str, strict: bool) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _value(inner[0], value, where, strict)
        raise TypeError(f"{where}: only X | None unions are supported")
    if dataclasses.is_dataclass(tp):
        return typed(tp, value, where, strict=strict)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r}: expected a list, e.g. [1, 2]")
        return [_value(args[0], v, f"{where}[{i}]", strict) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}={value!r}: expected a mapping, e.g. {{key: value}}")
        return {k: _value(args[1], v, f"{where}.{k}", strict) for k, v in value.items()}
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:
        raise TypeError(f"{where}: unsupported annotation {tp!r}")
    if not ok:
        raise ConfigError(f"{where}={value!r}: expected {'a number' if tp is float else tp.__name__}")
    return float(value) if tp is float else value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: a config as dotted keys (MLflow params, config comparisons)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
