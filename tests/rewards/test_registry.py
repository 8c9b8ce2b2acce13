import sys
import textwrap

import pytest

from rewards import accuracy_reward, load_reward, register, registered_names
from rewards.registry import _REGISTRY


def test_builtins_are_listed():
    assert {"accuracy", "format", "format_soft", "overlong"} <= set(registered_names())
    assert load_reward("accuracy") is accuracy_reward


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        load_reward("acuracy")
    message = str(info.value)
    assert "unknown reward 'acuracy'" in message
    for name in ("accuracy", "format", "format_soft", "overlong"):
        assert name in message


@pytest.mark.parametrize("bad", ["", "  ", None])
def test_empty_name(bad):
    with pytest.raises(ValueError, match="non-empty"):
        load_reward(bad)


def test_register_decorator_and_factory():
    try:

        @register("test_constant", factory=True)
        def constant(value: float = 1.0):
            def reward(prompts, completions, **kwargs):
                return [value] * len(completions)

            return reward

        assert load_reward("test_constant", value=0.25)(prompts=["p"], completions=["c"]) == [0.25]
        assert "test_constant" in registered_names()
    finally:
        _REGISTRY.pop("test_constant", None)


def test_register_rejects_bad_names():
    with pytest.raises(ValueError):
        register("a:b")


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A real importable plug-in package with a real entry point (a dist-info on sys.path)."""
    (tmp_path / "my_rewards_plugin.py").write_text(
        textwrap.dedent(
            """
            def length_reward(prompts, completions, **kwargs):
                return [float(len(c)) for c in completions]
            """
        )
    )
    dist = tmp_path / "my_rewards_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-rewards-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[grpo_pipeline.rewards]\nchar_length = my_rewards_plugin:length_reward\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_rewards_plugin", None)


def test_module_function_path(plugin_dir):
    fn = load_reward("my_rewards_plugin:length_reward")
    assert fn(prompts=["", ""], completions=["ab", "abcd"]) == [2.0, 4.0]


def test_entry_point_plugin(plugin_dir):
    assert "char_length" in registered_names()
    fn = load_reward("char_length")
    assert fn(prompts=[""], completions=["abc"]) == [3.0]


def test_bad_paths_name_the_problem(plugin_dir):
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        load_reward("no_such_module_xyz:fn")
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        load_reward("my_rewards_plugin:missing")
