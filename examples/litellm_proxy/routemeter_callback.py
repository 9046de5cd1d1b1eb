"""routemeter inside the LiteLLM proxy (``litellm_settings: callbacks:
routemeter_callback.callback`` in the proxy's config).

``routemeter.setup()`` reads the ``OTEL_*`` variables: with the default exporter it serves
``/metrics`` on ``OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT`` (default
``localhost:9464``); ``OTEL_METRICS_EXPORTER=otlp`` pushes to a Collector instead. The proxy's
router is watched automatically (cooldowns, refusals); requests are keyed by the proxy's own
per-request ``litellm_call_id``, and a failed request ends with the proxy's failure hook.
"""

from __future__ import annotations

import routemeter
from routemeter.integrations.litellm import RoutemeterCallback

routemeter.setup(service_name="litellm-proxy")
callback = RoutemeterCallback()
