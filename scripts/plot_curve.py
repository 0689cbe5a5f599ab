"""Draw a training curve from a run's TensorBoard logs as a PNG (no plotting library needed).

    python scripts/plot_curve.py runs/prior_mnist/logs --tag loss/ddpm --out docs/prior_loss.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def read_scalars(logdir: str, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted(Path(logdir).rglob("events.out.tfevents*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                points[e.step] = e.value  # a resumed run's later file wins
    return sorted(points.items())


def smooth(values: list[float], k: int) -> list[float]:
    out = []
    for i in range(len(values)):
        window = values[max(0, i - k + 1): i + 1]
        out.append(sum(window) / len(window))
    return out


def draw(points: list[tuple[int, float]], out: str, title: str, width: int = 640, height: int = 320) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 60, width - 15, 25, height - 35
    steps = [s for s, _ in points]
    vals = smooth([v for _, v in points], 8)
    lo, hi = math.log10(min(vals)), math.log10(max(vals))
    hi = hi if hi > lo else lo + 1

    def xy(s, v):
        x = left + (s - steps[0]) / max(1, steps[-1] - steps[0]) * (right - left)
        y = bottom - (math.log10(v) - lo) / (hi - lo) * (bottom - top)
        return x, y

    d.rectangle([left, top, right, bottom], outline="black")
    d.line([xy(s, v) for s, v in zip(steps, vals)], fill=(30, 90, 200), width=2)
    for frac in (0, 0.5, 1):
        v = 10 ** (lo + frac * (hi - lo))
        y = bottom - frac * (bottom - top)
        d.text((5, y - 6), f"{v:.3g}", fill="black")
    d.text((left, bottom + 8), f"step {steps[0]}", fill="black")
    d.text((right - 70, bottom + 8), f"step {steps[-1]}", fill="black")
    d.text((left, 5), title + " (log scale, moving average of 8 points)", fill="black")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("logdir")
    p.add_argument("--tag", default="loss/ddpm")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    points = read_scalars(args.logdir, args.tag)
    if not points:
        raise SystemExit(f"error: {args.logdir}: no scalar '{args.tag}'")
    draw(points, args.out, args.tag)
    print(f"{len(points)} points, last {points[-1]} -> {args.out}")


if __name__ == "__main__":
    main()
