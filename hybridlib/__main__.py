"""`python -m hybridlib ...`: see `hybridlib.cli`."""

import signal
import sys

from hybridlib.cli import main


def _interrupt(signum, frame):
    """`kill PID` stops a command as Ctrl-C does: a run keeps its checkpoint and summary."""
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _interrupt)
sys.exit(main())
