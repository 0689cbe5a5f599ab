"""How good the bundled digit classifier is on the 1,000 bundled test digits it never saw.

The classifier (davi/models/classifier.py, trained by scripts/train_classifier.py) measures sample
quality on the embedded default: its accuracy and mean confidence on real digits are the scale
those figures are read against. Writes benchmarks/results/classifier.json (+ .md beside it).

    python benchmarks/classifier.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import table

from davi.eval.evaluate import markdown_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "classifier.json"))
    args = p.parse_args()

    from safetensors import safe_open

    from davi.models.classifier import load_classifier, sample_quality
    from davi.config import DataConfig
    from davi.data.datasets import load_split
    from common import command_line, publish

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


# ----------------------------------------------------------------------------------------------
# the tables: classifier.json, prior_mnist.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
@table("prior", "prior_mnist.json")
def render_prior(data: dict) -> str:
    """Mean classifier confidence and class shares of the prior's samples (bars: >= 0.8, 5-15%)."""
    confidence = markdown_table(
        [{"c": f"**{data['mean_confidence']:.3f}** (real test digits: {data['real_test_mean_confidence']:.3f})",
          "bar": ">= 0.8"}], [("c", "mean classifier confidence", "{}"), ("bar", "bar", "{}")])
    shares = data["class_histogram"]
    histogram = markdown_table(
        [{"digit": f"share of {data['samples']:,} samples", **{str(d): f"{100 * s:.1f}%" for d, s in enumerate(shares)}}],
        [("digit", "digit", "{}"), *[(str(d), str(d), "{}") for d in range(len(shares))]])
    met = all(0.05 <= s <= 0.15 for s in shares)
    verdict = (f"Every class is between 5% and 15% ({100 * min(shares):.1f}%-{100 * max(shares):.1f}%): bar met, "
               "no collapse." if met else
               f"Class shares {100 * min(shares):.1f}%-{100 * max(shares):.1f}%: the 5-15% bar is **missed**.")
    return f"{confidence}\n\n{histogram}\n\n{verdict}"


CLASSIFIER_COLUMNS = [("split", "digits", "{}"), ("accuracy", "accuracy", "{:.3f}"),
                      ("confidence", "mean confidence", "{:.3f}"), ("recorded", "at training", "{}")]


@table("classifier", "classifier.json")
def render_classifier(data: dict) -> str:
    return markdown_table(data["rows"], CLASSIFIER_COLUMNS)


if __name__ == "__main__":
    main()
