"""Measure a diffusion prior on the embedded default: draw samples, let the digit classifier
label them, and report mean confidence and the class histogram (a collapsed or noisy prior
shows up there), plus a grid of samples. Writes a JSON and a PNG and prints a Markdown table.

    python scripts/evaluate_prior.py --prior bundled:mnist32 --samples 1000 --steps 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.cli.common import run_cli

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", default="bundled:mnist32")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100, help="DDIM steps (eta = 0) on the prior's own schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prior_mnist"))
    args = p.parse_args()

    import torch

    from davi.io.atomic import write_json
    from davi.models.classifier import load_classifier, sample_quality
    from davi.config import DataConfig
    from davi.data.datasets import load_split
    from davi.io.images import make_grid, save_grid_png
    from davi.models.prior import DiffusionPrior, sample

    prior = DiffusionPrior.from_pretrained(args.prior)
    t0 = time.time()
    images = sample(prior, args.samples, num_steps=args.steps, generator=torch.Generator().manual_seed(args.seed),
                    progress=True, batch_size=250)
    seconds = time.time() - t0
    clf = load_classifier()
    q = sample_quality(clf, images)
    real = sample_quality(clf, load_split(DataConfig(), "test").tensor())
    result = {"prior": args.prior, "digest": prior.digest, "samples": args.samples, "ddim_steps": args.steps,
              "sampling_seconds": seconds, "mean_confidence": float(q["confidence"]),
              "class_histogram": [float(v) for v in q["histogram"]],
              "real_test_mean_confidence": float(real["confidence"])}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    save_grid_png(make_grid(images[:64], nrow=16), out.with_name(out.name + "_samples.png"), upscale=2)
    hist = " | ".join(f"{100 * v:.1f}%" for v in result["class_histogram"])
    print(f"mean classifier confidence on {args.samples} samples: {result['mean_confidence']:.3f} "
          f"(real test digits: {result['real_test_mean_confidence']:.3f}); sampling {seconds:.0f} s")
    print("| digit | " + " | ".join(str(d) for d in range(10)) + " |")
    print("|---" * 11 + "|")
    print(f"| share of samples | {hist} |")
    ok = result["mean_confidence"] >= 0.8 and all(0.05 <= v <= 0.15 for v in result["class_histogram"])
    print("bar (confidence >= 0.8, every class 5-15%):", "met" if ok else "NOT met")


if __name__ == "__main__":
    sys.exit(run_cli(main))
