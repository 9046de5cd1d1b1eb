"""A FastAPI LLM router instrumented with routemeter.

    python examples/fastapi_router.py

Starts two fake OpenAI-compatible providers and the router on loopback, sends four requests
(one served directly, one that falls back because the first provider answers 503, one on the
``background`` route, one streamed), prints the router's own ``/metrics`` (routemeter's
families) and exits. Needs ``fastapi``, ``uvicorn`` and ``httpx``; no network.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

import routemeter

# ---- two fake providers, one loopback server -------------------------------------------------

providers = FastAPI()
HEADROOM = {"x-ratelimit-remaining-requests": "99", "x-ratelimit-remaining-tokens": "50000"}


@providers.post("/{provider}/v1/chat/completions")
async def fake_provider(provider: str, request: Request) -> Any:
    """Answers like OpenAI's chat completions API; ``x-fail: <provider>`` makes it answer 503."""
    body = await request.json()
    if request.headers.get("x-fail") == provider:
        return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    if body.get("stream"):
        return StreamingResponse(
            _fake_stream(body["model"], usage), media_type="text/event-stream", headers=HEADROOM
        )
    message = {"role": "assistant", "content": f"hello from {provider}"}
    return JSONResponse(
        {
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        },
        headers=HEADROOM,
    )


async def _fake_stream(model: str, usage: dict[str, int]) -> AsyncIterator[str]:
    for text in ("hel", "lo", "!"):
        chunk = {"object": "chat.completion.chunk", "model": model}
        chunk["choices"] = [{"index": 0, "delta": {"content": text}}]
        yield f"data: {json.dumps(chunk)}\n\n"
    yield f"data: {json.dumps({'model': model, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


# ---- the router ------------------------------------------------------------------------------

CHAINS = {  # route label -> (provider, model) to try, in order
    "default": [("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku-20241022")],
    "background": [("anthropic", "claude-3-5-haiku-20241022")],
}
upstream = httpx.AsyncClient()  # base_url set in main(), once the providers listen
app = FastAPI()


async def _complete(label: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    """Try the label's chain in order; a failed provider falls back to the next one."""
    rec = routemeter.current()
    rec.requested(body.get("model"))
    chain = CHAINS[label]
    with rec.decide() as d:
        d.choose(*chain[0], reason=label)
    for provider, model in chain:
        try:
            with rec.attempt(provider, model, server_address="localhost") as a:
                response = await upstream.post(
                    f"/{provider}/v1/chat/completions",
                    json={**body, "model": model},
                    headers=headers,
                )
                routemeter.ratelimit_from_headers(provider, model, response)
                response.raise_for_status()  # a 503 raises: the attempt records error.type=503
                result = response.json()
                a.usage(result)
                return result
        except httpx.HTTPStatusError:
            continue
    rec.error(502)
    return JSONResponse({"error": "every provider failed"}, status_code=502)


@routemeter.route("default")
async def default_route(body: dict[str, Any], headers: dict[str, str]) -> Any:
    return await _complete("default", body, headers)


@routemeter.route("background")
async def background_route(body: dict[str, Any], headers: dict[str, str]) -> Any:
    return await _complete("background", body, headers)


@routemeter.route("default")
async def default_stream(body: dict[str, Any]) -> AsyncIterator[str]:
    """Streams from the first provider; each upstream event is marked as a chunk."""
    rec = routemeter.current()
    rec.requested(body.get("model"))
    provider, model = CHAINS["default"][0]
    rec.choose(provider, model, "default")
    with rec.attempt(provider, model, server_address="localhost") as a:
        async with upstream.stream(
            "POST", f"/{provider}/v1/chat/completions", json={**body, "model": model}
        ) as response:
            routemeter.ratelimit_from_headers(provider, model, response)
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    a.chunk(json.loads(line[len("data: ") :]))  # reads usage in the last one
                if line:
                    yield line + "\n\n"


@app.post("/v1/chat/completions")
async def chat(request: Request) -> Any:
    body = await request.json()
    forwarded = {k: v for k, v in request.headers.items() if k == "x-fail"}
    if body.get("stream"):
        return StreamingResponse(default_stream(body), media_type="text/event-stream")
    label = "background" if body.get("metadata", {}).get("background") else "default"
    handler = background_route if label == "background" else default_route
    return await handler(body, forwarded)


# ---- run it ------------------------------------------------------------------------------------


async def _serve(asgi: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    server = uvicorn.Server(
        uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # re-raise why it could not start
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://localhost:{port}"


async def main() -> int:
    routemeter.setup(prometheus_server=False, service_name="fastapi-router-example")
    router_app = routemeter.instrument_app(app)  # HTTP metrics and GET /metrics
    provider_server, provider_task, providers_url = await _serve(providers)
    router_server, router_task, router_url = await _serve(router_app)
    upstream.base_url = httpx.URL(providers_url)
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with httpx.AsyncClient(base_url=router_url, timeout=10) as client:
            url = "/v1/chat/completions"
            answers = [
                await client.post(url, json=ask),
                await client.post(url, json=ask, headers={"x-fail": "openai"}),
                await client.post(url, json={**ask, "metadata": {"background": True}}),
            ]
            async with client.stream("POST", url, json={**ask, "stream": True}) as stream:
                streamed = [line async for line in stream.aiter_lines() if line]
            for answer in answers:
                print("answer", answer.status_code, answer.json()["choices"][0]["message"])
            print("streamed", len(streamed), "events")
            exposition = (await client.get("/metrics")).text
    finally:
        for server in (router_server, provider_server):
            server.should_exit = True
        await asyncio.gather(router_task, provider_task)
        await upstream.aclose()
        routemeter.shutdown()
    print("--- routemeter metrics ---")
    print(routemeter_lines(exposition))
    return 0


def routemeter_lines(exposition: str) -> str:
    """The exposition lines of routemeter's own families (gen_ai_*, llm_router_*)."""
    keep = ("gen_ai_", "llm_router_", "# HELP gen_ai_", "# TYPE gen_ai_")
    keep += ("# HELP llm_router_", "# TYPE llm_router_")
    return "\n".join(line for line in exposition.splitlines() if line.startswith(keep))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
