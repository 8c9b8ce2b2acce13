"""Every script with its own argparse parser refuses a prefix of an option (--out for --output_dir) rather than
guessing it (argparse's allow_abbrev): a cut name must not set an option. Each prefix is given a value the full
option would refuse (or none), so even a parser that guessed fails at once, before any work."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PREFIXES = {
    "benchmark.py": ["--ste", "x"],
    "benchmark_eval_prefix.py": ["--lim", "x"],
    "benchmark_sampling.py": ["--repe", "x"],
    "crosscheck_trl.py": ["--ste", "x"],
    "demo_toy.py": ["--max", "x"],
    "gpu_smoke.py": ["--work"],
    "plot_run.py": ["--teach"],
    "render_cartpole.py": ["run", "--frame", "x"],
    "report.py": ["sft", "grpo", "--cont"],
    "sweep.py": ["script.py", "--grid", "seed=1", "--metric", "m", "--work", "x"],
}


def test_every_script_with_its_own_parser_is_checked():
    own = {p.name for p in (ROOT / "scripts").glob("*.py") if "ArgumentParser(" in p.read_text()}
    assert own == set(PREFIXES)


@pytest.mark.parametrize("script", sorted(PREFIXES))
def test_a_prefix_of_an_option_is_refused(script):
    args = PREFIXES[script]
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    prefix = next(a for a in args if a.startswith("--") and a not in ("--grid", "--metric"))
    assert re.search(rf"unrecognized arguments: .*{prefix}\b", done.stderr), done.stderr[-1500:]
