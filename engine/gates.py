"""`python -m engine.gates`: the command hosts, the fleet, the tests and bench/ call by name.

Its code is engine/data/gates.py; this file only keeps the name.
"""

import sys

from engine.data.gates import main

if __name__ == "__main__":
    sys.exit(main())
