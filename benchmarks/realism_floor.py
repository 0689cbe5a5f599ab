"""How much realism can 200 digits resolve? The classifier FD and KID of real digits, as a floor.

benchmarks/compare.py scores every method's restorations of the first ``--images`` test digits
against *those same digits*. This script puts real digits through the same measures to show what the
numbers mean:

* ``truth``: the measured digits themselves (FD 0 by definition; KID below 0, because the unbiased
  kernel estimate's cross term then contains identical pairs);
* ``real test digits A-B``: other held-out test digits, as many: a set exactly as real as the
  measured one, which differs from it only by sampling, i.e. the floor of the measure at this size;
* ``real train digits``: a strided subset of the train split;
* ``prior DDIM-50``: the prior's own unconditional samples (seeded as in compare.py);
* ``DAVI <task>`` and ``lift(y) <task>``: the shipped mappers and lift(y) on the measured digits
  (compare.py's measurements, noise seed 0, one sample per image, seeds 0..N-1).

Each row is scored twice: against the measured digits (compare.py's reference), and against an
independent reference, test digits ``N..2N-1``, which no row restores. A restoration that is faithful
to its own digit scores below the real floor against the measured digits: there the measures reward
fidelity as well as realism. Against the independent reference they measure realism alone.

    OMP_NUM_THREADS=1 python benchmarks/realism_floor.py     # about 3 minutes on one core
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import RESULTS, command_line, publish

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.cli.common import run_cli
from davi.eval.evaluate import markdown_table
from davi.eval.tasks import DIGIT_TASKS as TASKS
from davi.eval.tasks import DigitTask

COLUMNS = [("set", "images scored", "{}"), ("fd_measured", "classifier FD vs the measured digits", "{:.2f}"),
           ("kid_measured", "KID vs the measured digits", "{}"), ("fd_independent", "classifier FD vs other real digits",
                                                                   "{:.2f}"),
           ("kid_independent", "KID vs other real digits", "{}")]


def score(classifier, images: torch.Tensor, measured: torch.Tensor, independent: torch.Tensor) -> dict:
    from davi.models.classifier import classifier_realism

    return {**classifier_realism(classifier, images, measured, "measured"),
            **classifier_realism(classifier, images, independent, "independent")}


def restorations(task: str, measured: torch.Tensor) -> dict[str, torch.Tensor]:
    """The shipped mapper's sample and lift(y) for compare.py's measurements of ``measured``."""
    from davi.io.export import load_export
    from davi.solvers.methods import DaviMethod

    digits = DigitTask.load(task, len(measured))
    op, y = digits.operator, digits.measure(measured)  # compare.py's noise seed
    mapper, _, _ = load_export(digits.mapper_folder())
    sample = DaviMethod(mapper, op)(y, list(range(len(y))), 1)[0]
    return {f"DAVI {task}": sample, f"lift(y) {task}": op.lift(y).clamp(-1, 1)}


def render(data: dict) -> str:
    """benchmarks/realism_floor.py's results .md: each set's FD / KID against both references."""
    rows = [{**r, **{f"kid_{k}": f"{r[f'kid_{k}']:+.3f} ± {r[f'kid_std_{k}']:.3f}" for k in ("measured", "independent")}}
            for r in data["rows"]]
    return markdown_table(rows, COLUMNS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="the measured digits: the first N test digits, as compare.py")
    p.add_argument("--out", default=str(RESULTS / "realism_floor.json"))
    args = p.parse_args()
    torch.set_grad_enabled(False)
    from davi.models.classifier import load_classifier
    from davi.models.prior import sample

    n = args.images
    default = DigitTask.load("sr4", n)  # the embedded default's data and prior
    measured, independent, other = default.test_blocks(3)
    train = default.train_digits(None)
    prior = default.prior
    sets = {"truth (the measured digits)": measured, f"real test digits {2 * n}-{3 * n - 1}": other,
            f"real train digits (every {len(train) // n}th)": train[:: len(train) // n][:n],
            "prior DDIM-50": sample(prior, n, 50, generator=torch.Generator().manual_seed(0), batch_size=n)}
    for task in TASKS:
        sets.update(restorations(task, measured))
    classifier = load_classifier()
    rows = [{"set": name, **score(classifier, images, measured, independent)} for name, images in sets.items()]
    head = (f"Bundled digits: the measured digits are test digits 0-{n - 1} (benchmarks/compare.py's), the "
            f"independent reference test digits {n}-{2 * n - 1}; {n} images per set; the digit classifier's "
            "features; KID +- its std over 100 subsets of 100. DAVI: the shipped paired mappers, one sample per image.")
    publish(args.out, {"command": command_line("realism_floor.py"), "head": head, "rows": rows}, render)


if __name__ == "__main__":
    sys.exit(run_cli(main))
