"""Error types and message helpers shared by every fedopt module.

Every input problem is raised as :class:`ConfigError` (a ``ValueError``) whose
message names the field, the offending value and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """Bad user input: the message names the field, the value and the fix."""


class EngineError(RuntimeError):
    """A worker failed or stalled at run time: the message names its nodes and cause."""


class RunDiverged(EngineError):
    """A run's loss or parameters became NaN or infinite (message: round, nodes, hint)."""


class RunInterrupted(Exception):
    """A run ended by a signal (SIGINT, SIGTERM); the CLI exits with ``128 + signum``.

    Parameters
    ----------
    signum
        The signal number that ended the run.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        import signal

        self.signum = int(signum)
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        super().__init__(message or f"interrupted by {name}")


def closest(name: str, known: Iterable[str]) -> str | None:
    """Return the known name closest to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_name_error(kind: str, name: str, known: Iterable[str], field: str) -> ConfigError:
    """Build the error for an unknown registered name, listing the known ones.

    Parameters
    ----------
    kind
        What was looked up, e.g. ``"algorithm"``.
    name
        The name the user gave.
    known
        Every registered name.
    field
        Dotted config path of the value, e.g. ``"algorithm.name"``.
    """
    known = sorted(known)
    hint = closest(name, known)
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    return ConfigError(
        f"{field}: unknown {kind} {name!r}.{did_you_mean} Known {kind}s: {', '.join(known)}."
    )
