"""Multi-worker servers: pushing OTLP, every worker's counts arrive under its own
service.instance.id and add up to the requests served; with the pull reader, several workers
never silently answer a scrape with one worker's numbers."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from support.otlp_receiver import OTLPReceiver

from .hostile import exposition_values, otlp_totals
from .servers import (
    TESTS_DIR,
    Server,
    clean_env,
    client,
    free_ports,
    gunicorn_argv,
    running,
    tally_pids,
    uvicorn_argv,
)

pytestmark = pytest.mark.integration

REQUESTS = 400
DURATION = "gen_ai.server.request.duration"


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        yield r


def otlp_env(receiver: OTLPReceiver) -> dict[str, str]:
    return {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        # process.pid on the Resource, to tie each service.instance.id to a worker
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process",
    }


def require_gunicorn() -> None:
    """Skip without gunicorn (a dev dependency), but fail under CI=true: CI never skips."""
    if importlib.util.find_spec("gunicorn") is None:
        message = "gunicorn is missing: pip install -e '.[dev]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def per_worker(receiver: OTLPReceiver) -> tuple[dict[int, int], dict[int, set[str]]]:
    """Exported request totals per worker pid, and the service.instance.ids each pid used."""
    points = receiver.points(DURATION)
    totals = otlp_totals(points, DURATION)
    pid_of = {p["resource"]["service.instance.id"]: p["resource"]["process.pid"] for p in points}
    by_pid: Counter[int] = Counter()
    ids: dict[int, set[str]] = {}
    for instance, total in totals.items():
        by_pid[pid_of[instance]] += total
        ids.setdefault(pid_of[instance], set()).add(instance)
    return dict(by_pid), ids


def assert_each_worker_exported_its_own(receiver: OTLPReceiver, served: Counter[int]) -> None:
    assert sum(served.values()) == REQUESTS
    assert len(served) >= 2, f"the kernel gave every connection to one worker: {served}"
    totals, ids = per_worker(receiver)
    print(f"\nserved per worker pid {dict(served)}; exported per pid {totals}")
    assert totals == dict(served)
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({i for v in ids.values() for i in v}) == len(served)


def serve_and_stop(server: Server) -> Counter[int]:
    served = asyncio.run(tally_pids(server.url, REQUESTS))
    server.signal()
    assert server.wait() == 0, server.output
    return served


def test_uvicorn_4_workers_push_exact_totals(receiver):
    """uvicorn --workers 4 over OTLP: own service.instance.id per worker, exact totals."""
    [port] = [free_ports(1)]
    argv = uvicorn_argv("reliability.apps:small", port, "--workers", "4")
    with running(argv, otlp_env(receiver), port) as server:
        served = serve_and_stop(server)
    assert_each_worker_exported_its_own(receiver, served)


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-import", "preload"])
def test_gunicorn_uvicorn_workers_push_exact_totals(receiver, preload):
    """gunicorn -w 2 with uvicorn workers (and --preload): own ids, exact totals."""
    require_gunicorn()
    port = free_ports(1)
    extra = ["-w", "2", *(["--preload"] if preload else [])]
    argv = gunicorn_argv("reliability.apps:small", port, *extra)
    with running(argv, otlp_env(receiver), port) as server:
        served = serve_and_stop(server)
    assert_each_worker_exported_its_own(receiver, served)


def pull_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        **extra,
    }


def wait_for_output(server: Server, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in server.output:
        assert time.monotonic() < deadline, f"{text!r} never printed:\n{server.output}"
        time.sleep(0.1)


def test_pull_reader_with_workers_on_one_port_refuses():
    """Two workers on one standalone /metrics port: setup() fails naming variable and fixes."""
    app_port, metrics_port = free_ports(1), free_ports(1)
    argv = uvicorn_argv("reliability.apps:small", app_port, "--workers", "2")
    with running(argv, pull_env(metrics_port), app_port) as server:
        wait_for_output(server, "routemeter._config.ConfigError")
    assert f"OTEL_EXPORTER_PROMETHEUS_HOST/PORT=127.0.0.1:{metrics_port}" in server.output
    assert "ROUTEMETER_PROMETHEUS_WORKER_PORTS" in server.output
    assert "OTEL_METRICS_EXPORTER=otlp" in server.output


def test_pull_reader_one_port_per_worker():
    """ROUTEMETER_PROMETHEUS_WORKER_PORTS=2: each worker serves its own numbers on its port."""
    app_port, metrics_port = free_ports(1), free_ports(2)
    env = pull_env(metrics_port, ROUTEMETER_PROMETHEUS_WORKER_PORTS="2")
    argv = uvicorn_argv("reliability.apps:small", app_port, "--workers", "2")
    with running(argv, env, app_port) as server:
        served = asyncio.run(tally_pids(server.url, REQUESTS))
        per_port = []
        for port in (metrics_port, metrics_port + 1):
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            counts = exposition_values(text, "gen_ai_server_request_duration_seconds_count")
            per_port.append(int(sum(v for _, v in counts)))
    assert sum(served.values()) == REQUESTS
    assert len(served) == 2, served
    assert sorted(per_port) == sorted(served.values())


async def pids_seen(url: str, want: int, budget: int = 400) -> set[int]:
    """Send requests until ``want`` distinct workers answered (at most ``budget``)."""
    seen: set[int] = set()
    async with client(url, 8) as http:
        for _ in range(budget // 8):
            answers = await asyncio.gather(*(http.get("/work") for _ in range(8)))
            seen |= {r.json()["pid"] for r in answers}
            if len(seen) >= want:
                break
    return seen


@pytest.mark.parametrize("workers", [1, 2])
def test_mounted_metrics_refuses_when_workers_share_the_port(workers):
    """Mounted /metrics answers 503 when workers share the app's port, 200 for one worker."""
    port = free_ports(1)
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "ROUTEMETER_PROMETHEUS_SERVER": "false"}
    argv = uvicorn_argv("reliability.apps:small", port, "--workers", str(workers))
    with running(argv, env, port) as server:
        assert len(asyncio.run(pids_seen(server.url, workers))) == workers
        statuses = Counter()
        bodies = set()
        for _ in range(10):
            r = httpx.get(f"{server.url}/metrics", timeout=10)
            statuses[r.status_code] += 1
            bodies.add(r.text[:40])
    if workers == 1:
        assert statuses == Counter({200: 10})
    else:
        assert statuses == Counter({503: 10}), bodies
        assert "workers sharing this port" in server.output
        assert "OTEL_METRICS_EXPORTER=otlp" in server.output


