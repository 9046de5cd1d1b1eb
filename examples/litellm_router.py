"""A litellm.Router in a plain asyncio program, metered by routemeter's LiteLLM callback.

    pip install 'routemeter[litellm]'
    python examples/litellm_router.py

The ``primary`` model group points at a loopback port nobody listens on, so its calls fail for
real and the Router falls back to ``backup`` (LiteLLM's own mock responses). One request
streams; one has its fallbacks turned off and fails. The example prints routemeter's families
from its ``/metrics`` (a free loopback port) and exits. No network.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import urllib.request

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no remote price map fetch

import litellm

import routemeter
from routemeter.integrations.litellm import RoutemeterCallback

MESSAGES = [{"role": "user", "content": "hi"}]


async def main() -> int:
    handle = routemeter.setup(prometheus_host="127.0.0.1", prometheus_port=0)
    callback = RoutemeterCallback()  # route label: the model group the caller asked for
    litellm.callbacks = [callback]
    with socket.socket() as dead:  # bound, never listening: connections are refused
        dead.bind(("127.0.0.1", 0))
        down = f"http://localhost:{dead.getsockname()[1]}/v1"
        router = litellm.Router(
            model_list=[
                {
                    "model_name": "primary",
                    "litellm_params": {
                        "model": "openai/gpt-4o-mini",
                        "api_base": down,
                        "api_key": "unused",
                        "max_retries": 0,
                    },
                },
                {
                    "model_name": "backup",
                    "litellm_params": {
                        "model": "anthropic/claude-3-5-haiku-20241022",
                        "api_key": "unused",
                        "mock_response": "Hello from the backup group",
                    },
                },
            ],
            fallbacks=[{"primary": ["backup"]}],
            num_retries=0,
        )
        callback.watch(router)  # cooldowns and "no deployment available" refusals
        served = await router.acompletion(model="primary", messages=MESSAGES)
        print("fallback answered by", served.model)
        stream = await router.acompletion(model="backup", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        print("streamed", repr(text))
        try:
            await router.acompletion(model="primary", messages=MESSAGES, fallbacks=[])
        except litellm.InternalServerError as e:
            print("failed with status", e.status_code)
    await _settle(callback)
    url = handle.metrics_url
    assert url is not None
    exposition = await asyncio.to_thread(_get, url)
    router.discard()
    routemeter.shutdown()
    print("--- routemeter metrics ---")
    keep = ("gen_ai_", "llm_router_", "# HELP gen_ai_", "# TYPE gen_ai_")
    keep += ("# HELP llm_router_", "# TYPE llm_router_")
    print("\n".join(line for line in exposition.splitlines() if line.startswith(keep)))
    return 0


async def _settle(callback: RoutemeterCallback) -> None:
    """LiteLLM delivers success events from a background worker; wait for them, then commit
    the failed request now instead of after the callback's settle delay."""
    for _ in range(500):
        await asyncio.sleep(0.01)
        callback.flush()
        if callback.open_requests == 0:
            return


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        return str(response.read().decode())


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
