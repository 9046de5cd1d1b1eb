"""The floor: routemeter's API and HTTP middleware with metric recording switched off.

What no recorder, however fast, could take away: ``@route`` and its request record, the calls a
handler makes on it (``requested``, ``decide``, ``attempt``, ``usage``), and ``instrument_app``'s
middleware (its header passes, its ``send`` wrapper, request ids, the recent-requests ring). The
active recorder keeps only its in-flight bookkeeping: a request's commit and an HTTP request's
end take it out of the in-flight sets and record nothing. Benchmarks only: a router with
recording off has no metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from routemeter.export import _setup
from routemeter.recording._http import ActiveCell
from routemeter.recording.aggregate._recorder import AggregateRecorder
from routemeter.request._record import Request


def switch_off() -> Callable[[], None]:
    """Switch the active recorder's (``setup()``'s) recording off; the function returned switches
    it back on."""
    handle = _setup.current_handle()
    recorder = None if handle is None else handle.recorder
    if not isinstance(recorder, AggregateRecorder):
        raise RuntimeError("the floor needs routemeter set up with its aggregate recorder")

    def commit(rec: Request) -> None:
        recorder.inflight.discard(rec)

    def http_end(began: Any, token: object, *_: Any) -> None:
        if isinstance(began, ActiveCell):
            began.inflight.discard(token)

    off: Any = recorder  # the instance's own attributes shadow the class's methods
    off.commit, off.http_end = commit, http_end

    def back_on() -> None:
        del off.commit, off.http_end

    return back_on


@contextmanager
def recording_off() -> Iterator[None]:
    """Within the block, the active recorder records nothing."""
    back_on = switch_off()
    try:
        yield
    finally:
        back_on()
