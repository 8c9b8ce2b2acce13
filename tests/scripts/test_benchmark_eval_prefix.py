import importlib.util
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prefix_benchmark_measures_the_shared_shots_of_each_protocol(tmp_path, monkeypatch):
    """Keeps the measurement working; it asserts what is reported, never how fast. gsm8k_cot's eight fixed
    exemplars open every prompt; gsm8k's five shots are drawn per problem, so its prompts share only the
    first word or so."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    spec = importlib.util.spec_from_file_location("benchmark_eval_prefix", ROOT / "scripts" / "benchmark_eval_prefix.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.main(["--model", "tiny", "--protocols", "gsm8k_cot", "gsm8k", "--limit", "4", "--batch_size", "2",
                        "--out_dir", str(tmp_path)])
    cot, fewshot = rows["gsm8k_cot"], rows["gsm8k"]
    # gsm8k_cot's first exemplar alone ("Q: There are 15 trees in the grove. ...") is over 60 tokens
    assert 60 < cot["shared_prefix_tokens"] < cot["prompt_tokens_mean"]
    assert 0 < fewshot["shared_prefix_tokens"] < 0.01 * fewshot["prompt_tokens_mean"]  # "Question:", about
    for row in rows.values():
        assert row["passes_timed"] == 1 and 0 < row["prefill_s_per_batch"] < row["evaluation_s_per_batch"]
        assert 0 < row["shared_prefix_share_at_most"] < row["prefill_share"] < 1
    assert json.loads((tmp_path / "eval_prefix_tiny.json").read_text())["rows"] == list(rows.values())
    assert "| gsm8k_cot |" in (tmp_path / "eval_prefix_tiny.md").read_text()
    assert not [p for p in scratch.iterdir() if not p.name.startswith("torchinductor_")]
