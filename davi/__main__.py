"""``python -m davi ...``: the ``davi`` command (``davi.cli.main``), for environments without the script."""

import sys

from davi.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
