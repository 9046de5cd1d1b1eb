"""Shared fixtures: routemeter set up against an in-memory reader, torn down after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import routemeter
from routemeter.testing import Capture, capture


@pytest.fixture
def metrics() -> Iterator[Capture]:
    """routemeter recording into an in-memory reader only."""
    with capture() as c:
        yield c


@pytest.fixture(autouse=True)
def _no_leftover_setup() -> Iterator[None]:
    """Every test starts and ends without an active routemeter setup."""
    routemeter.shutdown()
    yield
    routemeter.shutdown()
