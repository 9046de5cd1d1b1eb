"""``routemeter demo``: flags, a short run end to end, OTLP instead of /metrics, serve-only mode."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from routemeter.demo import cli
from support.otlp_receiver import OTLPReceiver

_READY_TIMEOUT_S = 20.0


def test_help_and_bad_flags_exit_like_a_cli(capsys):
    """--help exits 0 listing every flag; a bad value exits 2 naming it."""
    assert cli(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--duration", "--rate", "--port", "--host", "--seed", "--ledger", "--linger"):
        assert flag in out
    assert "--serve" in out
    assert "--no-progress" in out
    assert cli(["--rate", "0"]) == 2
    assert "--rate" in capsys.readouterr().err


def test_short_run_prints_where_to_look_and_writes_the_ledger(capsys, tmp_path):
    """A short run serves /metrics on the router's port, prints PromQL and a per-route table,
    and writes a ledger in which every request sent was answered."""
    path = tmp_path / "ledger.json"
    args = ["--duration", "1.5", "--rate", "20", "--port", "0", "--no-progress", "--seed", "3"]
    assert cli([*args, "--ledger", str(path)]) == 0
    out = capsys.readouterr().out
    router = re.search(r"router:\s+(http://127\.0\.0\.1:\d+)/v1/chat/completions", out)
    assert router is not None
    assert f"metrics: {router.group(1)}/metrics" in out
    assert "gen_ai_server_request_duration_seconds_count" in out
    assert "default" in out
    ledger = json.loads(path.read_text())
    assert ledger["sent"] == ledger["answered"] > 0
    assert ledger["transport_errors"] == []


def test_otlp_exporter_pushes_the_run_to_a_collector(monkeypatch, capsys, tmp_path):
    """With OTEL_METRICS_EXPORTER=otlp the run is pushed (flushed at exit), one request each."""
    path = tmp_path / "ledger.json"
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
        args = ["--duration", "1", "--rate", "15", "--port", "0", "--no-progress"]
        assert cli([*args, "--ledger", str(path)]) == 0
        points = receiver.latest("gen_ai.server.request.duration")
    assert f"pushed by OTLP to {receiver.http_metrics_url}" in capsys.readouterr().out
    assert sum(p["count"] for p in points) == json.loads(path.read_text())["answered"]


@contextlib.contextmanager
def _demo(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``routemeter demo`` in a child process, killed (by its id) if a test leaves it running."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, routemeter.demo as d; sys.exit(d.cli(sys.argv[1:]))",
         *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_serve_mode_runs_until_sigterm():
    """--serve answers until SIGTERM, then shuts down cleanly with status 0."""
    with _demo("--serve", "--port", "0", "--no-progress") as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        url = None
        while url is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(r"router:\s+(http://\S+?)/v1/", line)
            url = found.group(1) if found else None
        assert url is not None, proc.stderr.read() if proc.poll() is not None else "no URL"
        assert httpx.get(f"{url}/healthz", timeout=5).json()["status"] == "ok"
        assert "http_server_request_duration_seconds" in httpx.get(f"{url}/metrics").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_demo_without_duration_shows_the_dashboard_with_live_load_until_sigint():
    """Without --duration the demo prints the dashboard URL first, keeps the load going (the
    history grows while it runs) and ends on Ctrl-C with the summary and status 0."""
    with _demo("--port", "0", "--rate", "30", "--no-progress") as proc:
        assert proc.stdout is not None
        first = ""
        ready, _, _ = select.select([proc.stdout], [], [], _READY_TIMEOUT_S)
        if ready:
            first = proc.stdout.readline()
        found = re.fullmatch(r"dashboard: (http://\S+)/metrics/dashboard\n", first)
        assert found is not None, first or (proc.stderr.read() if proc.poll() is not None else "")
        url = found.group(1)
        assert "<html" in httpx.get(f"{url}/metrics/dashboard", timeout=5).text.lower()

        def served() -> int:
            doc = httpx.get(f"{url}/metrics/history?window=15m", timeout=5).json()
            return sum(sum(s["requests"]) for s in doc["series"])

        deadline = time.monotonic() + 20
        seen = [served()]
        while time.monotonic() < deadline and (len(seen) < 3 or seen[-1] <= seen[0]):
            time.sleep(0.5)
            seen.append(served())
        assert seen[-1] > seen[0], seen  # the load keeps going
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert "answered of" in out
