"""`python -m entragate_tools` (with PYTHONPATH=src:tools)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
