"""The README and docs say what the code does: its walk-through runs as written (on the tiny model), and its lists
of templates, rewards and options match the code."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.data.templates import TEMPLATES
from pipeline.grpo.config import GRPOArguments

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EMBEDDED = "embedded:SmolLM2-135M-Instruct"
HISTORY = re.compile(r"\b(this|last|next) round\b|\bround [0-9]\b|\bissue [0-9]+|\bitem [0-9]\b|\bsession\b|"
                     r"\bclean clone of [0-9a-f]{7}|\bcommit [0-9a-f]{7}", re.I)


def section(text: str, heading: str) -> str:
    """The text under a ``## heading``, up to the next heading of that level."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def table_names(text: str, heading: str) -> set[str]:
    """The backticked names in the first column of the table under ``## heading``."""
    return set(re.findall(r"^\| `([^`]+)` \|", section(text, heading), flags=re.M))


def workspace(tmp_path: Path) -> Path:
    """A folder to run the README's commands in, as from the repository: its scripts and venv, nothing else."""
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


@pytest.mark.slow
def test_the_walk_through_runs_as_written_on_the_command_line(tiny_model_dir, tmp_path):
    (commands,) = fenced(section(README, "Your own task"), "bash")
    assert commands.count(f"MODEL={EMBEDDED}\n") == 1  # the one line the test changes
    script = commands.replace(f"MODEL={EMBEDDED}\n", f"MODEL={tiny_model_dir}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "2"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workspace(tmp_path), env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("sft", "grpo"):
        assert (tmp_path / "runs" / "capitals" / stage / "merged" / "config.json").is_file()
    summary = (tmp_path / "runs" / "capitals" / "eval" / "summary.json").read_text()
    assert '"num_problems": 3' in summary and '"answer_match": "text"' in summary  # all 3 rows, as text


@pytest.mark.slow
def test_the_walk_through_runs_as_written_from_python(tiny_model_dir, tmp_path):
    (program,) = fenced(section(README, "Your own task"), "python")
    assert program.count(f'"{EMBEDDED}"') == 1
    program = program.replace(f'"{EMBEDDED}"', repr(str(tiny_model_dir)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", program], cwd=workspace(tmp_path), env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "capitals_py" / "grpo" / "merged" / "config.json").is_file()


def test_the_docs_list_every_template_and_reward_the_code_has():
    data_doc = (ROOT / "docs" / "data_and_rewards.md").read_text()
    assert table_names(data_doc, "Prompt templates") == set(TEMPLATES) | {"auto"}
    listed = subprocess.run([sys.executable, "-c", "from rewards import registered_names; print(*registered_names())"],
                            capture_output=True, text=True, check=True).stdout.split()  # a fresh process: the
    assert table_names(data_doc, "Built-in rewards") == set(listed)  # tests' own registrations are not built in


def test_the_options_the_readme_names_exist():
    """Every option in the README's "Coming from TRL" table is ours, an alias of ours, or one we refuse."""
    ours = {f.name for dtype in (GRPOArguments, ModelArguments, DataArguments) for f in dataclasses.fields(dtype)}
    aliases = {a.removeprefix("--") for f in dataclasses.fields(GRPOArguments) for a in f.metadata.get("aliases", ())}
    refused = set(GRPOArguments.foreign_options)
    named = set(re.findall(r"`([a-z_]+)`", section(README, "Coming from TRL").split("\n\n")[1]))
    assert named and named <= ours | aliases | refused, named - ours - aliases - refused
    assert {"beta", "learning_rate", "num_generations", "max_prompt_length"} <= named


def test_readme_and_docs_say_what_is_not_how_it_got_there():
    assert len(README.splitlines()) <= 210
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        hits = [m.group(0) for m in HISTORY.finditer(path.read_text())]
        assert not hits, f"{path.name}: {hits}"
