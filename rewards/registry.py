"""Name → reward function registry, with ``module:function`` and ``file.py:function`` paths and
entry-point plug-ins.

A reward function has TRL's signature ``fn(prompts, completions, **kwargs) -> list[float | None]``.
A *factory* (registered with ``factory=True``) builds one from options such as the template's tags
or the completion length cap; ``load_reward`` passes it the options it declares.

Where a path is looked for: ``my_rewards:fn`` imports ``my_rewards`` with the current working directory
first on ``sys.path`` (as uvicorn and gunicorn do), so a ``my_rewards.py`` beside where the command runs
is found without PYTHONPATH; ``path/to/file.py:fn`` (a spec naming a ``.py`` file or holding a ``/``)
loads that file, relative to the current working directory.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from rewards.accuracy import accuracy_reward
from rewards.exact import digit_match_reward, exact_match_reward
from rewards.format import make_format_reward, make_hash_format_reward
from rewards.math_verify_reward import math_verify_reward
from rewards.overlong import make_overlong_reward
from rewards.reasoning_gym_reward import reasoning_gym_reward

RewardFunction = Callable[..., list[float | None]]
ENTRY_POINT_GROUP = "grpo_pipeline.rewards"
_FACTORY_MARK = "__grpo_reward_factory__"

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str, *, factory: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers a reward function (or a factory of one) under ``name``.

    >>> @register("always_one")
    ... def always_one(prompts, completions, **kwargs):
    ...     return [1.0] * len(completions)
    >>> load_reward("always_one")(prompts=["p"], completions=["c"])
    [1.0]
    """
    if not name or ":" in name:
        raise ValueError(f"invalid reward name {name!r}: use a non-empty name without ':'")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError(f"register({name!r}) expects a callable, got {type(fn).__name__}")
        if factory:
            setattr(fn, _FACTORY_MARK, True)
        _REGISTRY[name] = fn
        return fn

    return decorator


def registered_names() -> list[str]:
    """Built-in and registered names, then names from installed plug-in packages."""
    plugin_names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(_REGISTRY) + [n for n in plugin_names if n not in _REGISTRY]


def _is_file_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _import_module(spec: str, module_name: str) -> Any:
    """``module_name`` imported with the current working directory first on ``sys.path`` for the import only
    (sys.path is put back after it; the module stays imported)."""
    cwd = os.getcwd()
    was_at = sys.path.index(cwd) if cwd in sys.path else None
    if was_at != 0:
        if was_at is not None:
            del sys.path[was_at]
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as exc:
        missing = getattr(exc, "name", None)
        if isinstance(exc, ModuleNotFoundError) and missing and (module_name + ".").startswith(missing + "."):
            others = [p for p in sys.path if p != cwd and os.path.isdir(p) and not p.startswith(sys.base_prefix)]
            shown = "".join(f"{p}, " for p in others[:3]) + (f"{len(others) - 3} more, " if len(others) > 3 else "")
            where = f"looked in the current folder {cwd}, then sys.path ({shown}the standard library)"
            raise ValueError(f"reward {spec!r}: cannot import module {module_name!r}: {where}; run from the "
                             f"folder holding {module_name.split('.')[0]}.py, or give a file: path/to/file.py:function"
                             ) from exc
        raise ValueError(f"reward {spec!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})"
                         ) from exc
    finally:
        if was_at != 0:
            if cwd in sys.path:  # the first one: ours, even where the module put entries in front of it
                sys.path.remove(cwd)
            if was_at is not None:
                sys.path.insert(was_at, cwd)
    _refuse_shadowed_file(spec, module_name, cwd)
    return module


def _refuse_shadowed_file(spec: str, module_name: str, cwd: str) -> None:
    """A ``<name>.py`` in the current folder that the import did not load (a module of that name, such as this
    project's own ``rewards``, was imported first) is one line naming both, not a puzzling attribute error."""
    top = module_name.split(".")[0]
    local = Path(cwd) / f"{top}.py"
    if not local.is_file():
        return
    imported = getattr(sys.modules.get(top), "__file__", None)
    if imported is not None and os.path.realpath(imported) == os.path.realpath(local):
        return
    attr = spec.rpartition(":")[2]
    by_path = f"{top}.py:{attr}" if top == module_name else "path/to/file.py:function"
    raise ValueError(f"reward {spec!r}: a module named {top!r} is already imported from {imported or 'built-in'} "
                     f"(this project's own or an installed package); rename your file, or give it by path: {by_path}")


