"""``davi anchors``: RED-Diff anchors for measurement-only training (job: unpaired), computed once.

One RED-Diff solution per training measurement (``unpaired.measurements``), written as shards to
``unpaired.anchors`` (or --out). A killed job resumes at the first missing shard; a folder computed
for another measurement set, operator, prior or RED-Diff setting is refused, never overwritten.
See :mod:`davi.data.anchors`.

    davi anchors --config configs/sr4_mnist_unpaired.yaml      # -> unpaired.anchors
"""

from __future__ import annotations

HELP = "compute the RED-Diff anchors of an unpaired config's measurements (resumable)"


def add_arguments(p) -> None:
    """The ``anchors`` subcommand's flags."""
    p.add_argument("--config", required=True, help="an unpaired config (unpaired.measurements, operator, red_diff)")
    p.add_argument("--out", default="", help="anchor folder (default: the config's unpaired.anchors)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key.sub=value config overrides")


def run(args) -> None:
    from davi.cli.common import resolve_device
    from davi.config import load_config
    from davi.data.anchors import anchor_cpu_seconds, compute_anchors

    cfg = load_config(args.config, args.overrides)
    folder = compute_anchors(cfg, args.out or None, resolve_device(args.device), progress=not args.no_progress)
    print(f"anchors of {cfg.unpaired.measurements} in {folder} ({anchor_cpu_seconds(folder) / 60:.1f} CPU minutes)")
