"""The runnable examples under examples/: each runs as its own process (loopback only), exits by
itself within a bounded time, and the metrics it prints are exactly what it did.

The examples start together on first use so their start-up costs (litellm's import, the proxy's
boot) overlap; each test then waits for its own."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .kit import require

pytestmark = pytest.mark.integration  # uvicorn servers and the LiteLLM proxy, on loopback

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIMEOUT_S = 150.0
MARKER = "--- routemeter metrics ---"

NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "fastapi_router.py": (("fastapi", "the FastAPI example"), ("uvicorn", "the FastAPI example")),
    "asyncio_router.py": (),
    "litellm_router.py": (("litellm", "the routemeter[litellm] extra"),),
    "litellm_proxy/run.py": (
        ("litellm", "the routemeter[litellm] extra"),
        ("orjson", "the LiteLLM proxy: litellm[proxy]"),
        ("apscheduler", "the LiteLLM proxy: litellm[proxy]"),
    ),
}


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    output: IO[bytes]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Run]]:
    """Every example whose packages are installed, started at once in its own process."""
    started: dict[str, Run] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (script, needs) in enumerate(NEEDS.items()):
            if not all(_installed(module) for module, _ in needs):
                continue
            output = Path(tmp, f"{i}.out").open("w+b")  # noqa: SIM115 - closed below
            process = subprocess.Popen(
                [sys.executable, str(EXAMPLES / script)],
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_env(),
            )
            started[script] = Run(process, output)
        yield started
        for run in started.values():
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait()
            run.output.close()


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ROUTEMETER_"))}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONWARNINGS"] = "ignore"  # third-party deprecation noise is not the example's output
    return env


def finish(runs: dict[str, Run], script: str) -> str:
    """Wait for ``script`` to exit by itself; its output, after checking it succeeded."""
    for module, why in NEEDS[script]:
        require(module, why)
    run = runs[script]
    try:
        code = run.process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        run.process.kill()
        pytest.fail(f"{script} did not exit by itself within {TIMEOUT_S} s")
    run.output.seek(0)
    output = run.output.read().decode(errors="replace")
    assert code == 0, f"{script} exited with {code}:\n{output[-4000:]}"
    assert MARKER in output, output[-4000:]
    return output


Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(output: str) -> Samples:
    """The printed exposition as sample name -> [(labels without otel_scope_*, value)]."""
    exposition = output.split(MARKER, 1)[1]
    found: Samples = defaultdict(list)
    for family in text_string_to_metric_families(exposition + "\n"):
        for s in family.samples:
            labels = {k: v for k, v in s.labels.items() if not k.startswith("otel_scope_") and v}
            found[s.name].append((labels, s.value))
    return found


def total(found: Samples, name: str, **labels: Any) -> float:
    """Sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for have, value in found.get(name, [])
        if all(have.get(k) == str(v) for k, v in labels.items())
    )


REQUESTS = "gen_ai_server_request_duration_seconds_count"
ATTEMPTS = "gen_ai_client_operation_duration_seconds_count"
FALLBACKS = "llm_router_fallbacks_total"
TTFT = "gen_ai_server_time_to_first_token_seconds_count"
TOKENS = "llm_router_usage_tokens_total"


def test_fastapi_router_example(runs):
    """FastAPI router: 4 requests, a 503 fallback, a stream and headroom, exactly."""
    found = samples(finish(runs, "fastapi_router.py"))
    assert total(found, REQUESTS) == 4
    assert total(found, REQUESTS, llm_router_route="default") == 3
    assert total(found, REQUESTS, llm_router_route="background") == 1
    assert total(found, REQUESTS, error_type="503") == 0
    assert found[FALLBACKS] == [
        (
            {
                "error_type": "503",
                "gen_ai_operation_name": "chat",
                "gen_ai_provider_name": "anthropic",
                "gen_ai_request_model": "claude-3-5-haiku-20241022",
                "llm_router_fallback_from_model": "gpt-4o-mini",
                "llm_router_fallback_from_provider": "openai",
                "llm_router_route": "default",
            },
            1.0,
        )
    ]
    assert total(found, ATTEMPTS) == 5
    assert total(found, ATTEMPTS, error_type="503") == 1
    assert total(found, TTFT) == 1
    assert total(found, "gen_ai_client_operation_time_to_first_chunk_seconds_count") == 1
    assert total(found, TOKENS, gen_ai_token_type="input") == 4 * 12
    assert total(found, TOKENS, gen_ai_token_type="output") == 4 * 3
    assert (
        total(found, "llm_router_ratelimit_remaining_requests", gen_ai_provider_name="openai") == 99
    )
    assert total(found, "llm_router_ratelimit_remaining_tokens", gen_ai_provider_name="openai") == (
        50000
    )


def test_asyncio_router_example(runs):
    """asyncio router: fallbacks, a cooldown, a cache hit, its own 429 and a stream, exactly."""
    found = samples(finish(runs, "asyncio_router.py"))
    assert total(found, REQUESTS) == 9
    assert total(found, REQUESTS, error_type="429") == 1
    assert total(found, "llm_router_ratelimit_rejections_total") == 1
    assert (
        total(found, FALLBACKS, error_type="503", llm_router_fallback_from_provider="openai") == 2
    )
    assert total(found, "llm_router_cooldowns_total", gen_ai_provider_name="openai") == 1
    assert total(found, "llm_router_cache_lookups_total", llm_router_cache_result="hit") == 1
    assert total(found, "llm_router_cache_lookups_total", llm_router_cache_result="miss") == 6
    assert total(found, ATTEMPTS, gen_ai_provider_name="openai") == 2
    assert total(found, ATTEMPTS, gen_ai_provider_name="anthropic") == 7  # 6 answers, 1 stream
    assert total(found, TTFT) == 1


def test_litellm_router_example(runs):
    """litellm.Router in asyncio: a real fallback, a stream, a failure without fallbacks."""
    found = samples(finish(runs, "litellm_router.py"))
    assert total(found, REQUESTS) == 3
    assert total(found, REQUESTS, llm_router_route="primary") == 2
    assert total(found, REQUESTS, llm_router_route="backup") == 1
    assert total(found, REQUESTS, llm_router_route="primary", error_type="500") == 1
    assert (
        total(found, FALLBACKS, error_type="500", llm_router_fallback_from_model="gpt-4o-mini") == 1
    )
    assert total(found, ATTEMPTS) == 4
    assert total(found, TTFT, llm_router_route="backup") == 1


def test_litellm_proxy_example(runs):
    """The real LiteLLM proxy: 4 requests, a fallback, a stream, a failure, exactly."""
    found = samples(finish(runs, "litellm_proxy/run.py"))
    assert total(found, REQUESTS) == 4
    assert total(found, REQUESTS, llm_router_route="backup") == 2
    assert total(found, REQUESTS, llm_router_route="primary") == 2
    assert total(found, REQUESTS, llm_router_route="primary", error_type="500") == 1
    assert (
        total(found, FALLBACKS, error_type="500", llm_router_fallback_from_provider="openai") == 1
    )
    assert total(found, ATTEMPTS) == 5
    assert total(found, TTFT) == 1
