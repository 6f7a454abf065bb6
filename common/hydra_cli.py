"""Shared helpers of the Hydra entry points (``pipeline.train``, ``pipeline.summary``, ``data_prep.shard``).

``run_hydra(main, config_name, schema=..., help_name=...)`` replaces the usual ``main()`` call under
``if __name__ == "__main__":``. Before Hydra sees the command line it

* registers the config's schemas (``schema.register()``: dataclasses in Hydra's ConfigStore, put under
  each group by the primary config's defaults list), composes the config with the overrides
  (``hydra.compose``: a wrong type or an unknown key fails here), and checks what composition leaves
  open: values still missing (``???``) and the stage's own ``schema.check``;
* instead of Hydra's "Could not override ..." and a stack-trace hint, prints which key or option is
  unknown and the nearest valid ones, or which key holds a value of the wrong type, then exits with
  status 2::

      error: unknown key train.stepz; did you mean train.steps?
      error: unknown preset 'tinyy'; did you mean tiny? options: long, sc09, specgan, tiny
      error: train.steps=abc: Value 'abc' of type 'str' could not be converted to Integer

* recognises the flags of the reference implementation and its ports (``--epochs 10``,
  ``--d_per_g 5``, ``latent_dim=128``) and names our equivalent (docs/cli.md has the table);
* selects the command's own ``--help`` page (conf/hydra/help/<help_name>.yaml).

Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from common.paths import CONF_DIR
from common.reference_cli import DOCS, reference_hint

# Groups of the defaults lists that are not the user's choice: Hydra's own, and the schemas (schema/model@model)
INTERNAL_GROUPS = ("hydra/", "schema/")

_HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                           "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}


class UsageError(Exception):
    """A command line that cannot work; the message says what to write instead."""


class Schema(Protocol):
    """A stage's config schemas (``pipeline.schema``, ``data_prep.config``): ``register`` stores them in Hydra's
    ConfigStore, before any composition; ``check`` raises common.errors.ConfigError, naming the key, for a
    composed, resolved config that its types cannot catch."""

    def register(self) -> None: ...

    def check(self, config: dict) -> None: ...


# ---------------------------------------------------------------------------------------------------------------
# Entry point wrapper


def run_hydra(main: Callable[[], Any], config_name: str, *, schema: Schema, help_name: str | None = None,
              extra_overrides: Sequence[str] = (), argv: Sequence[str] | None = None,
              command: str | None = None, no_multirun: str | None = None) -> Any:
    """Check the command line, then call the ``@hydra.main`` function ``main``.

    ``config_name``: the primary config in conf/ that ``main`` is decorated with; ``schema``: its schemas
    (registered here, so ``main``'s composition sees them too). ``help_name``: the
    ``conf/hydra/help/<help_name>.yaml`` page ``--help`` prints (default: the one named like the
    config, if any; else Hydra's). ``extra_overrides`` go before the user's (who can still override
    them), e.g. ``hydra.output_subdir=null`` for a command that writes nothing. ``command`` names the
    command in messages (default: ``python -m <main's module>``). ``no_multirun``: why the command refuses
    Hydra's ``--multirun`` / ``-m`` (None: it takes it).
    Exits with status 2 and a one-paragraph message on a bad override.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    schema.register()
    try:
        flags, overrides = split_argv(argv)
        if no_multirun and flags.get("multirun"):
            raise UsageError(f"{command or _command_name(main)} does not take --multirun (-m): {no_multirun}")
        if not flags.get("config_path") and not flags.get("config_dir") and not flags.get("shell_completion"):
            showing = any(flags.get(f) for f in ("help", "hydra_help", "cfg", "info"))  # ??? is fine to show
            check_overrides(flags.get("config_name") or config_name, overrides, schema=schema,
                            command=command or _command_name(main), complete=not showing)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    injected = list(extra_overrides)
    if (
        help_name is None
        and (CONF_DIR / "hydra" / "help" / f"{flags.get('config_name') or config_name}.yaml").is_file()
    ):
        help_name = flags.get("config_name") or config_name
    if help_name and flags.get("help"):
        injected.append(f"hydra/help={help_name}")
    # argparse wants the overrides in one run: Hydra flags first, then ours, then the user's overrides
    flag_tokens = list(argv)
    for text in overrides:
        flag_tokens.remove(text)
    sys.argv = [sys.argv[0], *flag_tokens, *injected, *overrides]
    return main()


def _command_name(main: Callable) -> str:
    module = getattr(main, "__module__", "") or ""
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = getattr(spec, "name", "") or ""
    return f"python -m {module}" if module else "this command"


def split_argv(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Hydra's own flags (as parsed by Hydra's parser) and the overrides.

    Raises UsageError for a ``--flag`` Hydra does not know, naming our equivalent when it is a
    flag of the reference CLI.
    """
    from common.private_api import hydra_args_parser as get_args_parser

    parser = get_args_parser()
    known = {s for action in parser._actions for s in action.option_strings}
    problems = []
    skip_next = False
    for i, token in enumerate(argv):
        if skip_next:
            skip_next = False
            continue
        if token in _HYDRA_FLAGS_WITH_VALUE:
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("-") and "=" not in argv[i + 1]
            skip_next = token not in {"--info", "-i"} or has_value  # --info takes an optional value
            continue
        if not token.startswith("-") or token.split("=", 1)[0] in known:
            continue
        if token.startswith("--") or (token.startswith("-") and not token[1:2].isdigit()):
            name, _, value = token.lstrip("-").partition("=")
            # `--epochs 10`: the value belongs to the flag, not an override of its own
            if "=" not in token and i + 1 < len(argv) and not argv[i + 1].startswith("-") and "=" not in argv[i + 1]:
                skip_next, value = True, argv[i + 1]
            problems.append(_flag_message(name, value or None))
    if problems:
        raise UsageError("\n".join(problems) + f"\n(this command takes Hydra overrides key=value; --help lists them, "
                                              f"{DOCS} maps the reference CLI's flags)")
    args = parser.parse_args(list(argv))
    return vars(args), list(args.overrides or [])


def _flag_message(name: str, value: str | None = None) -> str:
    ours = reference_hint(name, value)
    if ours:
        return f"--{name} is a flag of the reference WaveGAN CLI; here write: {ours}"
    hint = difflib.get_close_matches(name, ["help", "hydra-help", "cfg", "resolve", "info", "multirun"], n=1)
    more = f"; did you mean --{hint[0]}?" if hint else ""
    return f"unknown option --{name}{more}"


# ---------------------------------------------------------------------------------------------------------------
# Override checks


def check_overrides(config_name: str, overrides: Sequence[str], *, schema: Schema, command: str = "this command",
                    complete: bool = True) -> None:
    """Raise UsageError, naming the key and the nearest valid keys / options, if ``overrides`` do not compose
    against ``schema``, or (``complete``: the command is to run, not only show its config) if the composed
    config misses a value or fails ``schema.check``."""
    problems = config_problems(config_name, overrides, schema=schema, command=command, complete=complete)
    if problems:
        flag = (lambda f: f'{command} ARGS="{f}"') if command.startswith("make ") else (lambda f: f"{command} {f}")
        raise UsageError("\n".join(problems) + f"\n(show every key and group: {flag('--cfg job')}; "
                                               f"groups and examples: {flag('--help')})")


def config_problems(config_name: str, overrides: Sequence[str], *, schema: Schema, command: str = "this command",
                    complete: bool = True) -> list[str]:
    """What :func:`check_overrides` reports, one message per problem (none: the config composes and checks)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from common.errors import ConfigError

    overrides = list(overrides)
    parsed = _parse(overrides)
    schema.register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="check"):
        try:
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException, ValueError) as exc:
            return _diagnose(config_name, parsed, command) or [_hydra_message(exc)]
    if not complete:
        return []
    with open_dict(cfg):
        del cfg["hydra"]
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        return [f"{key} has no value (???): set it, e.g. {command} {key}=..." for key in missing]
    try:
        schema.check(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as exc:
        return [str(exc)]
    return []


def _hydra_message(failure: Exception) -> str:
    """Hydra's error in a line, naming the key: ``train.steps=abc: Value 'abc' ... converted to Integer``, or
    ``model.phaseshuffle_rad: Key ... not in 'SpecGANModel' (in conf/preset/sc09.yaml)``."""
    from omegaconf.errors import OmegaConfBaseException

    text = str(failure).strip() or type(failure).__name__
    for exc in (failure.__cause__, failure):
        if isinstance(exc, OmegaConfBaseException) and getattr(exc, "full_key", None):
            value = "" if exc.value is None else f"={exc.value}"
            return f"{exc.full_key}{value}: {str(exc.msg).strip().splitlines()[0]}"
    found = re.match(r"In '([^']+)': \w+ raised while composing config:\n(.+)\n\s+full_key: (\S+)", text)
    if found:
        return f"{found[3]}: {found[2]} (in conf/{found[1]}.yaml)"
    cause = failure.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += f"\n{str(cause).strip()}"
    return text


def _parse(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed, problems = [], []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException as exc:
            problems.append(_parse_problem(text, exc))
    if problems:
        raise UsageError("\n".join(problems))
    return parsed


def _parse_problem(text: str, exc: Exception) -> str:
    name = text.lstrip("+~").split("=", 1)[0]
    if "=" not in text and not text.startswith("~"):
        ours = reference_hint(name)
        if ours:
            return f"'{text}' is a mode of the reference WaveGAN CLI; here: {ours}"
        return (
            f"'{text}' is not an override: write key=value (e.g. train.steps=1000) or group=option (e.g. preset=tiny)"
        )
    reason = str(exc).splitlines()[0]
    return (f"cannot parse override '{text}': {reason}. A value with regex or other special characters must "
            f"reach Hydra inside quotes, so quote it twice on the shell: \"prep.labels.regex='^([a-z]+)_'\"; "
            f"with make: ARGS=\"\\\"prep.labels.regex='^([a-z]+)_'\\\"\" (docs/cli.md)")


def _diagnose(config_name: str, parsed: list, command: str) -> list[str]:
    """Messages for each override that names an unknown group, option or key (inside initialize_config_dir)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    loader = GlobalHydra.instance().config_loader()
    base = compose(config_name=config_name, return_hydra_config=True)
    choices = OmegaConf.to_container(base.hydra.runtime.choices)
    app_groups = sorted(g for g in choices if not g.startswith(INTERNAL_GROUPS))
    problems: list[str] = []
    group_overrides: list[str] = []
    key_overrides = []
    for ov in parsed:
        name = ov.key_or_group
        is_group = "/" in name or name in choices or (CONF_DIR / name).is_dir()
        if not is_group:
            key_overrides.append(ov)
            continue
        options = sorted(loader.get_group_options(name))
        if not options:
            problems.append(f"unknown config group {name}" + _nearest_text(name, app_groups, "groups"))
            continue
        if name not in choices and not ov.is_add() and not ov.is_force_add():
            problems.append(f"{name}= is not a config group of {command} (its groups: {', '.join(app_groups)})"
                            + _other_command_hint(name, config_name, str(ov.value())))
            continue
        if ov.is_delete():
            group_overrides.append(ov.input_line)
            continue
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.value()]
        bad = [v for v in values if v is not None and str(v) not in options and str(v) != "null"]
        for value in bad:
            problems.append(f"unknown {name} '{value}'" + (_nearest_text(str(value), options, None) or ";")
                            + f" options: {', '.join(options)}")
        if not bad:
            group_overrides.append(ov.input_line)
    if not key_overrides:
        return problems
    try:
        with_groups = compose(config_name=config_name, overrides=group_overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError):
        return problems  # the group overrides themselves fail: Hydra's message is better than guessing keys
    keys = flatten(OmegaConf.to_container(with_groups, resolve=False))
    now = OmegaConf.to_container(with_groups.hydra.runtime.choices)
    for ov in key_overrides:
        key = ov.key_or_group
        if ov.is_add() or ov.is_force_add() or _known(key, keys):
            continue
        message = f"unknown key {key}"
        elsewhere = _elsewhere(config_name, key, group_overrides, loader, now)
        ours = reference_hint(key, _value_text(ov)) if "." not in key else None
        head = key.split(".", 1)[0]
        if elsewhere:
            message += f" with {head}={now[head]}: it exists with {' / '.join(elsewhere)}"
        elif ours:
            message += f": {key} is a flag of the reference WaveGAN CLI; here write: {ours}"
        else:
            parents = {key.rsplit(".", i)[0] for i in range(1, key.count(".") + 1)}
            pool = sorted(k for k in keys if k.startswith("hydra.") == key.startswith("hydra.") and k not in parents)
            hits = nearest(key, pool, leaf_match=True)
            if hits:
                message += f"; did you mean {' or '.join(hits)}?"
            elif "." in key and head not in keys and (CONF_DIR / head).is_dir():
                message += f" ({head} is not part of {command}'s config{_other_command_hint(head, config_name)})"
            elif "." not in key:
                top = sorted(k for k in keys if "." not in k and k != "hydra")
                message += f"; top-level keys: {', '.join(top)}"
        problems.append(message)
    return problems


def _value_text(ov) -> str | None:
    text = ov.input_line or ""
    return text.partition("=")[2] or None


def _known(key: str, keys: dict[str, str]) -> bool:
    if key in keys:
        return True
    parts = key.split(".")  # an item of a list value (loss.optim.betas.0) is left to Hydra
    return any(keys.get(".".join(parts[:i])) == "list" for i in range(1, len(parts)))


def _elsewhere(config_name: str, key: str, group_overrides: list[str], loader, choices: dict) -> list[str]:
    """['loss=wgan'] when other options of the key's group define the key (loss.clip)."""
    from hydra import compose
    from omegaconf import OmegaConf

    group = key.split(".", 1)[0]
    if group not in choices or "." not in key:
        return []
    found = []
    for option in sorted(loader.get_group_options(group)):
        if option == choices[group]:
            continue
        try:
            cfg = compose(config_name=config_name, overrides=[*group_overrides, f"{group}={option}"])
        except Exception:  # noqa: BLE001 - a hint only
            continue
        if OmegaConf.select(cfg, key, default=None, throw_on_missing=False) is not None or _has(cfg, key):
            found.append(f"{group}={option}")
    return found


def _has(cfg, key: str) -> bool:
    from omegaconf import OmegaConf

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    return node is not None and OmegaConf.is_dict(node) and leaf in node


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Every key path of a plain nested dict -> 'dict' | 'list' | 'value'."""
    out: dict[str, str] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}{k}"
            out[path] = "dict" if isinstance(v, dict) else "list" if isinstance(v, list) else "value"
            if isinstance(v, dict):
                out.update(flatten(v, path + "."))
    return out


def nearest(word: str, candidates: Iterable[str], *, leaf_match: bool = False, n: int = 3) -> list[str]:
    """The candidates closest to ``word`` (difflib), best first. With ``leaf_match``, keys whose last
    part matches the word's last part also count (``lr`` -> ``loss.optim.lr``)."""
    candidates = list(dict.fromkeys(candidates))
    scored: dict[str, float] = {}
    for c in candidates:
        score = difflib.SequenceMatcher(None, word, c).ratio()
        if leaf_match:
            leaf, c_leaf = word.rsplit(".", 1)[-1], c.rsplit(".", 1)[-1]
            leaf_score = difflib.SequenceMatcher(None, leaf, c_leaf).ratio()
            if leaf_score >= 0.8:
                # the same leaf under the typed parent beats the same leaf elsewhere
                score = max(score, 0.6 + 0.3 * leaf_score + (0.05 if c.startswith(word.rsplit(".", 1)[0]) else 0))
        if score >= 0.6:
            scored[c] = score
    ranked = sorted(scored, key=lambda c: (-scored[c], c))
    if not ranked:
        return []
    best = scored[ranked[0]]
    return [c for c in ranked if scored[c] >= best - 0.1][:n]


def _nearest_text(word: str, candidates: Iterable[str], what: str | None, *, leaf_match: bool = False) -> str:
    hits = nearest(word, candidates, leaf_match=leaf_match)
    if hits:
        return f"; did you mean {' or '.join(hits)}?"
    return f"; {what}: {', '.join(sorted(candidates))}" if what else ""


def _other_command_hint(group: str, config_name: str, option: str = "<option>") -> str:
    """Where a group that this command's config does not use belongs."""
    if group == "prep" and config_name != "shards":
        return f'; prep configures data prep: make shards SRC=... OUT=... ARGS="prep={option}"'
    if config_name == "shards":
        return f'; {group} configures training: make train ARGS="{group}..."'
    return f"; to add the group to this config: +{group}={option}"


# ---------------------------------------------------------------------------------------------------------------
# --help


def groups_help() -> str:
    """The config groups of the running command, their options and the current choice (for --help pages)."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices
    groups = sorted(g for g in choices if not g.startswith(INTERNAL_GROUPS))
    options = {g: ", ".join(sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml"))) for g in groups}
    width = max([38, *(len(o) for o in options.values())])
    lines = []
    for group in groups:
        current = "null" if choices[group] is None else choices[group]
        lines.append(f"  {group + '=':<11} {options[group]:<{width}} (now: {current})")
    return "\n".join(lines)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("cli_groups"):
        OmegaConf.register_new_resolver("cli_groups", groups_help, use_cache=False)


_register_resolvers()
