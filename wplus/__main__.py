"""`python -m wplus …`: the command line (`wplus.cli`)."""
from __future__ import annotations

import sys

from wplus.cli import main

if __name__ == "__main__":
    sys.exit(main())
