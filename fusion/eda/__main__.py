"""``python -m fusion.eda``: see :func:`fusion.eda.cli.main`."""

import sys

from fusion.eda.cli import main

if __name__ == "__main__":
    sys.exit(main())
