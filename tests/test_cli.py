"""The routemeter command: `config` shows effective values and sources, never secrets."""

from __future__ import annotations

from routemeter._cli import main


def test_config_shows_sources_and_redacts_headers(monkeypatch, capsys):
    """Each setting is printed with where it came from; header values are hidden."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=topsecret")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "topsecret" not in out
    assert "api-key=<redacted>" in out
    assert "env:OTEL_METRICS_EXPORTER" in out
    assert "http://collector:4318/v1/metrics" in out
    assert "prometheus_port" in out
    assert "default" in out


def test_config_bad_value_exits_2_with_message(monkeypatch, capsys):
    """A bad variable exits 2 and names the variable on stderr."""
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "70000")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "OTEL_EXPORTER_PROMETHEUS_PORT='70000'" in err
    assert "0 to 65535" in err
