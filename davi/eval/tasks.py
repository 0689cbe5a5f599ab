"""The digit tasks of the embedded default, defined once for every benchmark.

SR x4, deblur and box inpainting on the bundled 32x32 digits (sigma_y = 0.05), each defined by
``configs/<task>_mnist[_<variant>].yaml``. The held-out test split is cut into consecutive blocks
of N digits: block 0 is measured and restored, block 1 is an independent reference of real
digits that nothing restores (realism alone), block 2 a third real set scored as the measures'
floor. Measurements use a fixed noise seed (0 for the test digits), so every benchmark restores
the same ``y``.

    task = DigitTask.load("sr4", images=200)
    x0, reference, floor = task.test_blocks(3)
    y = task.measure(x0)                       # noise seed 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

PACKAGE = Path(__file__).resolve().parents[1]  # davi/
CONFIGS = PACKAGE.parent / "configs"  # the task configs of a source checkout
MAPPERS = PACKAGE / "assets" / "mappers"  # the shipped mappers, one export folder per task
DIGIT_TASKS = ("sr4", "deblur", "box")
TEST_NOISE_SEED = 0  # the test measurements' noise
TRAIN_NOISE_SEED = 1  # the tuning measurements' noise (train digits): apart from the test set's
CALIBRATION_START = 500  # the shipped thresholds were calibrated on test digits 500-999
_PRIORS: dict[str, Any] = {}


def config_path(task: str, variant: str = "", configs: Path = CONFIGS) -> Path:
    """``configs/<task>_mnist.yaml`` (``variant``: ``_<variant>`` before the suffix, e.g. "sampler")."""
    if task not in DIGIT_TASKS:
        raise ValueError(f"unknown digit task {task!r}: expected one of {', '.join(DIGIT_TASKS)}")
    return Path(configs) / f"{task}_mnist{'_' + variant if variant else ''}.yaml"


def digits(split: str = "test", limit: int | None = None):
    """The first ``limit`` bundled digits of ``split`` (the shuffled split, 32x32, one channel)."""
    from davi.config import DataConfig
    from davi.data.datasets import load_split

    return load_split(DataConfig(source="mnist32", resolution=32, channels=1), split).tensor(limit=limit)


def uncalibrated_test_digits(n: int):
    """Test digits 0..n-1: none of them set a shipped mapper's consistency threshold (digits 500-999 did)."""
    if n > CALIBRATION_START:
        raise SystemExit(f"--images: at most {CALIBRATION_START} (test digits {CALIBRATION_START}-999 calibrated "
                         "the thresholds)")
    return digits("test", n)


@dataclass
class DigitTask:
    """One task: its config, operator and N (the size of each test block)."""

    name: str
    config: Any  # davi.config.Config
    operator: Any  # davi.operators.Operator
    images: int
    _test: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, name: str, images: int, variant: str = "", overrides: Sequence[str] = (),
             configs: Path = CONFIGS) -> "DigitTask":
        """The task ``name`` from its config (``variant``, dotted ``overrides`` as on the command line)."""
        from davi.builders import operator_from_config
        from davi.config import load_config

        cfg = load_config(config_path(name, variant, configs), list(overrides))
        return cls(name, cfg, operator_from_config(cfg), images)

    def test_blocks(self, blocks: int = 1) -> list:
        """The first ``blocks`` consecutive blocks of N test digits (0: measured, 1: reference, 2: floor)."""
        from davi.data.datasets import load_split

        n = blocks * self.images
        if self._test is None or len(self._test) < n:
            self._test = load_split(self.config.data, "test").tensor(limit=n)
        if len(self._test) < n:
            raise SystemExit(f"error: --images {self.images}: the test split has only {len(self._test)} digits "
                             f"(needs {blocks} x)")
        return [self._test[k * self.images: (k + 1) * self.images] for k in range(blocks)]

    def train_digits(self, limit: int):
        """The first ``limit`` train digits of the task's data."""
        from davi.data.datasets import load_split

        return load_split(self.config.data, "train").tensor(limit=limit)

    def measure(self, x, seed: int = TEST_NOISE_SEED):
        """``A x + noise`` with the noise seeded by ``seed``."""
        import torch

        return self.operator.measure(x, generator=torch.Generator().manual_seed(seed))

    def red_diff_config(self, steps: int, lr: float, lam: float):
        """The task's ``red_diff`` config section at ``steps`` steps, learning rate ``lr`` and weight ``lam``."""
        from davi.config import RedDiffConfig

        return RedDiffConfig(**{**self.config.red_diff.__dict__, "num_steps": steps, "lr": lr, "lam": lam})

    @property
    def prior(self):
        """The task's diffusion prior, loaded once per prior path for the whole process."""
        from davi.builders import prior_from_config

        path = self.config.prior.path
        if path not in _PRIORS:
            _PRIORS[path] = prior_from_config(self.config)
        return _PRIORS[path]

    def mapper_folder(self, overrides: dict[str, str] | None = None) -> Path:
        """The shipped mapper's export folder (or ``overrides[task]``)."""
        return Path((overrides or {}).get(self.name, MAPPERS / self.name))


def score_digit_restorations(outs: list, x0, independent) -> tuple[dict, dict]:
    """(row averaged over the seeds' restorations ``outs`` of the test digits ``x0``, per-image items for the
    paired bootstrap): PSNR, SSIM, the classifier's confidence, FD / KID against the measured digits and,
    realism alone, against ``independent`` real digits that nothing restores (against the measured digits
    FD and KID also reward fidelity: benchmarks/realism_floor.py)."""
    import torch

    from davi.eval.metrics import psnr, score_restorations
    from davi.eval.paired_bootstrap import restoration_features
    from davi.models.classifier import classifier_realism, load_classifier, sample_quality

    per_seed = []
    for out in outs:
        s = score_restorations(out, x0, explain_absent=False)
        s["confidence"] = sample_quality(load_classifier(), out)["confidence"]
        s.update(classifier_realism(load_classifier(), out, independent, "independent"))
        per_seed.append(s)
    row = {k: sum(s[k] for s in per_seed) / len(per_seed) for k in per_seed[0]}
    items = {"psnr": torch.stack([psnr(o, x0) for o in outs], 1).mean(1).numpy(), "feats": restoration_features(outs)}
    return {**row, "seeds": len(outs), "per_seed": per_seed}, items


@dataclass(frozen=True)
class ShippedMapper:
    """A shipped export with what the out-of-distribution checks need beside it."""

    mapper: Any
    card: dict
    operator: Any
    prior: Any
    threshold: float


def load_shipped(task: str, mappers: Path = MAPPERS) -> ShippedMapper:
    """The shipped mapper of ``task``, its operator, the prior its card names and its consistency threshold."""
    from davi.io.card import ExportCard
    from davi.io.export import load_export
    from davi.models.prior import DiffusionPrior
    from davi.solvers.consistency import card_threshold

    mapper, card, operator = load_export(Path(mappers) / task)
    threshold = card_threshold(card)
    if threshold is None:
        raise SystemExit(f"{Path(mappers) / task}/card.json: no consistency threshold "
                         "(run scripts/calibrate_consistency.py)")
    return ShippedMapper(mapper, card, operator, DiffusionPrior.from_pretrained(ExportCard.from_dict(card).prior.identity), threshold)
