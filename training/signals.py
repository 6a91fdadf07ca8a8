"""Stopping a training command in order on SIGTERM or SIGINT.

:func:`stop_on_signals` turns the signal into :class:`Stopped`, raised in the
main thread, so that the run in progress ends ``KILLED`` (:mod:`training.runs`)
and the command exits through the Ray shutdown of a normal exit, instead of
Ray's own handler exiting at once from wherever the main thread was.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived; raised in the main thread by :func:`stop_on_signals`.

    A ``BaseException``, like ``KeyboardInterrupt``, so that code catching
    ``Exception`` to report a failed series does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def stop_on_signals(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Raise :class:`Stopped` in the main thread on ``signums``; the old handlers come back after."""
    def handler(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    previous = {signum: signal.getsignal(signum) for signum in signums}
    for signum in signums:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def keep_signal_handlers(start, *args, **kwargs):
    """Call ``start`` and put back the SIGTERM and SIGINT handlers it replaced, if any were set.

    ``ray.init``, starting a local node, installs a SIGTERM handler of its own that
    kills the node and exits with status 1 at once, from wherever the main thread
    is; a training run wants the orderly stop of :func:`stop_on_signals`
    instead.
    """
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return start(*args, **kwargs)
    except SystemExit as exit:
        # ``ray.init``'s own handler, while it starts, exits with the signal's number.
        if exit.code == signal.SIGTERM and callable(kept[signal.SIGTERM]):
            kept[signal.SIGTERM](signal.SIGTERM, None)
        raise
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in kept.items():
                if handler not in (None, signal.SIG_DFL):
                    signal.signal(signum, handler)


@contextlib.contextmanager
def stopped_inside() -> Iterator[None]:
    """Raise the :class:`Stopped` that a C extension (Ray's core worker) turned into another error.

    A signal handler that raises while ``ray.wait`` waits in Cython comes out as
    ``SystemError: ... returned a result with an exception set``, the
    :class:`Stopped` as its context.
    """
    try:
        yield
    except Exception as error:
        if isinstance(error.__context__, Stopped):
            raise error.__context__ from None
        raise
