"""Start the real LiteLLM proxy with routemeter's callback, send it a few requests, print
routemeter's metrics, stop it.

    pip install 'routemeter[litellm]' 'litellm[proxy]'
    python examples/litellm_proxy/run.py

Everything stays on loopback: ``primary`` points at a port that refuses connections (so it
fails for real and falls back to ``backup``, LiteLLM's mock), ``/metrics`` is routemeter's
standalone server on a free port. Requests: one to ``backup``, one to ``primary`` (fallback),
one streamed, one to ``primary`` with fallbacks off (fails).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(url: str, key: str, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def routemeter_lines(exposition: str) -> list[str]:
    keep = ("gen_ai_", "llm_router_", "# HELP gen_ai_", "# TYPE gen_ai_")
    keep += ("# HELP llm_router_", "# TYPE llm_router_")
    return [line for line in exposition.splitlines() if line.startswith(keep)]


def requests_seen(exposition: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("gen_ai_server_request_duration_seconds_count{")
    )


def main() -> int:
    port, metrics_port = free_port(), free_port()
    key = "sk-" + secrets.token_hex(24)
    with socket.socket() as dead, tempfile.TemporaryDirectory() as tmp:
        dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": key,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PRIMARY_API_BASE": f"http://localhost:{dead.getsockname()[1]}/v1",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        }
        log = Path(tmp) / "proxy.log"
        with log.open("wb") as out:
            proxy = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "litellm.proxy.proxy_cli",
                    "--config",
                    str(HERE / "config.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=HERE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            return exercise(
                f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", key, proxy
            )
        except BaseException:
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()


def exercise(base: str, metrics: str, key: str, proxy: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proxy.poll() is not None:
            raise RuntimeError(f"the proxy exited with {proxy.returncode} before it was ready")
        try:
            get(f"{base}/health/liveliness")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy did not become ready") from None
            time.sleep(0.25)
    url = f"{base}/v1/chat/completions"
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    for body in (
        {**ask, "model": "backup"},
        {**ask, "model": "primary"},
        {**ask, "model": "backup", "stream": True},
        {**ask, "model": "primary", "fallbacks": []},
    ):
        status, _ = call(url, key, body)
        print("request", body["model"], "stream" if body.get("stream") else "-", "->", status)
    deadline = time.monotonic() + 15  # success events reach callbacks from a worker task
    while requests_seen(exposition := get(f"{metrics}/metrics")) < 4:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    print("--- routemeter metrics ---")
    print("\n".join(routemeter_lines(exposition)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
