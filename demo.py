"""The main job on the embedded default (train a mapper, export it, restore and score held-out digits).
The same as `davi demo`; the code is davi/cli/demo.py.

    make demo                                  # SR x4, ~12 minutes of training on 2 CPU cores
    make demo ARGS="--task box --minutes 60"   # another task, longer
"""

from __future__ import annotations

import sys

from davi.cli import demo
from davi.cli.demo import SHIPPED, TASKS  # noqa: F401  (the names demo.py had)
from davi.cli.main import run_one


def main(argv: list[str] | None = None) -> int:
    return run_one(demo, argv, prog="demo.py", invocation="python demo.py")


if __name__ == "__main__":
    sys.exit(main())
