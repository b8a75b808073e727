"""`python -m engine.synth`: the command hosts, the fleet, the tests and bench/ call by name.

Its code is engine/synthetic/twin.py; this file only keeps the name.
"""

import sys

from engine.synthetic.twin import main

if __name__ == "__main__":
    sys.exit(main())
