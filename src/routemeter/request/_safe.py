"""Which strings may ever become attribute values: well-formed, short and not secret-shaped.

The request API checks route labels and operations here at decoration time; the recorders'
allow-lists apply the same test to every value a request carries."""

from __future__ import annotations

import re
from typing import Final

MAX_VALUE_LENGTH: Final = 128

_WELL_FORMED: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+\-]{0,127}")
_SECRET_SHAPED: Final = re.compile(
    r"""
    (?:^|[^a-z0-9])(?:sk|pk|rk|ak)[-_][a-z0-9_-]{12,}   # OpenAI/Anthropic/Stripe-style keys
    | (?:^|[^a-z0-9])(?:AKIA|ASIA)[A-Z0-9]{12,}      # AWS access keys
    | (?:^|[^a-z0-9])(?:ghp|gho|ghs|ghu|github_pat|hf)_[A-Za-z0-9_]{10,}
    | (?:^|[^a-z0-9])(?:xox[abprs]|glpat)-[A-Za-z0-9_-]{10,}   # Slack, GitLab
    | (?:^|[^a-z0-9])AIza[0-9A-Za-z_-]{20,}           # Google API keys
    | (?:^|[^a-z0-9])ey[A-Za-z0-9_-]{10,}\.ey[A-Za-z0-9_-]{10,}  # JWTs
    | [^@\s]+@[^@\s]+\.[a-z]{2,}                       # emails
    | ^\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?$               # IPv4 (client addresses)
    | ^[0-9a-f]{32,}$                                  # bare hashes (key hashes, request ids)
    | ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$  # UUIDs (request ids)
    """,
    re.VERBOSE | re.IGNORECASE,
)


def acceptable(value: str) -> bool:
    """Whether a string may ever become an attribute value."""
    return (
        len(value) <= MAX_VALUE_LENGTH
        and _WELL_FORMED.fullmatch(value) is not None
        and _SECRET_SHAPED.search(value) is None
    )
