"""The Makefile's set-up, read with make's dry run (nothing is installed)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def torch_install_line(*variables: str) -> list[str]:
    commands = subprocess.run(["make", "-n", "-B", ".venv/.installed", *variables], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.splitlines()
    (line,) = [c for c in commands if "pip install torch" in c]
    return line.split()


@pytest.mark.parametrize("variables, index", [((), None),
                                              (("TORCH_INDEX=https://download.pytorch.org/whl/cpu",),
                                               "https://download.pytorch.org/whl/cpu")])
def test_torch_is_pinned_and_takes_pytorchs_cpu_index_when_asked(variables, index):
    words = torch_install_line(*variables)
    assert "torch==2.13.0" in words
    assert (words[words.index("--index-url") + 1] if "--index-url" in words else None) == index
