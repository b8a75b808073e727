"""`python -m engine.launch`: the command hosts, the fleet, the tests and bench/ call by name.

Its code is engine/protocol/launch.py; this file only keeps the name.
"""

import sys

from engine.protocol.launch import main

if __name__ == "__main__":
    sys.exit(main())
