"""Train the bundled digit classifier on the bundled 32x32 MNIST train split (one CPU thread).

Reports test accuracy and mean confidence on the 1000 bundled test digits, then writes
``davi/assets/digit_classifier.safetensors`` atomically (davi.io.atomic.write_file), as float16
(the loader computes in float32). The numbers are recorded in the file's metadata.

    python scripts/train_classifier.py            # about 2-3 minutes on one core
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from davi.cli.common import run_cli

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "davi" / "assets" / "digit_classifier.safetensors"))
    args = p.parse_args()

    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    from davi.io.atomic import write_file
    from davi.models.classifier import load_classifier, sample_quality, train_classifier
    from davi.config import DataConfig
    from davi.data.datasets import load_split

    t0 = time.time()
    cfg = DataConfig()
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    x_train, y_train = train.tensor(), train.labels()
    x_test, y_test = test.tensor(), test.labels()
    t_data = time.time() - t0
    print(f"data: {len(x_train)} train / {len(x_test)} test digits ({t_data:.1f}s)", flush=True)

    t1 = time.time()
    model = train_classifier(x_train, y_train, steps=args.steps, seed=args.seed,
                             batch_size=args.batch_size, lr=args.lr, log_every=100)
    t_train = time.time() - t1

    # Store as float16 and evaluate what ships: the round-tripped weights.
    state = {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
             for k, v in model.state_dict().items()}

    def metadata(acc: float, conf: float) -> dict[str, str]:
        return {"format": "pt", "arch": "DigitClassifier", "stored_dtype": "float16",
                "steps": str(args.steps), "batch_size": str(args.batch_size), "lr": str(args.lr),
                "seed": str(args.seed), "train_seconds": f"{t_train:.1f}",
                "test_accuracy": f"{acc:.4f}", "test_mean_confidence": f"{conf:.4f}"}

    measured = {}

    def save_measured(tmp: Path) -> None:
        """Write the weights, measure the file as loaded, write again with the numbers in its metadata."""
        save_file(state, str(tmp), metadata=metadata(float("nan"), float("nan")))
        q = sample_quality(load_classifier(tmp), x_test)
        measured.update(acc=float((q["labels"] == y_test).float().mean()), quality=q)
        save_file(state, str(tmp), metadata=metadata(measured["acc"], q["confidence"]))
        os.chmod(tmp, 0o644)

    out = write_file(args.out, save_measured)
    acc, q = measured["acc"], measured["quality"]

    print(f"train time: {t_train:.1f}s ({args.steps} steps, batch {args.batch_size}, one thread)")
    print(f"test accuracy: {acc:.4f}   mean confidence: {q['confidence']:.4f}")
    print(f"predicted histogram: {[round(h, 3) for h in q['histogram']]}")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB), total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    sys.exit(run_cli(main))
