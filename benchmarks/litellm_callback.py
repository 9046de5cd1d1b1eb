"""RoutemeterCallback on a real ``litellm.Router``: the CPU a callback adds per routed request.

A ``litellm.Router`` with three deployments of one model group, all on a loopback
OpenAI-compatible stub (a subprocess, so its CPU is not counted), called with sequential
``acompletion``. Conditions, in interleaved blocks (each round runs every condition once, in a
rotated order, so load changes on a shared machine hit them alike):

- ``none``: no callback at all (LiteLLM itself);
- ``noop``: a ``CustomLogger`` that does nothing: what LiteLLM spends on dispatching events to
  any callback, which no callback can save;
- ``routemeter``: ``RoutemeterCallback`` (with ``watch(router)``), recording into routemeter's
  aggregate recorder;
- ``prometheus``: LiteLLM's own ``PrometheusLogger`` (the ``"prometheus"`` callback), which
  runs without a licence.

Each block's figure is the process CPU time (``time.process_time``: every thread, LiteLLM's
logging worker and executor included) per request, the async callbacks flushed before the
block ends. The medians over rounds are printed per condition, with each callback's extra CPU
over ``none`` and the ratios between them. Run with ``python -m benchmarks.litellm_callback``
(``--block``, ``--rounds``).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks.e2e import stop

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

CONDITIONS = ("none", "noop", "routemeter", "prometheus")
MESSAGES = [{"role": "user", "content": "Say hello in one word."}]
DEPLOYMENTS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")

STUB = r"""
import asyncio, json, sys

BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1767225600,
    "model": "MODEL", "system_fingerprint": None,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500},
})


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = json.loads(await reader.readexactly(length))
            data = BODY.replace("MODEL", body.get("model", "")).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"x-ratelimit-remaining-requests: 499\r\nx-ratelimit-remaining-tokens: 149000\r\n"
                b"content-length: " + str(len(data)).encode() + b"\r\n\r\n" + data
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
"""


def start_stub() -> tuple[subprocess.Popen[str], int]:
    """The loopback stub in a child process, and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STUB], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        stop(proc)
        raise RuntimeError("the stub did not start")
    return proc, int(line)


def uninstall(litellm: Any, callbacks: list[Any]) -> None:
    """Remove callbacks from every list LiteLLM copies them into."""
    for callback in callbacks:
        litellm.logging_callback_manager.remove_callback_from_all_lists(callback)
    litellm.callbacks = []


async def block(router: Any, n: int) -> float:
    """CPU seconds per request over ``n`` sequential calls, the async callbacks flushed."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    cpu = time.process_time()
    for _ in range(n):
        await router.acompletion(model="bench", messages=MESSAGES)
    for _ in range(3):  # LiteLLM schedules the async success events after each call returns
        await asyncio.sleep(0.01)
        await GLOBAL_LOGGING_WORKER.flush()
    return (time.process_time() - cpu) / n


class Timed:
    """CPU time spent inside one callback's event handlers (this thread's clock per call)."""

    HANDLERS = (
        "log_pre_api_call",
        "log_success_event",
        "log_failure_event",
        "async_log_success_event",
        "async_log_failure_event",
    )

    def __init__(self, callback: Any) -> None:
        self.seconds = 0.0
        for name in self.HANDLERS:
            method = getattr(callback, name)
            wrapped = self._async(method) if inspect.iscoroutinefunction(method) else self._sync
            setattr(
                callback, name, wrapped(method) if wrapped is self._async else self._sync(method)
            )

    def _sync(self, method: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.thread_time() - start

        return timed

    def _async(self, method: Any) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return await method(*args, **kwargs)  # the handlers never suspend
            finally:
                self.seconds += time.thread_time() - start

        return timed


class Results:
    """Per-request CPU seconds of each condition, one sample per round, and the time inside
    routemeter's handlers."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {c: [] for c in CONDITIONS}
        self.handlers: list[float] = []
        self.recorded = 0
        self.made = 0


async def run(port: int, block_size: int, rounds: int, warmup: int) -> Results:
    import litellm
    from litellm.integrations.custom_logger import CustomLogger
    from litellm.integrations.prometheus import PrometheusLogger

    from routemeter.integrations.litellm import RoutemeterCallback
    from routemeter.testing import capture

    api_base = f"http://127.0.0.1:{port}/v1"
    router = litellm.Router(
        model_list=[
            {
                "model_name": "bench",
                "litellm_params": {"model": f"openai/{m}", "api_base": api_base, "api_key": "x"},
            }
            for m in DEPLOYMENTS
        ],
        num_retries=0,
    )
    results = Results()
    with capture() as metrics:
        ours = RoutemeterCallback()
        ours.watch(router)
        timed = Timed(ours)
        installed: dict[str, list[Any]] = {
            "none": [],
            "noop": [CustomLogger()],
            "routemeter": [ours],
            "prometheus": [PrometheusLogger()],
        }
        try:
            for condition in CONDITIONS:  # warm every path once: imports, caches, connections
                litellm.callbacks = list(installed[condition])
                await block(router, warmup)
                uninstall(litellm, installed[condition])
            for r in range(rounds):
                k = r % len(CONDITIONS)
                for condition in CONDITIONS[k:] + CONDITIONS[:k]:
                    litellm.callbacks = list(installed[condition])
                    before = timed.seconds
                    results.samples[condition].append(await block(router, block_size))
                    if condition == "routemeter":
                        results.handlers.append((timed.seconds - before) / block_size)
                    uninstall(litellm, installed[condition])
            results.recorded = metrics.count("gen_ai.server.request.duration")
            results.made = warmup + rounds * block_size
        finally:
            ours.close()
            router.discard()
    return results


def report(results: Results, block_size: int, rounds: int) -> None:
    """Medians over rounds; each callback's extra is paired with ``none`` of the same round."""
    import litellm

    version = getattr(litellm, "__version__", None) or _version("litellm")
    samples = results.samples
    print(
        f"litellm {version}: {rounds} rounds of {block_size} sequential Router.acompletion per"
        " condition, interleaved; process CPU per request (ms), median over rounds"
    )
    print(f"routemeter recorded {results.recorded:,} requests; its condition made {results.made:,}")
    none = samples["none"]
    extra = {
        c: statistics.median(x - n for x, n in zip(samples[c], none, strict=True)) * 1e3
        for c in CONDITIONS
    }
    base = statistics.median(none) * 1e3
    for c in CONDITIONS:
        line = f"  {c:<11} {statistics.median(samples[c]) * 1e3:7.3f}"
        if c != "none":
            line += f"   extra over none {extra[c]:+7.3f} ({extra[c] / base:+6.1%} of LiteLLM)"
        print(line)
    inside = statistics.median(results.handlers) * 1e3
    print(f"  routemeter's handlers themselves: {inside:.3f} ms per request")
    ours, theirs = extra["routemeter"], extra["prometheus"]
    if ours > 0 and theirs > 0:
        print(f"  prometheus / routemeter extra: {theirs / ours:.1f}x")
    if theirs > 0:
        print(f"  routemeter's handlers / prometheus extra: 1/{theirs / inside:.1f}")


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.litellm_callback")
    parser.add_argument("--block", type=int, default=50, help="requests per block")
    parser.add_argument("--rounds", type=int, default=16, help="blocks per condition")
    parser.add_argument("--warmup", type=int, default=50, help="requests per condition, once")
    args = parser.parse_args()
    proc, port = start_stub()
    try:
        results = asyncio.run(run(port, args.block, args.rounds, args.warmup))
    finally:
        stop(proc)
    report(results, args.block, args.rounds)


if __name__ == "__main__":
    main()
