"""`python -m cl`: the same as the `cl` command."""

import sys

from cl.cli import main

if __name__ == "__main__":
    sys.exit(main())
