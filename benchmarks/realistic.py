"""The realistic per-request path, in process: an async handler on an event loop whose simulated
upstream returns a provider response, with the usage read from that response.

Four response shapes, each built fresh per request as a client library would: an OpenAI chat
completion dict, an Anthropic message dict (cache fields included), an object with attributes
(a SimpleNamespace shaped like the openai SDK's ``ChatCompletion``) and the openai SDK's own
``ChatCompletion`` (a pydantic model, what ``client.chat.completions.create`` returns).
Contenders:

- ``bare``: the handler alone (reads the model, awaits the upstream, returns its response);
- ``routemeter``: ``@routemeter.route`` with ``requested``, ``decide``/``choose``, one
  ``attempt`` and ``a.usage(resp)``;
- ``floor``: ``routemeter``'s handler with metric recording switched off (``benchmarks._floor``):
  the decorator and the request API alone, what no recorder could take away;
- ``raw OTel SDK``: the same facts straight onto SDK instruments, one call per measurement,
  with the token counts and the response model read from the response by hand (as in
  ``python -m benchmarks``' raw_sdk_request).

Median of ``--repeats`` rounds of ``--loops`` requests, contenders round-robin. Run with
``python -m benchmarks.realistic``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk

import routemeter
from benchmarks.__main__ import raw_instruments
from benchmarks._floor import recording_off
from routemeter.testing import capture

Upstream = Callable[[dict[str, Any]], Awaitable[Any]]
Handler = Callable[[dict[str, Any]], Awaitable[Any]]
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Say hello in one word."}]}


async def openai_dict(body: dict[str, Any]) -> Any:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    }


async def openai_sdk(body: dict[str, Any]) -> Any:
    return ChatCompletion.model_validate(await openai_dict(body))


async def anthropic_dict(body: dict[str, Any]) -> Any:
    return {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-latest",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 1200,
            "output_tokens": 300,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


async def openai_object(body: dict[str, Any]) -> Any:
    ns = SimpleNamespace
    return ns(
        id="chatcmpl-bench",
        object="chat.completion",
        created=1767225600,
        model="gpt-4o-mini",
        choices=[ns(index=0, message=ns(role="assistant", content="Hello!"), finish_reason="stop")],
        usage=ns(
            prompt_tokens=1200,
            completion_tokens=300,
            total_tokens=1500,
            prompt_tokens_details=ns(cached_tokens=0, audio_tokens=0),
            completion_tokens_details=ns(reasoning_tokens=0, audio_tokens=0),
        ),
    )


# shape -> (provider, model, server address, upstream, how a hand-written router reads usage)
def _openai_tokens(resp: Any) -> tuple[int, int, str]:
    u = resp["usage"]
    return u["prompt_tokens"], u["completion_tokens"], resp["model"]


def _anthropic_tokens(resp: Any) -> tuple[int, int, str]:
    u = resp["usage"]
    cached = u.get("cache_read_input_tokens") or 0
    written = u.get("cache_creation_input_tokens") or 0
    return u["input_tokens"] + cached + written, u["output_tokens"], resp["model"]


def _object_tokens(resp: Any) -> tuple[int, int, str]:
    u = resp.usage
    return u.prompt_tokens, u.completion_tokens, resp.model


SHAPES: dict[str, tuple[str, str, str, Upstream, Callable[[Any], tuple[int, int, str]]]] = {
    "OpenAI dict": ("openai", "gpt-4o-mini", "api.openai.com", openai_dict, _openai_tokens),
    "Anthropic dict": (
        "anthropic",
        "claude-3-5-haiku-latest",
        "api.anthropic.com",
        anthropic_dict,
        _anthropic_tokens,
    ),
    "object (attributes)": (
        "openai",
        "gpt-4o-mini",
        "api.openai.com",
        openai_object,
        _object_tokens,
    ),
    "openai SDK object": ("openai", "gpt-4o-mini", "api.openai.com", openai_sdk, _object_tokens),
}
# per-token prices, looked up once by the hand-written router: (input, output) USD per token
PRICES = {"gpt-4o-mini": (0.15e-6, 0.6e-6), "claude-3-5-haiku-latest": (0.8e-6, 4e-6)}


def bare(shape: str) -> Handler:
    upstream = SHAPES[shape][3]

    async def handler(body: dict[str, Any]) -> Any:
        _ = body["model"]
        return await upstream(body)

    return handler


def routed(shape: str) -> Handler:
    provider, model, server, upstream, _ = SHAPES[shape]

    @routemeter.route("default")
    async def handler(body: dict[str, Any]) -> Any:
        rec = routemeter.current()
        rec.requested(body["model"])
        with rec.decide() as d:
            d.choose(provider, model, "default")
        with rec.attempt(provider, model, server_address=server) as a:
            resp = await upstream(body)
            a.usage(resp)
        return resp

    return handler


def raw_sdk(shape: str) -> Handler:
    """The same facts recorded straight onto SDK instruments, one call per measurement."""
    provider, model, server, upstream, read = SHAPES[shape]
    price_in, price_out = PRICES[model]
    h, c, active = raw_instruments()
    base = {"llm.router.route": "default", "gen_ai.operation.name": "chat"}

    async def handler(body: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        active.add(1, base)
        requested = body["model"]
        d0 = time.perf_counter()
        decision = {
            **base,
            "gen_ai.request.model": requested,
            "llm.router.target.provider": provider,
            "llm.router.target.model": model,
            "llm.router.reason": "default",
        }
        h["llm.router.decision.duration"].record(time.perf_counter() - d0, base)
        c["llm.router.decisions"].add(1, decision)
        a0 = time.perf_counter()
        resp = await upstream(body)
        input_tokens, output_tokens, response_model = read(resp)
        attempt = {
            **base,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": response_model,
        }
        client = {**attempt, "server.address": server}
        h["gen_ai.client.operation.duration"].record(time.perf_counter() - a0, client)
        h["gen_ai.client.token.usage"].record(
            input_tokens, {**client, "gen_ai.token.type": "input"}
        )
        h["gen_ai.client.token.usage"].record(
            output_tokens, {**client, "gen_ai.token.type": "output"}
        )
        c["llm.router.usage.tokens"].add(input_tokens, {**attempt, "gen_ai.token.type": "input"})
        c["llm.router.usage.tokens"].add(output_tokens, {**attempt, "gen_ai.token.type": "output"})
        c["llm.router.cost.usd"].add(input_tokens * price_in + output_tokens * price_out, attempt)
        server_attrs = {
            **base,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": requested,
            "gen_ai.response.model": response_model,
        }
        h["gen_ai.server.request.duration"].record(time.perf_counter() - t0, server_attrs)
        active.add(-1, base)
        return resp

    return handler


STREAM_CHUNKS = 100


def chunk_kinds() -> dict[str, Any]:
    """One streamed chunk per kind, as a client library hands them over: none (``a.chunk()``),
    an OpenAI chat chunk as a dict, the openai SDK's ``ChatCompletionChunk``."""
    raw = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}],
    }
    return {"no object": None, "dict": raw, "openai SDK": ChatCompletionChunk.model_validate(raw)}


