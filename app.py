"""The restoration web page for the shipped DAVI mappers (Gradio, 127.0.0.1 only). The same as `davi app`;
the code is davi/cli/app.py.

    make app                          # http://127.0.0.1:7860
    python app.py --port 7861         # or DAVI_APP_PORT=7861 python app.py
"""

from __future__ import annotations

import sys

from davi.cli import app
from davi.cli.main import run_one


def main(argv: list[str] | None = None) -> int:
    return run_one(app, argv, prog="app.py")


if __name__ == "__main__":
    sys.exit(main())
