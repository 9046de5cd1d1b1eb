"""The last finished requests, kept for the recent-requests view: the records themselves, read
only when someone asks (a request pays one append), and the id each one answers to.

The id is the client's ``x-request-id`` when it is a plain token (the HTTP middleware checks it
and sets ``request_id`` around the app), else one generated here: a per-process random prefix and
a counter, unique across the workers of a server and cheap to make.
"""

from __future__ import annotations

import os
import re
from collections import deque
from contextvars import ContextVar
from itertools import count
from typing import TYPE_CHECKING, Final

from routemeter.request._safe import acceptable

if TYPE_CHECKING:
    from routemeter.request._record import Request

MAX_ID_LENGTH: Final = 64
_ID: Final = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,%d}" % (MAX_ID_LENGTH - 1))

_NAMING: Final = re.compile(
    r"[0-9a-f]{32,64}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
"""What ``acceptable`` refuses as an attribute but a request id is made of: UUIDs, hex ids."""

request_id: ContextVar[str | None] = ContextVar("routemeter_request_id", default=None)
"""The id of the HTTP request in flight in this context (the middleware sets it)."""

ring: deque[Request] | None = None
"""The last ``ROUTEMETER_RECENT_REQUESTS`` finished requests, oldest first; ``None``: off."""

_prefix = ""
_counter = count(1)


def _reseed() -> None:
    global _prefix, _counter
    _prefix = os.urandom(4).hex()
    _counter = count(1)


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """A request id unique across this server's processes (not a secret: it only names)."""
    return f"{_prefix}-{next(_counter):x}"


def client_id(value: bytes) -> str | None:
    """A client's ``x-request-id`` when it is 1-64 characters of letters, digits and ``._:-``
    (starting with a letter or digit) and not shaped like a key, a token or an address (UUIDs
    and hex ids are fine: they name requests); ``None``: generate one instead."""
    if _ID.fullmatch(value) is None:
        return None
    text = value.decode("ascii")
    if acceptable(text) or _NAMING.fullmatch(text) is not None:
        return text
    return None


def configure(size: int) -> None:
    """Keep the last ``size`` finished requests (0: none); what was kept before is dropped."""
    global ring
    ring = deque(maxlen=size) if size > 0 else None


def latest(limit: int) -> list[Request]:
    """Up to ``limit`` finished requests, newest first."""
    kept = ring
    if kept is None or limit <= 0:
        return []
    found = list(kept)  # a copy in one C call: appends from other threads cannot break it
    found.reverse()
    return found[:limit]


def find(request_id: str) -> Request | None:
    """The kept request with this id, or ``None`` (never kept, or since evicted)."""
    kept = ring
    if kept is None:
        return None
    for rec in reversed(list(kept)):
        if rec.id == request_id:
            return rec
    return None
