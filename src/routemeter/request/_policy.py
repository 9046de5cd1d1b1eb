"""What a route declares about itself at decoration: its service-level objectives and the model
its savings are measured against. Checked once, when the decorator runs: a bad value raises
there, never at a request."""

from __future__ import annotations

import math
from typing import Final

from routemeter.request._safe import acceptable

MAX_OBJECTIVE_S: Final = 86_400.0
"""Longest objective accepted (a day): anything longer is a unit mistake."""


def _objective(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"SLO {name}={value!r} is not allowed: use None or a number of seconds"
            f" greater than 0 and at most {MAX_OBJECTIVE_S:g}"
        )
    seconds = float(value)
    if not (0.0 < seconds <= MAX_OBJECTIVE_S) or math.isnan(seconds):
        raise ValueError(
            f"SLO {name}={value!r} is not allowed: use None or a number of seconds"
            f" greater than 0 and at most {MAX_OBJECTIVE_S:g}"
        )
    return seconds


class SLO:
    """A route's objectives: a request is good when it succeeds and meets every one given.

    ``ttft_s``: seconds to the first token sent to the client (a request that does not stream
    sends its first token with its answer, so its duration counts). ``duration_s``: seconds end
    to end. Each is ``None`` (no objective) or a number in (0, 86400].
    """

    __slots__ = ("duration_s", "ttft_s")

    def __init__(self, ttft_s: float | None = None, duration_s: float | None = None) -> None:
        self.ttft_s = _objective("ttft_s", ttft_s)
        self.duration_s = _objective("duration_s", duration_s)

    def __repr__(self) -> str:
        return f"SLO(ttft_s={self.ttft_s!r}, duration_s={self.duration_s!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SLO):
            return NotImplemented
        return (self.ttft_s, self.duration_s) == (other.ttft_s, other.duration_s)

    def __hash__(self) -> int:
        return hash((self.ttft_s, self.duration_s))


class Policy:
    """What ``@route(..., baseline_model=, slo=)`` declared, carried by each of its requests."""

    __slots__ = ("baseline_model", "duration_s", "ttft_s")

    def __init__(self, baseline_model: str | None, slo: SLO | None) -> None:
        self.baseline_model = baseline_model
        self.ttft_s = slo.ttft_s if slo is not None else None
        self.duration_s = slo.duration_s if slo is not None else None

    def met(self, duration: float, ttft: float | None) -> bool:
        """Whether a successful request of ``duration`` seconds (first token after ``ttft``,
        ``None`` when it did not stream) met every objective."""
        limit = self.duration_s
        if limit is not None and duration > limit:
            return False
        limit = self.ttft_s
        return limit is None or (duration if ttft is None else ttft) <= limit


def check_baseline(model: object) -> str | None:
    """A ``baseline_model`` argument, or ``ValueError`` naming what is allowed."""
    if model is None:
        return None
    if not isinstance(model, str) or not acceptable(model):
        raise ValueError(
            f"baseline_model {model!r} is not allowed: use None or a priced model id of 1-128"
            " characters from letters, digits and ._:/@+- (for example gpt-4o or"
            " claude-sonnet-4-5)"
        )
    return model


def policy(baseline_model: object, slo: object) -> Policy | None:
    """The checked policy of a route, ``None`` when it declares nothing."""
    baseline = check_baseline(baseline_model)
    if slo is not None and not isinstance(slo, SLO):
        raise ValueError(f"slo {slo!r} is not allowed: use None or routemeter.SLO(...)")
    if baseline is None and slo is None:
        return None
    return Policy(baseline, slo)
