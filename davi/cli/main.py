"""davi: one-step image restoration with a diffusion prior (DAVI), with a RED-Diff baseline.

    davi train --config configs/sr4_mnist.yaml train.max_steps=500     # or: accelerate launch -m davi train ...
    davi restore --export davi/assets/mappers/sr4 --input mnist32:test --limit 16 --simulate sr --out outputs/sr4
    davi evaluate --restored outputs/sr4/mean --reference outputs/sr4/reference
    davi app                                                           # the restoration web page
    davi demo                                                          # the main job: train, export, restore

`davi COMMAND --help` describes each command. A known error (a bad config key, a missing file, an
export that does not load) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from davi.cli import (
    anchors,
    app,
    card,
    convert,
    demo,
    evaluate,
    export,
    onnx,
    restore,
    train,
)
from davi.cli.common import run_cli

# the order of `davi --help`: the everyday commands first
COMMANDS: dict[str, ModuleType] = {
    "train": train, "restore": restore, "evaluate": evaluate, "export": export, "onnx": onnx, "card": card,
    "app": app, "demo": demo, "anchors": anchors, "convert": convert,
}


def _description(module: ModuleType) -> str:
    return getattr(module, "DESCRIPTION", None) or module.__doc__ or module.HELP


def build_parser(commands: dict[str, ModuleType], prog: str, description: str | None) -> argparse.ArgumentParser:
    """One parser with a subcommand per entry of ``commands`` (each module's HELP and add_arguments)."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in commands.items():
        s = sub.add_parser(name, help=module.HELP, description=_description(module),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(s)
    return p


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace, module: ModuleType) -> None:
    """Usage errors argparse cannot see (exit 2 with the usage line, as argparse's own)."""
    if getattr(args, "samples", 1) < 1:
        parser.error("--samples must be >= 1")
    check = getattr(module, "check", None)
    if check is not None:
        check(parser, args)


def _run(module: ModuleType, args: argparse.Namespace) -> int:
    """``module.run(args)`` with known errors as one line on stderr (exit 2); ``run`` may return a code."""
    returned: list[int | None] = []
    code = run_cli(lambda: returned.append(module.run(args)))
    if code == 0 and returned and returned[0]:
        code = int(returned[0])
    finish = getattr(module, "finish", None)  # train: the multi-process exit workaround
    return finish(code) if finish is not None else code


def run_commands(commands: dict[str, ModuleType], argv: list[str] | None = None, *, prog: str = "davi",
                 description: str | None = None, invocation: str | None = None) -> int:
    """Parse ``argv`` against ``commands`` and run the chosen one; the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(commands, prog, description)
    args = parser.parse_args(argv)
    module = commands[args.command]
    _check(parser, args, module)
    args.invocation = " ".join([invocation or prog, *argv])  # recorded by commands that write results files
    return _run(module, args)


def run_one(module: ModuleType, argv: list[str] | None = None, *, prog: str, description: str | None = None,
            invocation: str | None = None) -> int:
    """One command as a program of its own (the ``train.py``, ``app.py``, ``demo.py`` shims)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description=description or _description(module),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    _check(parser, args, module)
    args.invocation = " ".join([invocation or prog, *argv])
    return _run(module, args)


def main(argv: list[str] | None = None) -> int:
    """The installed ``davi`` command (and ``python -m davi``)."""
    return run_commands(COMMANDS, argv, prog="davi", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
