"""Internal failures are logged once per kind, then counted: telemetry never floods the app."""

from __future__ import annotations

import logging
import threading
from collections import Counter

_log = logging.getLogger("routemeter")
_lock = threading.Lock()
counts: Counter[str] = Counter()


def report(kind: str, exc: BaseException | None = None) -> None:
    """Log the first failure of a kind with its traceback; later ones only count."""
    try:
        with _lock:
            counts[kind] += 1
            first = counts[kind] == 1
        if first:
            _log.warning(
                "routemeter: %s failed; recording continues (further %s failures are counted,"
                " not logged)",
                kind,
                kind,
                exc_info=exc,
            )
    except Exception:  # logging itself failed: nothing left to do safely
        pass