def test_forked_children_export_under_their_own_instance_id(receiver):
    """Children forked after setup() export under their own service.instance.id."""
    env = clean_env(otlp_env(receiver))
    result = subprocess.run(
        [sys.executable, "-m", "reliability.forking", "7", "11"],
        env={**env, "PYTHONPATH": str(TESTS_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    totals = otlp_totals(receiver.points(DURATION), DURATION)
    assert sorted(totals.values()) == [1, 7, 11], totals


def test_forked_child_of_a_standalone_server_warns_and_exits():
    """A child forked after the standalone /metrics server started is told so, and exits."""
    env = clean_env({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "0"})
    result = subprocess.run(
        [sys.executable, "-m", "reliability.forking", "3", "4"],
        env={**env, "PYTHONPATH": str(TESTS_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("setup() ran before this process was forked") == 2, result.stderr


def test_workers_sharing_a_port_and_a_history_file_answer_for_the_whole_server(tmp_path):
    """uvicorn --workers 2 on one port with ROUTEMETER_HISTORY_PATH: /metrics still refuses
    (one worker's numbers), but the dashboard, the history and the recent requests answer from
    the shared file, whichever worker is asked: every request of both workers, exactly."""
    port = free_ports(1)
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "ROUTEMETER_PROMETHEUS_SERVER": "false",
        "ROUTEMETER_HISTORY_PATH": str(tmp_path / "history.db"),
        "ROUTEMETER_HISTORY_RETENTION": "1s:10m,1m:1h",
    }
    argv = uvicorn_argv("reliability.apps:small", port, "--workers", "2")
    with running(argv, env, port) as server:

        async def drive() -> tuple[Counter[int], list[str]]:
            pids: Counter[int] = Counter()
            ids: list[str] = []
            async with client(server.url, 8) as http:
                for _ in range(REQUESTS // 8):
                    answers = await asyncio.gather(*(http.get("/work") for _ in range(8)))
                    pids.update(r.json()["pid"] for r in answers)
                    ids += [r.headers["x-request-id"] for r in answers]
            return pids, ids

        served, ids = asyncio.run(drive())
        assert len(served) == 2, served
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 503
        deadline = time.monotonic() + 20
        while True:  # each worker writes what it served at its next tick (every second)
            doc = httpx.get(f"{server.url}/metrics/history?window=15m", timeout=10).json()
            total = sum(sum(s["requests"]) for s in doc["series"])
            if total == REQUESTS or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        page = httpx.get(f"{server.url}/metrics/dashboard", timeout=10)
        found = [httpx.get(f"{server.url}/metrics/requests/{i}", timeout=10) for i in ids[-8:]]
    assert total == REQUESTS
    assert len(doc["instances"]) == 2
    assert page.status_code == 200
    assert [r.status_code for r in found] == [200] * 8
    assert {r.json()["route"] for r in found} == {"default"}
