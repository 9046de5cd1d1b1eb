"""Harness around the real ``prometheus`` and ``promtool`` binaries.

Exposition is only proven correct when real Prometheus scrapes it and PromQL sees the values, so
integration tests run the actual server on loopback instead of parsing text themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import pytest

from .net import free_port

JOB = "routemeter"
_READY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_HTTP_TIMEOUT_S = 10.0
_START_ATTEMPTS = 3


class PrometheusError(RuntimeError):
    """Prometheus refused a request or failed to start; the message carries its own words."""


def have_prometheus() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def require_prometheus() -> None:
    """Skip when the binaries are missing, but fail under CI=true: CI must never skip silently."""
    if have_prometheus():
        return
    message = "prometheus/promtool binaries not found on PATH (Debian: apt-get install prometheus)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true so integration tests may not skip")
    pytest.skip(message)


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PrometheusError(f"{name} not found on PATH (Debian: apt-get install prometheus)")
    return path


def promtool_check_metrics(text: str) -> tuple[int, str]:
    """Run ``promtool check metrics`` on an exposition; return (exit code, stdout+stderr)."""
    proc = subprocess.run(
        [_binary("promtool"), "check", "metrics"],
        input=text.encode(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=30,
        check=False,
    )
    return proc.returncode, proc.stdout.decode(errors="replace")


class PrometheusServer:
    """A throwaway Prometheus scraping ``targets`` (``"127.0.0.1:PORT"``) as job ``routemeter``.

    ``extra_config`` is merged into that scrape job (e.g. ``{"honor_labels": True}``); its config
    file is JSON, which Prometheus reads as YAML. The API is on ``url``; stderr is kept in
    ``log_path`` and its tail is attached to every start failure.
    """

    def __init__(
        self,
        targets: list[str],
        scrape_interval: str = "1s",
        extra_config: dict[str, Any] | None = None,
        rule_files: list[Path] | None = None,
        *,
        metrics_path: str = "/metrics",
        bearer_token: str | None = None,
        flags: Sequence[str] = (),
    ) -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.extra_config = dict(extra_config or {})
        self.rule_files = [Path(p).resolve() for p in rule_files or []]
        self.metrics_path = metrics_path
        self.bearer_token = bearer_token
        self.flags = list(flags)
        """Extra command-line flags, e.g. ``--enable-feature=exemplar-storage``."""
        self.port = 0
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        if self.port == 0:
            raise PrometheusError("PrometheusServer is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        assert self._tmp is not None, "PrometheusServer is not running"
        return self._tmp / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None, "PrometheusServer is not running"
        return self._tmp / "prometheus.log"

    def config(self) -> dict[str, Any]:
        job: dict[str, Any] = {
            "job_name": JOB,
            "scrape_interval": self.scrape_interval,
            "scrape_timeout": self.scrape_interval,
            "metrics_path": self.metrics_path,
            "static_configs": [{"targets": self.targets}],
        }
        if self.bearer_token is not None:
            job["authorization"] = {"type": "Bearer", "credentials": self.bearer_token}
        job.update(self.extra_config)
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [job],
        }

    def _write_config(self) -> None:
        self.config_path.write_text(json.dumps(self.config(), indent=2))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        binary = _binary("prometheus")
        self._tmp = Path(tempfile.mkdtemp(prefix="routemeter-prom-"))
        try:
            self._write_config()
            # free_port() can race with another process; a lost race shows as an early exit.
            for attempt in range(_START_ATTEMPTS):
                if self._launch(binary, last_attempt=attempt == _START_ATTEMPTS - 1):
                    return
        except BaseException:
            self.stop()
            raise

    def _launch(self, binary: str, last_attempt: bool) -> bool:
        self.port = free_port()
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.config_path.parent / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                *self.flags,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                if last_attempt or "address already in use" not in self.log_tail():
                    raise PrometheusError(
                        f"prometheus exited with {code} during start-up:\n{self.log_tail()}"
                    )
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise PrometheusError(
            f"prometheus not ready within {_READY_TIMEOUT_S}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, bounded wait, then SIGKILL; remove the temp dir. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.port = 0

    def log_tail(self, lines: int = 40) -> str:
        if self._tmp is None or not self.log_path.exists():
            return "(no prometheus log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _request(self, path: str, data: dict[str, str] | None = None) -> bytes:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=_HTTP_TIMEOUT_S) as resp:
                payload: bytes = resp.read()
                return payload
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            exc.close()
            try:
                parsed = json.loads(detail)
                detail = f"{parsed.get('errorType')}: {parsed.get('error')}"
            except ValueError:
                pass
            raise PrometheusError(f"POST {path} -> {exc.code}: {detail}") from None

    def query(self, promql: str, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query; vector/matrix results as Prometheus returns them, scalars wrapped."""
        params = {"query": promql}
        if time is not None:
            params["time"] = f"{time:.3f}"
        payload = json.loads(self._request("/api/v1/query", params))
        if payload.get("status") != "success":
            raise PrometheusError(f"query {promql!r} failed: {payload}")
        data = payload["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def exemplars(self, promql: str, start: float, end: float) -> list[dict[str, Any]]:
        """``/api/v1/query_exemplars`` (needs ``--enable-feature=exemplar-storage``)."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        payload = json.loads(self._request("/api/v1/query_exemplars", params))
        if payload.get("status") != "success":
            raise PrometheusError(f"exemplars {promql!r} failed: {payload}")
        result: list[dict[str, Any]] = payload["data"]
        return result

    def scalar(self, promql: str) -> float:
        """Sum of the instant-vector values (0.0 when empty; use ``query`` to tell apart)."""
        return sum(float(r["value"][1]) for r in self.query(promql) if "value" in r)

    def wait_for_scrape(self, min_scrapes: int = 1, timeout_s: float = 30.0) -> None:
        """Wait until every target was scraped ``min_scrapes`` times after this call, all up.

        Counts ``up`` samples stamped after the call: ``up`` is committed with the scraped
        samples, so once it is visible, so is everything that scrape saw.
        """
        since = time.time()
        deadline = time.monotonic() + timeout_s
        status: dict[str, tuple[int, float | None]] = {}
        while True:
            now = time.time()
            window_ms = max(1, int((now - since) * 1000))
            counts = {
                r["metric"].get("instance", ""): int(float(r["value"][1]))
                for r in self.query(f'count_over_time(up{{job="{JOB}"}}[{window_ms}ms])', now)
            }
            ups = {
                r["metric"].get("instance", ""): float(r["value"][1])
                for r in self.query(f'up{{job="{JOB}"}}', now)
            }
            status = {t: (counts.get(t, 0), ups.get(t)) for t in self.targets}
            if all(n >= min_scrapes and up == 1 for n, up in status.values()):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        raise TimeoutError(
            f"Prometheus did not scrape every target {min_scrapes}x (up=1) within {timeout_s}s; "
            f"(scrapes, up) per target: {status}; targets API: {self.targets_health()}"
        )

    def targets_health(self) -> list[dict[str, Any]]:
        """Active targets as the targets API reports them (health, lastError, lastScrape)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=_HTTP_TIMEOUT_S) as r:
            active = json.loads(r.read())["data"]["activeTargets"]
        return [
            {k: t.get(k) for k in ("scrapeUrl", "health", "lastError", "lastScrape")}
            for t in active
        ]

    def reload(self, targets: list[str] | None = None) -> None:
        """Rewrite the config (after changing attributes or ``targets``) and hot-reload it."""
        if targets is not None:
            self.targets = list(targets)
        self._write_config()
        self._request("/-/reload", {})
