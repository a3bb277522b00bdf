"""`python -m hybridlib ...`: see `hybridlib.tools.cli` (it also handles SIGTERM)."""

import sys

from hybridlib.tools.cli import main

sys.exit(main())
