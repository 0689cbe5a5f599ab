"""What one DAVI training iteration costs, against the network passes it cannot avoid.

A full iteration must run: the mapper forward + backward, the score network's DSM forward +
backward, one score-network forward and one teacher forward for the IKL (both without
gradients), and two AdamW steps. This script times the real trainer for --steps iterations
(seconds per iteration, from train_summary.json), then each part alone in the same process
on the same shapes, and reports the ratio (overhead of everything else: data, noise, EMA,
logging, bookkeeping). The regression-only iteration (mapper forward + backward) is
measured the same way for scale. Prints the table and writes benchmarks/results/train_cost.json
(rendered into the README by benchmarks/readme_tables.py) and train_cost.md beside it.

    python benchmarks/train_cost.py --steps 40 --batch-size 16
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from common import table
from davi.cli.common import run_cli
from davi.eval.evaluate import markdown_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "sr4_mnist.yaml"))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_cost.json"),
                   help="results JSON (the .md is written beside it)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    import torch

    from davi.config import load_config
    from common import command_line, publish
    from davi.models.mapper import Mapper
    from davi.builders import prior_from_config
    from davi.training.recipes import train_job

    runs = ROOT / "runs" / "train_cost"
    base = [f"train.batch_size={args.batch_size}", f"train.max_steps={args.steps}", "train.checkpoint_every=100000",
            "log.image_every=0", "log.every=100000", "log.progress=false", *args.overrides]
    measured = {}
    for name, extra in (("DAVI (IKL + PPB)", []), ("regression only", ["davi.lambda_ikl=0"])):
        out = runs / name.split()[0]
        shutil.rmtree(out, ignore_errors=True)
        train_job(load_config(args.config, [*base, f"train.output_dir={out}", *extra]))
        measured[name] = json.loads((out / "train_summary.json").read_text())["seconds_per_step"]

    cfg = load_config(args.config, base)
    prior = prior_from_config(cfg)
    c, r, b = cfg.data.channels, cfg.data.resolution, args.batch_size
    mapper = Mapper.from_prior_unet(prior.unet, cfg.mapper.h, cfg.mapper.tanh).train()
    score = copy.deepcopy(prior.unet).train().requires_grad_(True)
    opt_m = torch.optim.AdamW(mapper.parameters(), 1e-4)
    opt_s = torch.optim.AdamW(score.parameters(), 1e-4)
    x = torch.randn(b, c, r, r)
    a = torch.randint(0, 1000, (b,))

    def mapper_fwd_bwd():
        mapper(x, a).square().mean().backward()

    def score_fwd_bwd():
        score(x, a).sample.square().mean().backward()

    def score_fwd():
        with torch.no_grad():
            score(x, a)

    def teacher_fwd():
        prior.eps(x, a)

    def adamw_steps():
        opt_m.step(), opt_s.step()

    from davi.eval.timing import median_time

    cpu = torch.device("cpu")
    parts = {name: median_time(fn, cpu, warmup=1, repeats=args.repeats) for name, fn in (
        ("mapper forward + backward", mapper_fwd_bwd), ("score forward + backward", score_fwd_bwd),
        ("score forward (IKL)", score_fwd), ("teacher forward (IKL)", teacher_fwd), ("AdamW steps (both)", adamw_steps))}
    full_parts = sum(parts.values())
    reg_parts = parts["mapper forward + backward"] + parts["AdamW steps (both)"] / 2
    rows = [{"what": f"part: {k}", "seconds": v} for k, v in parts.items()]
    rows.append({"what": "DAVI iteration (trainer)", "seconds": measured["DAVI (IKL + PPB)"],
                 "ratio": measured["DAVI (IKL + PPB)"] / full_parts, "vs_reg": measured["DAVI (IKL + PPB)"] / measured["regression only"]})
    rows.append({"what": "regression-only iteration (trainer)", "seconds": measured["regression only"],
                 "ratio": measured["regression only"] / reg_parts})
    head = (f"Batch {b} of {c}x{r}x{r}, prior {cfg.prior.path}, {torch.get_num_threads()} CPU threads, "
            f"{args.steps} trainer iterations; parts are medians of {args.repeats} runs.")
    publish(Path(args.out).with_suffix(".json"), {"command": command_line("train_cost.py"), "head": head, "rows": rows},
            render_train_cost)


# ----------------------------------------------------------------------------------------------
# the tables: train_cost.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
TRAIN_COST_COLUMNS = [("what", "what", "{}"), ("seconds", "seconds", "{:.3f}"),
                      ("ratio", "iteration / sum of its parts", "{:.2f}"),
                      ("vs_reg", "DAVI / regression iteration", "{:.2f}")]


@table("train_cost", "train_cost.json")
def render_train_cost(data: dict) -> str:
    return markdown_table(data["rows"], TRAIN_COST_COLUMNS)


def _davi_iteration(data: dict) -> dict:
    return next(r for r in data["rows"] if r["what"].startswith("DAVI iteration"))


@table("train_cost_overhead", "train_cost.json", inline=True)
def render_train_cost_overhead(data: dict) -> str:
    return f"{_davi_iteration(data)['ratio']:.2f}x"


@table("train_cost_vs_regression", "train_cost.json", inline=True)
def render_train_cost_vs_regression(data: dict) -> str:
    return f"{_davi_iteration(data)['vs_reg']:.1f}x"


if __name__ == "__main__":
    sys.exit(run_cli(main))
