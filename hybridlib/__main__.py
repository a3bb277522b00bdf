"""`python -m hybridlib ...`: see `hybridlib.cli` (it also handles SIGTERM)."""

import sys

from hybridlib.cli import main

sys.exit(main())
