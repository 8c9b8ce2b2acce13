"""Print the base → SFT → GRPO GSM8K table of a pipeline run from its run folders.

    python scripts/report.py runs/sft_smollm2_cpu runs/grpo_smollm2_cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.evaluate import format_comparison


def rows(sft_dir: Path, grpo_dir: Path) -> list[tuple[str, dict]]:
    sft = json.loads((sft_dir / "sft_summary.json").read_text())
    grpo = json.loads((grpo_dir / "grpo_summary.json").read_text())
    found = [("base", sft.get("before")), ("after SFT", sft.get("after")), ("after GRPO", grpo.get("eval_after"))]
    return [(name, result) for name, result in found if result]


def format_report(table: list[tuple[str, dict]]) -> str:
    n = table[-1][1]["num_problems"]
    return format_comparison(f"GSM8K test pass@1 (greedy), first {n} problems; 95% Wilson intervals in brackets", table)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sft_dir", type=Path, help="SFT run folder (holds sft_summary.json).")
    parser.add_argument("grpo_dir", type=Path, help="GRPO run folder (holds grpo_summary.json).")
    args = parser.parse_args(argv)
    report = format_report(rows(args.sft_dir, args.grpo_dir))
    print(report)
    return report


if __name__ == "__main__":
    main()
