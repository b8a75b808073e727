"""`python -m engine.status`: the command hosts, the fleet, the tests and bench/ call by name.

Its code is engine/protocol/status.py; this file only keeps the name.
"""

import sys

from engine.protocol.status import main

if __name__ == "__main__":
    sys.exit(main())
