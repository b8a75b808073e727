"""`python -m engine.evaluate`: the command hosts, the fleet, the tests and bench/ call by name.

Its code is engine/training/evaluate.py; this file only keeps the name.
"""

import sys

from engine.training.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
