"""Animated CartPole episodes, drawn from the environment's state with Pillow (no display, no pygame).

Two panels side by side, from the same start state: the trained policy (greedy) and the hand-crafted
rule, each with its step count; a panel whose pole has fallen stays on its last frame, marked.
"""

from __future__ import annotations

from pathlib import Path

PANEL_W, PANEL_H = 360, 220
X_LIMIT = 2.4  # CartPole ends when the cart leaves [-2.4, 2.4]
POLE_PIXELS = 90


def draw_panel(state: list[float], title: str, step: int, ended: bool):
    """One panel: track, cart, pole at the state's angle, and the caption."""
    import math

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (PANEL_W, PANEL_H), "white")
    draw = ImageDraw.Draw(image)
    ground = PANEL_H - 50
    draw.line([(10, ground), (PANEL_W - 10, ground)], fill="black", width=2)
    x, _, theta, _ = state
    cx = PANEL_W / 2 + x / X_LIMIT * (PANEL_W / 2 - 30)
    draw.rectangle([cx - 25, ground - 25, cx + 25, ground - 5], fill=(60, 60, 160))
    tip = (cx + POLE_PIXELS * math.sin(theta), ground - 25 - POLE_PIXELS * math.cos(theta))
    draw.line([(cx, ground - 25), tip], fill=(200, 120, 40), width=8)
    draw.text((10, 8), title, fill="black")
    caption = f"step {step}" + ("  (episode over)" if ended else "")
    draw.text((10, PANEL_H - 35), caption, fill=(180, 0, 0) if ended else "black")
    return image


def write_side_by_side(path: Path, episodes: list[tuple[str, list[list[float]]]], frame_step: int = 2,
                       frame_ms: int = 40) -> int:
    """A GIF of the episodes side by side, every ``frame_step``-th step; returns the number of frames."""
    from PIL import Image

    longest = max(len(states) for _, states in episodes)
    steps = list(range(0, longest, frame_step))
    if steps[-1] != longest - 1:
        steps.append(longest - 1)  # always show the last state
    frames = []
    for t in steps:
        frame = Image.new("RGB", (PANEL_W * len(episodes), PANEL_H), "white")
        for i, (title, states) in enumerate(episodes):
            shown = min(t, len(states) - 1)
            frame.paste(draw_panel(states[shown], title, shown, ended=t >= len(states) - 1), (PANEL_W * i, 0))
        frames.append(frame)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, optimize=True)
    return len(frames)
