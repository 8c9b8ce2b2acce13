"""Print the base → SFT → GRPO table of a pipeline run from its run folders (and a control run's row).

    python scripts/report.py runs/sft_smollm2_cpu runs/grpo_smollm2_cpu
    python scripts/report.py runs/chain_sum/sft runs/chain_sum/grpo --control runs/chain_sum/grpo_negated
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.evaluation.evaluate import format_comparison


def rows(sft_dir: Path, grpo_dir: Path, control_dir: Path | None = None) -> list[tuple[str, dict]]:
    sft = json.loads((sft_dir / "sft_summary.json").read_text())
    grpo = json.loads((grpo_dir / "grpo_summary.json").read_text())
    found = [("base", sft.get("before")), ("after SFT", sft.get("after")), ("after GRPO", grpo.get("eval_after"))]
    if control_dir is not None:
        control = json.loads((control_dir / "grpo_summary.json").read_text())
        found.append(("GRPO, reward negated", control.get("eval_after")))
    return [(name, result) for name, result in found if result]


def format_report(table: list[tuple[str, dict]]) -> str:
    n, where = table[-1][1]["num_problems"], table[-1][1].get("split", "held-out problems")
    title = f"pass@1 (greedy) on {where}: first {n} problems; 95% Wilson intervals in brackets"
    names = [name for name, _ in table]
    if "GRPO, reward negated" not in names:
        return format_comparison(title, table)
    # the control is measured against the SFT model both GRPO runs start from
    start = names.index("after SFT")
    compare_to = [None if i == 0 else (start if name.startswith("GRPO") else i - 1) for i, name in enumerate(names)]
    return format_comparison(title, table, compare_to)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("sft_dir", type=Path, help="SFT run folder (holds sft_summary.json).")
    parser.add_argument("grpo_dir", type=Path, help="GRPO run folder (holds grpo_summary.json).")
    parser.add_argument("--control", type=Path, default=None,
                        help="A control GRPO run from the same SFT model (e.g. the reward negated): one more row.")
    args = parser.parse_args(argv)
    for folder in [args.sft_dir, args.grpo_dir] + ([args.control] if args.control else []):
        if not folder.is_dir():
            parser.exit(2, f"error: {folder}: no such run folder; run the stage first\n")
    report = format_report(rows(args.sft_dir, args.grpo_dir, args.control))
    print(report)
    return report


if __name__ == "__main__":
    main()
