"""`python -m pilot_daemon ...` is `pilotctl ...` (the daemon's detached child runs so)."""

import sys

from .cli import main

sys.exit(main())
