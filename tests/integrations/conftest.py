"""Integration tests run the real ``litellm`` package: no network, loopback only.

LiteLLM fetches a remote model price map at import unless told to use its bundled copy; this
directory's tests import it only after this conftest has set that.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest

LITELLM_WARNINGS = (
    # litellm's TypedDicts use typing.ReadOnly; pydantic warns each time it builds their schema.
    "ignore:Items? .* on TypedDict class .* (is|are) using the `ReadOnly` qualifier:UserWarning",
    # litellm reads pydantic's model_fields/model_computed_fields from instances (pydantic 2.11).
    "ignore:Accessing the 'model_.*' attribute on the instance is deprecated:DeprecationWarning",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Only this directory tolerates the warnings litellm itself causes (pyproject: error)."""
    here = str(config.rootpath / "tests" / "integrations")
    for item in items:
        if str(item.path).startswith(here):
            for spec in LITELLM_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))