def _load_file(spec: str, file_name: str) -> Any:
    """The Python file ``file_name`` (relative to the current working directory) as a module of its own name,
    loaded once per process."""
    path = (Path.cwd() / Path(file_name).expanduser()).resolve()
    if not path.is_file():
        raise ValueError(f"reward {spec!r}: no file {path} (a file path is relative to the current folder "
                         f"{os.getcwd()})")
    module_name = f"_grpo_reward_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    file_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[module_name] = module  # as an import does: dataclasses and pickling look the module up
    try:
        file_spec.loader.exec_module(module)
    except (ImportError, SyntaxError) as exc:
        del sys.modules[module_name]
        raise ValueError(f"reward {spec!r}: cannot load {path} ({type(exc).__name__}: {exc})") from exc
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _import_path(spec: str) -> Callable[..., Any]:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ValueError(f"reward {spec!r}: give 'module:function' or 'path/to/file.py:function'")
    module = _load_file(spec, target) if _is_file_path(target) else _import_module(spec, target)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"reward {spec!r}: {target!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _resolve(spec: str) -> Callable[..., Any]:
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    if ":" in spec:
        return _import_path(spec)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == spec:
            return ep.load()
    raise ValueError(
        f"unknown reward {spec!r}. Valid names: {', '.join(registered_names())}; "
        "or give a 'module:function' path (found from the current folder) or 'path/to/file.py:function', "
        "or install a package exposing it in the "
        f"'{ENTRY_POINT_GROUP}' entry-point group."
    )


def _build_from_factory(spec: str, factory: Callable[..., Any], options: dict[str, Any]) -> RewardFunction:
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in options.items() if accepts_any or k in params}
    missing = [
        n for n, p in params.items()
        if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD and n not in kwargs
    ]
    if missing:
        raise ValueError(f"reward {spec!r} needs option(s) {', '.join(missing)}; set them in the config")
    return factory(**kwargs)


def load_reward(spec: str, **options: Any) -> RewardFunction:
    """Resolve a reward by built-in name, ``module:function`` path or entry-point name.

    Args:
        spec: ``"accuracy"``, ``"my_pkg.rewards:length_reward"`` (imported with the current working
            directory first on ``sys.path``), ``"path/to/file.py:length_reward"`` (relative to the current
            working directory), or a plug-in's entry-point name.
        **options: Options offered to factories (``max_completion_length``,
            ``overlong_buffer_length``, ``reasoning_tag``, ``answer_tag``); each factory takes the
            ones it declares. Plain reward functions ignore them.

    Returns:
        A callable with TRL's reward signature.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"reward name must be a non-empty string, got {spec!r}. Valid names: {', '.join(registered_names())}")
    obj = _resolve(spec.strip())
    if getattr(obj, _FACTORY_MARK, False):
        obj = _build_from_factory(spec, obj, options)
    if not callable(obj):
        raise ValueError(f"reward {spec!r} resolved to a non-callable {type(obj).__name__}")
    return obj


register("accuracy")(accuracy_reward)
register("exact_match")(exact_match_reward)
register("digit_match")(digit_match_reward)
register("math_verify")(math_verify_reward)
register("reasoning_gym")(reasoning_gym_reward)


@register("format", factory=True)
def _format(reasoning_tag: str | None = "reasoning", answer_tag: str | None = "answer") -> RewardFunction:
    if not answer_tag:
        return make_hash_format_reward()
    return make_format_reward(reasoning_tag or None, answer_tag, strict=True)


@register("format_soft", factory=True)
def _format_soft(reasoning_tag: str | None = "reasoning", answer_tag: str | None = "answer") -> RewardFunction:
    if not answer_tag:
        return make_hash_format_reward()
    return make_format_reward(reasoning_tag or None, answer_tag, strict=False)


@register("overlong", factory=True)
def _overlong(max_completion_length: int, overlong_buffer_length: int) -> RewardFunction:
    return make_overlong_reward(max_completion_length, overlong_buffer_length)
