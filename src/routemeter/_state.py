"""Process-wide state the hot path reads: one global, set by ``setup()``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routemeter._recorder import Recorder

recorder: Recorder | None = None
"""The active recorder; ``None`` until ``setup()`` (the decorator then only calls through)."""
