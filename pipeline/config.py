"""TRL-style dataclass configs: a YAML file (``--config``) plus command-line overrides.

Every field has one help text (shown by ``--help``); values are checked in ``__post_init__`` so a
bad value fails in a second, naming the option, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml


class BadInput(Exception):
    """Input the user can fix (an option, a data row, a model path); entry scripts report it in one line."""


class ConfigError(BadInput, ValueError):
    """A config value or file that cannot be used; the message names the option or file."""


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, Sequence):
        (item_type,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item_type) for v in value)
    if annotation is Any:
        return True
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


class ValidatedConfig:
    """Mixin: checks every field's type and ``choices`` after construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            members = _union_members(hints[f.name])
            if _is_int(value) and float in members and int not in members:
                value = float(value)  # YAML reads "1" as an int where the option is a float
                setattr(self, f.name, value)
            if not _type_ok(value, hints[f.name]):
                raise ConfigError(
                    f"option --{f.name}: expected {_type_name(hints[f.name])}, got {value!r} ({type(value).__name__})"
                )
            choices = f.metadata.get("choices")
            if choices is not None and value is not None and value not in choices:  # None: an optional's default
                raise ConfigError(f"option --{f.name}: {value!r} is not one of {', '.join(map(str, choices))}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _union_members(annotation: Any) -> set[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation))
    return {annotation}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def require(condition: bool, option: str, message: str) -> None:
    """Raise a ConfigError naming ``--option`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"option --{option}: {message}")


def _load_yaml(path: str) -> dict[str, Any]:
    config_path = Path(path)
    if not config_path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping of option: value")
    return data


def build_parser(dataclass_types: Sequence[type], description: str | None = None):
    from transformers import HfArgumentParser

    class SharedOptionParser(HfArgumentParser):
        """An option that several groups define (output_dir, seed, ...) is one option setting all of them;
        the first group that defines it gives its default and help."""

        def _parse_dataclass_field(self, parser, field):
            if any(action.dest == field.name for action in self._actions):
                return
            HfArgumentParser._parse_dataclass_field(parser, field)

    # allow_abbrev=False: a prefix (--lim for --limit) is an unknown option, not a silent guess
    parser = SharedOptionParser(list(dataclass_types), description=description, allow_abbrev=False)
    parser.add_argument(
        "--config", default=None, help="YAML file of option: value pairs; command-line options override it."
    )

    def error(message: str) -> typing.NoReturn:
        raise ConfigError(message)

    parser.error = error  # a ConfigError, not argparse's usage dump and exit, so callers decide
    return parser


def parse_config(dataclass_types: Sequence[type], args: Sequence[str] | None = None, description: str | None = None):
    """Parse ``--config FILE`` and CLI overrides into one instance per dataclass.

    Raises:
        ConfigError: for an unknown key (with the closest valid name), a wrong type or value.
    """
    parser = build_parser(dataclass_types, description)
    args = list(sys.argv[1:] if args is None else args)
    config_path = None
    for index, arg in enumerate(args):
        if arg == "--config":
            if index + 1 >= len(args):
                raise ConfigError("--config needs a YAML file path")
            config_path = args[index + 1]
            del args[index : index + 2]
            break
        if arg.startswith("--config="):  # the one-word form argparse allows too
            config_path = arg.split("=", 1)[1]
            del args[index]
            break
    _refuse_foreign_options(dataclass_types, [a.split("=", 1)[0][2:] for a in args if a.startswith("--")], None)
    if config_path is not None:
        values = _load_yaml(config_path)
        _refuse_foreign_options(dataclass_types, list(values), config_path)
        known: dict[str, list] = {}
        for action in parser._actions:
            known.setdefault(action.dest, []).append(action)
        for alias, name in _field_aliases(dataclass_types).items():  # TRL's name for an option works in YAML too
            known.setdefault(alias, []).extend(known.get(name, []))
        for key, value in values.items():
            if key not in known or key in ("help", "config"):
                close = closest_name(str(key), known)
                hint = f"; did you mean {close!r}?" if close else "; see --help for the valid options"
                raise ConfigError(f"{config_path}: unknown option {key!r}{hint}")
            # A bool option that defaults to True has a second action (--no_<name>) with the same
            # destination; argparse takes the first action's default, so every one must be set.
            for action in known[key]:
                action.default = value
                action.required = False
    namespace, unknown = parser.parse_known_args(args)
    if unknown:
        close = _closest_option(parser, unknown)
        hint = f"; did you mean '--{close}'?" if close else "; see --help"
        raise ConfigError(f"unknown command-line argument(s): {' '.join(unknown)}{hint}")
    outputs = []
    for dtype in dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            outputs.append(dtype(**{k: v for k, v in vars(namespace).items() if k in names}))
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
    return tuple(outputs)


def _closest_option(parser, unknown: list[str]) -> str | None:
    """The known option (aliases included) closest to the first unknown ``--name`` that has one, without dashes."""
    def name(option: str) -> str:  # --max-steps and --max_steps are one name
        return option.split("=", 1)[0].lstrip("-").replace("-", "_")

    known = sorted({name(o) for action in parser._actions for o in action.option_strings
                    if o.startswith("--") and o != "--help"})
    matches = (closest_name(name(a), known) for a in unknown if a.startswith("--"))
    return next((m for m in matches if m), None)


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt one, or None: the one "did you mean" of YAML keys, command-line
    options and the Python entry's keyword options. The cutoff is 0.7, above difflib's 0.6, so a name sharing
    only a suffix is no suggestion.

    >>> closest_name("max_step", ["max_steps", "seed"])
    'max_steps'
    >>> closest_name("q_size", ["batch_size"]) is None
    True
    """
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
    return close[0] if close else None


def _field_aliases(dataclass_types: Sequence[type]) -> dict[str, str]:
    """Each field's other names (``field_with_help(..., aliases=...)``), without dashes: alias -> field name."""
    return {alias.removeprefix("--"): f.name for dtype in dataclass_types for f in dataclasses.fields(dtype)
            for alias in f.metadata.get("aliases", ())}


def _refuse_foreign_options(dataclass_types: Sequence[type], names: list[str], config_path: str | None) -> None:
    """One line for an option another library (TRL) has under a name that means something else here, naming
    ours: a config written for that library must not half-work."""
    for dtype in dataclass_types:
        for name in names:
            meaning = getattr(dtype, "foreign_options", {}).get(str(name))
            if meaning is not None:
                where = f"{config_path}: option {name!r}" if config_path else f"option --{name}"
                raise ConfigError(f"{where} is TRL's, not this project's: {meaning}")


def parse_or_exit(dataclass_types: Sequence[type], args: Sequence[str] | None = None, description: str | None = None):
    """``parse_config`` for entry scripts: a bad config prints one line and exits with status 2."""
    try:
        return parse_config(dataclass_types, args, description)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_script(main: Callable[..., Any], dataclass_types: Sequence[type], description: str | None = None) -> Any:
    """An entry script's body: parse its config, then ``main(*configs)``; bad input of any kind (an option, a
    data row, a model path) prints one line ``error: ...`` and exits with status 2, before any weights load
    where the script checks its inputs first."""
    configs = parse_or_exit(dataclass_types, description=description)
    try:
        return main(*configs)
    except BadInput as bad:
        print(f"error: {bad}", file=sys.stderr)
        raise SystemExit(2) from None


def field_with_help(default: Any, help: str, *, choices: Sequence[Any] | None = None,
                    aliases: Sequence[str] = (), **kwargs: Any) -> Any:
    """A dataclass field with its help text (and allowed values, and other names such as TRL's, given without
    dashes) in the metadata HfArgumentParser reads."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = list(choices)
    if aliases:
        metadata["aliases"] = [f"--{alias}" for alias in aliases]
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def configs_from_options(dataclass_types: Sequence[type], options: dict[str, Any], where: str = "option"):
    """One instance per dataclass from keyword options (the Python entry's), with the command line's checks: an
    unknown name gets the closest valid one, another library's name gets its meaning here, values are validated.
    A name that several dataclasses have (output_dir, seed) sets all of them."""
    _refuse_foreign_options(dataclass_types, list(options), None)
    aliases = _field_aliases(dataclass_types)
    options = {aliases.get(key, key): value for key, value in options.items()}
    known = {f.name for dtype in dataclass_types for f in dataclasses.fields(dtype) if f.init}
    for key in options:
        if key not in known:
            close = closest_name(key, known | set(aliases))
            raise ConfigError(f"{where} {key!r} is unknown{f'; did you mean {close!r}?' if close else ''}")
    outputs = []
    for dtype in dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            outputs.append(dtype(**{k: v for k, v in options.items() if k in names}))
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
    return tuple(outputs)
