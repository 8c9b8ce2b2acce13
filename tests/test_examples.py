"""examples/own_task.ipynb: the same cells as examples/own_task.py, and it runs from top to bottom (on the tiny
model, a few steps, in place of the embedded model's minutes), drawing its figure."""

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SCRIPT, NOTEBOOK = ROOT / "examples" / "own_task.py", ROOT / "examples" / "own_task.ipynb"


def script_cells(text: str) -> list[tuple[str, str]]:
    """(kind, source) of each ``# %%`` cell of a percent-format script; markdown cells lose their ``# ``."""
    cells = []
    for block in re.split(r"^# %%", text, flags=re.M)[1:]:
        header, _, body = block.partition("\n")
        if "[markdown]" in header:
            cells.append(("markdown", "\n".join(line[2:] for line in body.strip().splitlines())))
        else:
            cells.append(("code", body.strip()))
    return cells


def test_the_notebook_holds_the_scripts_cells():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert [(c.cell_type, c.source.strip()) for c in notebook.cells] == script_cells(SCRIPT.read_text())
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in notebook.cells if c.cell_type == "code" for o in c.outputs)  # it ships with its figure


@pytest.mark.slow
def test_the_notebook_runs_from_top_to_bottom(tiny_model_dir, tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = (f"MODEL = {str(tiny_model_dir)!r}\nOUT = {str(tmp_path / 'run')!r}\n"
                         "SFT_STEPS = 2\nGRPO_STEPS = 1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
    summary = json.loads((tmp_path / "run" / "grpo" / "grpo_summary.json").read_text())
    assert summary["steps"] == 1 and "eval_after" in summary
    assert (tmp_path / "run" / "grpo" / "merged" / "config.json").is_file()
