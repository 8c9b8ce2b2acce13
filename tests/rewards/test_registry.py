import os
import subprocess
import sys
import textwrap
from pathlib import Path

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


LENGTH_REWARD = "def fn(prompts, completions, **kwargs):\n    return [float(len(c)) for c in completions]\n"


@pytest.fixture
def in_folder(tmp_path, monkeypatch):
    """tmp_path as the current folder, with sys.path and sys.modules put back after the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    yield tmp_path
    for name in [n for n in sys.modules if n == "my_rewards" or n.startswith("_grpo_reward_")]:
        del sys.modules[name]


def test_a_module_in_the_current_folder_is_found(in_folder):
    (in_folder / "my_rewards.py").write_text(LENGTH_REWARD)
    assert load_reward("my_rewards:fn")(prompts=["", ""], completions=["ab", "abcd"]) == [2.0, 4.0]


def test_a_file_path_relative_to_the_current_folder(in_folder):
    (in_folder / "sub").mkdir()
    (in_folder / "sub" / "file.py").write_text(LENGTH_REWARD)
    assert load_reward("sub/file.py:fn")(prompts=[""], completions=["abc"]) == [3.0]
    assert load_reward(f"{in_folder / 'sub' / 'file.py'}:fn")(prompts=[""], completions=["ab"]) == [2.0]


def test_a_missing_module_or_file_says_where_it_looked(in_folder):
    with pytest.raises(ValueError) as info:
        load_reward("no_such_rewards_xyz:fn")
    assert f"looked in the current folder {in_folder}" in str(info.value)
    with pytest.raises(ValueError) as info:
        load_reward("sub/none.py:fn")
    assert f"no file {in_folder / 'sub' / 'none.py'}" in str(info.value)


def test_train_grpo_imports_a_reward_module_from_the_folder_it_runs_in(tmp_path, tiny_model_dir, mini_gsm8k):
    """python scripts/train_grpo.py --reward_funcs my_rewards:fn, run where my_rewards.py is and without
    PYTHONPATH: the module is imported (its reward's required column is checked against the data, one line),
    before any weights load."""
    (tmp_path / "my_rewards.py").write_text("def fn(prompts, completions, cwd_marker, **kwargs):\n    return []\n")
    script = Path(__file__).resolve().parents[2] / "scripts" / "train_grpo.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(script), "--model_name_or_path", str(tiny_model_dir),
                           "--dataset_name", str(mini_gsm8k), "--grpo_holdout_size", "4", "--output_dir",
                           str(tmp_path / "run"), "--max_steps", "1", "--reward_funcs", "my_rewards:fn"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "error: option --reward_funcs: my_rewards:fn needs the column 'cwd_marker'"), done.stderr[-2000:]
    assert "Loading weights" not in done.stderr


def test_a_module_import_leaves_sys_path_as_it_was(in_folder):
    (in_folder / "my_rewards.py").write_text(LENGTH_REWARD)
    before = list(sys.path)
    assert load_reward("my_rewards:fn")(prompts=[""], completions=["abc"]) == [3.0]
    assert sys.path == before
    with pytest.raises(ValueError, match="cannot import module 'no_such_rewards_xyz'"):
        load_reward("no_such_rewards_xyz:fn")
    assert sys.path == before


def test_the_current_folder_is_first_even_when_already_on_sys_path(in_folder):
    """An editable install run from the repo root has the folder on sys.path, but not first."""
    (in_folder / "my_rewards.py").write_text(LENGTH_REWARD)
    other = in_folder / "other"
    other.mkdir()
    (other / "my_rewards.py").write_text(LENGTH_REWARD.replace("float(len(c))", "-1.0"))
    sys.path[:0] = [str(other), str(in_folder)]
    before = list(sys.path)
    assert load_reward("my_rewards:fn")(prompts=[""], completions=["abc"]) == [3.0]
    assert sys.path == before


def test_a_local_file_shadowed_by_an_imported_package_says_so(in_folder):
    """A user's rewards.py: `rewards` is this project's own package, already imported."""
    (in_folder / "rewards.py").write_text("def exact(prompts, completions, **kwargs):\n    return [1.0]\n")
    before = list(sys.path)
    with pytest.raises(ValueError) as info:
        load_reward("rewards:exact")
    message = str(info.value)
    assert message.startswith("reward 'rewards:exact': a module named 'rewards' is already imported from ")
    assert message.endswith("(this project's own or an installed package); rename your file, or give it by path: "
                            "rewards.py:exact") and "\n" not in message
    assert str(in_folder / "rewards.py") not in message
    assert sys.path == before
    assert load_reward("rewards.py:exact")(prompts=[""], completions=["x"]) == [1.0]
