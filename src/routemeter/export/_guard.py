"""Guards of the /metrics endpoints, standalone and mounted alike: the optional bearer token
and the loopback test behind the exposure warning."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import threading
from typing import Final

_log = logging.getLogger("routemeter")

UNAUTHORIZED_BODY: Final = (
    b"routemeter: this endpoint needs the header 'Authorization: Bearer <token>' with the"
    b" ROUTEMETER_METRICS_TOKEN the application was given\n"
)
CHALLENGE: Final = 'Bearer realm="routemeter"'
TOKEN_HINT: Final = (
    "set ROUTEMETER_METRICS_TOKEN (16+ characters, e.g. `openssl rand -hex 32`) and give"
    " Prometheus the same value (scrape config `authorization: {credentials_file: ...}`)"
)


BASIC_CHALLENGE: Final = 'Basic realm="routemeter", charset="UTF-8"'


def challenge(path: str) -> str:
    """The ``WWW-Authenticate`` challenge: Basic for the dashboard, so a browser asks for the
    token (any user name, the token as password) and sends it on the page's own requests;
    Bearer everywhere else."""
    return BASIC_CHALLENGE if path.endswith("/dashboard") else CHALLENGE


def authorized(header: str | bytes | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>``, or Basic credentials
    whose password is the token (constant-time compares)."""
    if not header:
        return False
    raw = header if isinstance(header, bytes) else header.encode("latin-1", "replace")
    scheme, _, credentials = raw.strip().partition(b" ")
    scheme = scheme.lower()
    if scheme == b"basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        credentials = decoded.partition(b":")[2]
    elif scheme != b"bearer":
        return False
    return hmac.compare_digest(credentials.strip(), token.encode("ascii"))


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address; anything else (``0.0.0.0``, a name) is exposed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str, *args: object) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    _log.warning(message, *args)
