"""`python -m wplus.e4e`: kept as the documented entry point; the code is in wplus.stylegan.e4e."""
import sys

from wplus.stylegan.e4e import main

if __name__ == "__main__":
    sys.exit(main())