def streamed(kind: str, chunk: Any) -> Handler:
    """A routed request relaying a stream of ``STREAM_CHUNKS`` upstream chunks; ``bare``: the
    same loop unrouted."""
    chunks = [chunk] * STREAM_CHUNKS

    if kind == "bare":

        async def bare_handler(body: dict[str, Any]) -> Any:
            n = 0
            for _ in chunks:
                n += 1
            return n

        return bare_handler

    @routemeter.route("stream")
    async def handler(body: dict[str, Any]) -> Any:
        with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
            for c in chunks:
                if c is None:
                    a.chunk()
                else:
                    a.chunk(c)
        return None

    return handler


async def _batch(handler: Handler, loops: int) -> float:
    body = BODY
    start = time.perf_counter()
    for _ in range(loops):
        await handler(body)
    return (time.perf_counter() - start) / loops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.realistic")
    parser.add_argument("--loops", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    names = ("bare", "routemeter", "floor", "raw OTel SDK")
    makers = {"bare": bare, "routemeter": routed, "floor": routed, "raw OTel SDK": raw_sdk}
    contenders = {(shape, name): makers[name](shape) for shape in SHAPES for name in names}
    kinds = chunk_kinds()
    for kind, chunk in kinds.items():
        contenders[("stream", kind)] = streamed(kind, chunk)
    contenders[("stream", "bare")] = streamed("bare", None)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in contenders}

    def run(key: tuple[str, str], loops: int) -> float:
        if key[1] != "floor":
            return loop.run_until_complete(_batch(contenders[key], loops))
        with recording_off():
            return loop.run_until_complete(_batch(contenders[key], loops))

    try:
        with capture():
            for key in contenders:  # warm: first-seen attribute sets, prices
                run(key, 50)
            for _ in range(args.repeats):  # round-robin, so load changes hit all alike
                for key in contenders:
                    samples[key].append(run(key, args.loops))
    finally:
        loop.close()
    us = {key: statistics.median(s) for key, s in samples.items()}
    print(
        f"async handler on an asyncio event loop, usage read from the response"
        f" (median of {args.repeats} x {args.loops}):"
    )
    print(
        f"{'response shape':20} {'bare µs':>8} {'routemeter µs':>14} {'floor µs':>9}"
        f" {'raw SDK µs':>11} {'raw/routemeter':>15} {'added: raw/routemeter':>22}"
        f" {'raw/floor':>10}"
    )
    for shape in SHAPES:
        b, r, f, s = (us[shape, n] for n in names)
        print(
            f"{shape:20} {b:8.2f} {r:14.2f} {f:9.2f} {s:11.2f} {s / r:14.1f}x"
            f" {(s - b) / (r - b):21.1f}x {s / f:9.1f}x"
        )
    print("(added: what each adds to the bare handler, response building excluded)")
    print(
        "(floor: routemeter with metric recording switched off; raw/floor bounds what any"
        " recorder could reach)"
    )
    print(f"\nper streamed chunk, a routed request relaying {STREAM_CHUNKS} chunks:")
    bare_loop = us["stream", "bare"]
    for kind in kinds:
        per = (us["stream", kind] - bare_loop) / STREAM_CHUNKS
        print(f"  a.chunk({'' if kind == 'no object' else kind + ' chunk'}): {per:.2f} µs")


if __name__ == "__main__":
    main()
