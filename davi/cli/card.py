"""``davi card``: (re)write an export's README.md model card, optionally with measured metrics.

    davi card --export davi/assets/mappers/sr4 \\
        --results benchmarks/results/shipped_sr4.json --row sr4 "davi (shipped, fp16)"
"""

from __future__ import annotations

HELP = "(re)write an export's README.md model card, optionally with measured metrics"


def add_arguments(c) -> None:
    """The ``card`` subcommand's flags."""
    c.add_argument("--export", required=True, help="mapper export folder")
    c.add_argument("--results", default=None, help="a benchmark results JSON, e.g. benchmarks/results/tasks.json")
    c.add_argument("--row", nargs=2, metavar=("TASK", "METHOD"), help="the results row with the metrics")


def check(parser, args) -> None:
    """--results and --row name one row together."""
    if bool(args.results) != bool(args.row):
        parser.error("--results and --row go together")


def run(args) -> None:
    from davi.io.export import read_card
    from davi.io.model_card import metrics_from_results, write_model_card

    metrics = metrics_from_results(args.results, *args.row) if args.results else None
    print(f"wrote {write_model_card(args.export, read_card(args.export), metrics)}")
