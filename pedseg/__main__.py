"""``python -m pedseg`` (also what ``torchrun -m pedseg`` runs)."""

import sys

from pedseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
