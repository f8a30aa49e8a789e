"""Turn SIGTERM and SIGINT into :class:`~fedopt.errors.RunInterrupted` while a run is active.

A run writes its directory under a temporary name and removes it on any exception. A
SIGTERM (``kill``, a batch scheduler, ``docker stop``) would otherwise end the process
without unwinding, leaving the hidden ``.NAME.partial-*`` folder behind. Inside
:class:`SignalGuard` both signals raise ``RunInterrupted(signum)`` in the main thread
instead, so the usual clean-up runs, and :meth:`SignalGuard.deferred` holds a signal back
while a few renames must finish together.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from fedopt.errors import RunInterrupted

HANDLED = (signal.SIGINT, signal.SIGTERM)
"""The signals a run turns into :class:`RunInterrupted`."""


class SignalGuard:
    """Context manager: SIGINT and SIGTERM raise ``RunInterrupted(signum)`` while active.

    Handlers are installed only in the main thread (Python allows no other); elsewhere
    the guard does nothing. The previous handlers are restored on exit.

    Parameters
    ----------
    signals
        The signals to handle (default: SIGINT and SIGTERM).
    """

    def __init__(self, signals: tuple[int, ...] = HANDLED) -> None:
        self.signals = tuple(signals)
        self._previous: dict[int, Any] = {}
        self._depth = 0
        self.pending: int | None = None

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            if self.pending is None:
                self.pending = signum
            return
        raise RunInterrupted(signum)

    def deferred(self, raise_pending: bool = True) -> _Deferred:
        """A block during which a signal is remembered instead of raised.

        Parameters
        ----------
        raise_pending
            When the block ends normally, raise ``RunInterrupted`` for a signal that
            arrived during it (``False``: forget it, e.g. while already failing).
        """
        return _Deferred(self, raise_pending)


class _Deferred:
    """The context manager returned by :meth:`SignalGuard.deferred`."""

    def __init__(self, guard: SignalGuard, raise_pending: bool) -> None:
        self.guard = guard
        self.raise_pending = raise_pending

    def __enter__(self) -> None:
        self.guard._depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        guard = self.guard
        guard._depth -= 1
        if guard._depth or guard.pending is None:
            return
        signum, guard.pending = guard.pending, None
        if exc_type is None and self.raise_pending:
            raise RunInterrupted(signum)
