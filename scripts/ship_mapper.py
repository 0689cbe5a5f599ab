"""Ship a trained DAVI mapper into the package: float16 weights, consistency threshold, model card with metrics.

From one checkpoint of a training run (its EMA mapper, default: the latest checkpoint):

1. export it (``davi.io.export.export_checkpoint``) and copy it as float16 safetensors into
   ``davi/assets/mappers/<name>`` (``davi.io.export.export_float16``);
2. calibrate the export's consistency threshold on held-out test digits 500-999
   (``davi.solvers.consistency.with_consistency``), with the weights as shipped;
3. restore the first ``--images`` held-out test digits with the shipped weights (measurement noise
   seed 0, one sample each; benchmarks/convergence.py's protocol), write the scores as a results
   file ``benchmarks/results/shipped_<name>.json`` (row ``davi (shipped, fp16)``, with this command)
   and put that row into the model card (``README.md``).

    python scripts/ship_mapper.py runs/long/sr4 --name sr4
    python scripts/ship_mapper.py runs/long/sr4/checkpoint-2000 --name sr4 --note "how it was trained"
    python scripts/ship_mapper.py runs/family_mnist --name family --member sr4   # a family export

A family export (``operator.family``) gets the family's one threshold
(``davi.solvers.family_consistency``) and its card's metrics are those of one member, the operator of
the digit task ``--member`` (the rest: benchmarks/family.py).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.cli.common import run_cli

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "davi" / "assets" / "mappers"


def calibrated(mapper, operator, card: dict, member: str | None, out: Path):
    """(method, operator the metrics use, card.json dict with its threshold, member description or None):
    a family export is calibrated over its family and measured on the member ``member``."""
    from davi.eval.tasks import DigitTask
    from davi.io.card import ExportCard
    from davi.io.model_card import card_family
    from davi.solvers.consistency import with_consistency
    from davi.solvers.family_consistency import with_family_consistency
    from davi.solvers.methods import DaviMethod, member_method

    family = card_family(ExportCard.from_dict(card, str(out / "card.json")))
    if family is None:
        method = DaviMethod(mapper, operator)
        return method, operator, with_consistency(card, method, operator), None  # card.json keeps its key order
    op = DigitTask.load(member, 1).operator
    family.check(op)
    described = f"{op.describe()} at sigma_y {op.sigma_y:g}"
    return member_method(mapper, family, op), op, with_family_consistency(card, mapper, family), described


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="a DAVI run folder (its latest checkpoint) or one checkpoint-N folder")
    p.add_argument("--name", required=True, help="folder name under davi/assets/mappers, e.g. sr4")
    p.add_argument("--images", type=int, default=200, help="held-out test digits for the card's metrics")
    p.add_argument("--member", default=None, choices=("sr4", "deblur", "box"),
                   help="a family export: the digit task whose operator the card's metrics are measured with")
    p.add_argument("--note", default="", help="how it was trained, where the checkpoint's config does not say it all "
                                             "(e.g. a run resumed with other settings); stored in card.json")
    args = p.parse_args(argv)

    from davi.eval.evaluate import held_out_scores
    from davi.io.atomic import write_json
    from davi.io.card import ExportCard
    from davi.io.export import export_checkpoint, export_float16, load_export, read_card
    from davi.io.model_card import metrics_from_results, write_model_card
    from davi.solvers.consistency import data_config
    from davi.training.checkpoints import list_checkpoints

    checkpoint = args.source
    if not (checkpoint / "trainer_state.json").is_file():
        found = list_checkpoints(args.source)
        if not found:
            raise SystemExit(f"error: {args.source}: neither a checkpoint-N folder nor a run with checkpoints")
        checkpoint = found[-1][1]
    out = SHIPPED / args.name
    with tempfile.TemporaryDirectory() as tmp:
        export = export_checkpoint(checkpoint, Path(tmp) / "export")
        if "family" in read_card(export) and args.member is None:  # before anything is written
            raise SystemExit(f"error: {checkpoint}: a family export: name the member its card's metrics use "
                             "(--member sr4)")
        export_float16(export, out)
    mapper, _, operator = load_export(out)
    method, operator, raw, member = calibrated(mapper, operator, read_card(out), args.member, out)
    if args.note:
        raw = {**raw, "training_note": args.note}
    write_json(out / "card.json", raw)
    card = ExportCard.from_dict(raw, str(out / "card.json"))
    scores = held_out_scores(method, operator, data_config(card), args.images)
    command = shlex.join(["python", "scripts/ship_mapper.py", *(sys.argv[1:] if argv is None else argv)])
    results = ROOT / "benchmarks" / "results" / f"shipped_{args.name}.json"
    row = {"task": args.name, "method": "davi (shipped, fp16)", "steps": card.steps,
           **{k: round(v, 4) for k, v in scores.items()}}
    write_json(results, {"command": command, "head": f"The shipped mapper {out.relative_to(ROOT)} on {args.images} "
                                                      f"held-out test images, one sample each (seed 0).",
                         "rows": [row]})
    metrics = metrics_from_results(results, args.name, row["method"])
    metrics["results"] = str(results.relative_to(ROOT))
    if member:
        metrics["member"] = member
    write_model_card(out, card, metrics)
    print(f"shipped {checkpoint} ({card.steps} steps) -> {out}: "
          + ", ".join(f"{k} {v:.3f}" for k, v in metrics["values"].items()))


if __name__ == "__main__":
    sys.exit(run_cli(main))
