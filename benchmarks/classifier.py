"""How good the bundled digit classifier is on the 1,000 bundled test digits it never saw.

The classifier (davi/models/classifier.py, trained by scripts/train_classifier.py) measures sample
quality on the embedded default: its accuracy and mean confidence on real digits are the scale
those figures are read against. Writes benchmarks/results/classifier.json (+ .md beside it).

    python benchmarks/classifier.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "classifier.json"))
    args = p.parse_args()

    from safetensors import safe_open

    from davi.models.classifier import load_classifier, sample_quality
    from davi.config import DataConfig
    from davi.data.datasets import load_split
    from readme_tables import command_line, publish, render_classifier

    test = load_split(DataConfig(), "test")
    q = sample_quality(load_classifier(), test.tensor())
    labels = test.labels()
    path = ROOT / "davi" / "assets" / "digit_classifier.safetensors"
    with safe_open(str(path), "pt") as f:
        recorded = f.metadata()  # what scripts/train_classifier.py measured when it wrote the file
    rows = [{"split": f"bundled test ({len(labels):,} digits)", "accuracy": float((q["labels"] == labels).float().mean()),
             "confidence": q["confidence"],
             "recorded": f"{float(recorded['test_accuracy']):.3f} / {float(recorded['test_mean_confidence']):.3f}"}]
    head = (f"The bundled digit classifier ({path.relative_to(ROOT)}, float16 weights) on the bundled test split; "
            "'at training' = the accuracy / mean confidence scripts/train_classifier.py stored in the file's metadata.")
    publish(args.out, {"command": command_line("classifier.py"), "head": head, "rows": rows}, render_classifier)


if __name__ == "__main__":
    main()
