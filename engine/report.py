"""`python -m engine.report`: the command hosts, the fleet, the tests and bench/ call by name.

Its code is engine/results/report.py; this file only keeps the name.
"""

import sys

from engine.results.report import main

if __name__ == "__main__":
    sys.exit(main())
