"""Generated docs match the code: a stale docs/metrics.md or docs/configuration.md fails."""

from __future__ import annotations

import pytest

from routemeter._config import SETTINGS
from routemeter.recording import _instruments as ins
from routemeter.tools import _docs


@pytest.mark.parametrize("rel", sorted(_docs.GENERATED))
def test_generated_doc_is_fresh(rel: str):
    """The committed file equals what the generator renders now (run `make docs`)."""
    assert (_docs.ROOT / rel).read_text() == _docs.GENERATED[rel](), f"{rel} is stale"


def test_metrics_doc_lists_every_instrument_and_bucket():
    """Every instrument name, unit and bucket list appears in docs/metrics.md."""
    text = _docs.metrics_md()
    for spec in ins.ALL:
        assert f"`{spec.name}`" in text
        if spec.buckets:
            assert ", ".join(f"{b:g}" for b in spec.buckets) in text


def test_configuration_doc_lists_every_variable():
    """Every environment variable routemeter reads is documented."""
    text = _docs.configuration_md()
    for setting in SETTINGS:
        for name in setting.env:
            assert f"`{name}`" in text


def test_prometheus_names_follow_exporter_rules():
    """Seconds gain _seconds, curly units vanish, counters gain _total."""
    assert ins.prometheus_name(ins.SERVER_REQUEST_DURATION) == (
        "gen_ai_server_request_duration_seconds"
    )
    assert ins.prometheus_name(ins.CLIENT_TOKEN_USAGE) == "gen_ai_client_token_usage"
    assert ins.prometheus_name(ins.COST) == "llm_router_cost_usd_total"


def test_check_mode_reports_stale(tmp_path, monkeypatch):
    """--check exits 1 when a generated file differs."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "metrics.md").write_text("old")
    monkeypatch.setattr(_docs, "ROOT", tmp_path)
    assert _docs.main(["--check"]) == 1
    assert _docs.main(["--write"]) == 0
    assert _docs.main(["--check"]) == 0
