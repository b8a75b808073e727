"""`python -m engine.train`: the command hosts, the fleet, the tests and bench/ call by name.

Its code is engine/training/train.py; this file only keeps the name.
"""

import sys

from engine.training.train import main

if __name__ == "__main__":
    sys.exit(main())
