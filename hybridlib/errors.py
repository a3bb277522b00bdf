"""The one exception type for mistakes a user can fix.

The command line prints its message on one line and exits with status 2; the
notebooks and the dashboard show it as text. Raise it with the argument's
name, the bad value, the valid choices and the fix, e.g.
`HybridError("unknown model 'cnnn'; choose one of: cnn, cnn_lstm, ...")`.
"""


class HybridError(ValueError):
    """A user-facing error: bad arguments, missing data, a diverged run."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`): stops a run as Ctrl-C does, but the command exits 143."""


def choices_error(what: str, value: object, choices) -> HybridError:
    """An error for a value outside a fixed set of choices."""
    listed = ", ".join(str(c) for c in choices)
    return HybridError(f"unknown {what} {value!r}; choose one of: {listed}")
