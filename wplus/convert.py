"""`python -m wplus.convert`: kept as the documented entry point; the code is in wplus.branch.convert."""
import sys

from wplus.branch.convert import main

if __name__ == "__main__":
    sys.exit(main())
