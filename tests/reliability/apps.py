"""ASGI apps the reliability tests serve in real server processes (``uvicorn --workers``,
gunicorn with uvicorn workers). routemeter is configured from the environment the test gives
the server, and set up at import, that is in each worker (``instrument_app`` calls ``setup()``).

- ``demo``: the demo LLM router over instant upstreams.
- ``small``: one routed endpoint answering its worker's pid, so a test can tally per worker.
- ``bare``: a plain ASGI app that refuses the lifespan protocol, as Django's ASGI handler does.
"""

from __future__ import annotations

import json
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import routemeter
from routemeter.demo.router import build_app

from .hostile import fast_router

demo = build_app(fast_router())


@routemeter.route("default")
async def _routed(model: str) -> dict[str, Any]:
    rec = routemeter.current()
    rec.requested(model)
    rec.choose("openai", "gpt-4o-mini", "default")
    with rec.attempt("openai", "gpt-4o-mini", server_address="api.openai.com") as a:
        a.usage(input_tokens=10, output_tokens=5)
    return {"pid": os.getpid()}


async def _work(request: Request) -> JSONResponse:
    return JSONResponse(await _routed(request.query_params.get("model", "gpt-4o-mini")))


small = routemeter.instrument_app(Starlette(routes=[Route("/work", _work)]))


async def _bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise ValueError("this app can only handle HTTP connections, not lifespan")
    routed = scope["path"] == "/work"
    body = json.dumps(await _routed("gpt-4o-mini") if routed else {}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    status = 200 if routed else 404
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


bare = routemeter.instrument_app(_bare)
