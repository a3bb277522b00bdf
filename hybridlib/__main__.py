"""`python -m hybridlib ...`: see `hybridlib.cli`."""

import sys

from hybridlib.cli import main

sys.exit(main())
