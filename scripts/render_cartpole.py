"""A GIF of a trained CartPole policy next to the hand-crafted rule, from the same start state.

    python scripts/train_cartpole.py --config configs/cartpole.yaml        # writes runs/cartpole/policy.pt
    python scripts/render_cartpole.py runs/cartpole                        # writes runs/cartpole/cartpole.gif
    python scripts/render_cartpole.py runs/cartpole --output other/place.gif

Left: the GRPO policy, greedy (argmax). Right: ``action = 1 if angle > 0 else 0``. Each panel shows its
step count; an episode that ends (the pole falls or the cart leaves the track) stays on its last frame.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pipeline.classic.cartpole import episode_states, make_policy
from pipeline.classic.render import write_side_by_side


def load_policy(run_dir: Path) -> torch.nn.Module:
    summary, weights = run_dir / "summary.json", run_dir / "policy.pt"
    if not (summary.is_file() and weights.is_file()):
        raise SystemExit(f"{run_dir}: no summary.json and policy.pt; train first with scripts/train_cartpole.py "
                         f"--output_dir {run_dir}")
    config = json.loads(summary.read_text())["config"]
    policy = make_policy(config["hidden_size"], seed=0)
    policy.load_state_dict(torch.load(weights, weights_only=True))
    return policy.eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("run_dir", type=Path, help="A CartPole run folder (summary.json, policy.pt).")
    parser.add_argument("--output", type=Path, default=None,
                        help="GIF to write (default: cartpole.gif in the run folder).")
    parser.add_argument("--seed", type=int, default=10_000, help="Reset seed of the shared start state.")
    parser.add_argument("--frame_step", type=int, default=4, help="Draw every N-th step (GIF size).")
    args = parser.parse_args(argv)
    if args.output is None:  # inside the run folder: never over a committed figure unless asked
        args.output = args.run_dir / "cartpole.gif"
    policy = load_policy(args.run_dir)
    algorithm = json.loads((args.run_dir / "summary.json").read_text())["config"].get("algorithm", "grpo").upper()
    episodes = [(f"{algorithm} policy (greedy)", episode_states(policy, args.seed)),
                ("hand-crafted rule: push toward the lean", episode_states(None, args.seed))]
    frames = write_side_by_side(args.output, episodes, frame_step=args.frame_step)
    steps = {title: len(states) - 1 for title, states in episodes}
    print(f"{args.output}: {frames} frames; steps survived: " + ", ".join(f"{t} {n}" for t, n in steps.items()))
    return steps


if __name__ == "__main__":
    main()
