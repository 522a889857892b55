"""Entry point of `python -m bench` (`make bench`)."""

from __future__ import annotations

import sys

from .runner import main

sys.exit(main())
