"""dashboards/routemeter.json is a well-formed Grafana dashboard whose every query filters by
the service and route variables, reads only metrics and labels routemeter exports, and returns
data from a real Prometheus that scraped the demo router under load."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.request
from itertools import combinations
from typing import Any

import pytest

import routemeter
from routemeter.demo.load import Ledger, LoadConfig, run_load
from routemeter.demo.providers import Upstreams
from routemeter.demo.router import Router, RouterSettings, build_app
from routemeter.demo.run import bind, serving
from support.prometheus import JOB, PrometheusServer, require_prometheus

from .kit import (
    RULES,
    by_clauses,
    label_values_query,
    load_dashboard,
    load_yaml,
    metric_names,
    panel_targets,
    schema_problems,
    selectors,
    series_schema,
    substitute,
    variables_used,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_VARIABLES = {"service", "route", "datasource", "__rate_interval"}
REQUIRED_PANELS = (
    "Request rate by route",
    "Error rate by route",
    "Request duration by provider",
    "Attempt duration by provider",
    "Time to first token",
    "Tokens per second by type",
    "Cost per hour by model",
    "Fallbacks from -> to",
    "Decision mix per route",
    "Cache hit ratio",
    "Active requests",
    "Rate-limit headroom",
    "Savings per hour by route",
    "Baseline and actual cost per hour",
    "Goodput by route",
    "Router overhead",
    "Attempts per request",
    "Upstream availability",
    "Unpriced attempts",
    "routemeter health",
)
QUIET_WHEN_HEALTHY = {("Unpriced attempts", "A"), ("routemeter health", "A"),
                      ("routemeter health", "B")}  # fmt: skip
"""Targets that count trouble (unpriced spend, folded values, routemeter's own failures): the
demo router has none, so against it they must be valid queries but return nothing."""


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return list(panel_targets(load_dashboard()))


def _target_id(pair: tuple[dict[str, Any], dict[str, Any]]) -> str:
    panel, target = pair
    return f"{panel['title']}[{target['refId']}]"


def _schema() -> dict[str, frozenset[str]]:
    """The exported series, and the recording rules (alerts/routemeter-rules.yaml) with the
    labels their ``by`` clauses keep (or the rules they combine keep)."""
    schema = dict(series_schema())
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            if "record" not in rule:
                continue
            labels = {label for kept, _ in by_clauses(rule["expr"]) for label in kept}
            if not labels:
                labels = {lab for n in metric_names(rule["expr"]) for lab in schema.get(n, ())}
            schema[rule["record"]] = frozenset(labels)
    return schema


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in load_dashboard()["templating"]["list"]}


# --- static ----------------------------------------------------------------------------------


def test_dashboard_identity():
    """The dashboard has a stable uid, a title, tags and a schema version Grafana 11 reads."""
    dashboard = load_dashboard()
    assert dashboard["uid"] == "routemeter"
    assert dashboard["title"]
    assert "routemeter" in dashboard["tags"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert "id" not in dashboard or dashboard["id"] is None, "an exported id breaks provisioning"


def test_issue_panels_are_present():
    """Every panel the issue asks for exists, by title."""
    titles = {p["title"] for p in _panels(load_dashboard())}
    assert [t for t in REQUIRED_PANELS if t not in titles] == []


def test_template_variables_service_and_route():
    """`service` (job) and `route` are multi-value, All = `.*`; route follows service."""
    variables = _variables()
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name, label in (("service", "job"), ("route", "llm_router_route")):
        v = variables[name]
        assert v["type"] == "query"
        assert v["multi"]
        assert v["includeAll"]
        assert v["allValue"] == ".*"
        assert label_values_query(v["definition"])[1] == label
        assert v["query"]["query"] == v["definition"]
    assert '$service"' in variables["route"]["definition"]


def test_panel_ids_are_unique_and_panels_do_not_overlap():
    """Panel ids are unique and no two panels share a grid cell within the 24 columns."""
    panels = load_dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] < g["x"] + g["w"] <= 24, p["title"]
    for a, b in combinations(panels, 2):
        ga, gb = a["gridPos"], b["gridPos"]
        apart = (
            ga["x"] + ga["w"] <= gb["x"]
            or gb["x"] + gb["w"] <= ga["x"]
            or ga["y"] + ga["h"] <= gb["y"]
            or gb["y"] + gb["h"] <= ga["y"]
        )
        assert apart, f"{a['title']!r} overlaps {b['title']!r}"


def test_panels_and_targets_use_the_datasource_variable():
    """Every panel and target queries `${datasource}`, so the dashboard imports anywhere."""
    for panel in _panels(load_dashboard()):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


@pytest.mark.parametrize("pair", _targets(), ids=_target_id)
def test_every_selector_filters_by_service_and_route(pair: tuple[dict[str, Any], dict[str, Any]]):
    """Every selector filters by $service, and by $route when its metric has a route."""
    panel, target = pair
    expr = target["expr"]
    assert variables_used(expr) <= GRAFANA_VARIABLES
    schema = _schema()
    found = selectors(expr)
    assert found, expr
    for sel in found:
        assert ("job", "=~", "$service") in sel.matchers, sel.text()
        if "llm_router_route" in schema.get(sel.metric, ()):
            assert ("llm_router_route", "=~", "$route") in sel.matchers, sel.text()
        else:
            assert "Not split by route" in panel["description"], panel["title"]


@pytest.mark.parametrize("pair", _targets(), ids=_target_id)
def test_queries_use_exported_metrics_and_labels(pair: tuple[dict[str, Any], dict[str, Any]]):
    """Every metric and label a panel query reads is one routemeter exports."""
    assert schema_problems(pair[1]["expr"], _schema()) == []


def test_latency_panels_show_p50_p95_p99():
    """Request and attempt duration panels each plot p50, p95 and p99."""
    panels = {p["title"]: p for p in _panels(load_dashboard())}
    for title in ("Request duration by provider", "Attempt duration by provider"):
        exprs = [t["expr"] for t in panels[title]["targets"]]
        for q in ("0.5", "0.95", "0.99"):
            assert any(e.startswith(f"histogram_quantile({q},") for e in exprs), (title, q)


# --- against a real Prometheus ---------------------------------------------------------------

SEED = 11
LOAD = LoadConfig(rate=25.0, duration_s=10.0, seed=SEED)
# small cache and quick cooldowns so a few seconds of load show evictions and cooldowns too
SETTINGS = RouterSettings(cache_size=8, cooldown_after=2, cooldown_s=0.5)
RATE_INTERVAL = "1m"


def _grafana_values(values: list[str]) -> str:
    """A multi-value selection as Grafana renders it for a Prometheus regex matcher."""
    return values[0] if len(values) == 1 else "(" + "|".join(sorted(values)) + ")"


def _has_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result if "value" in r)


def _variable_values(prom: PrometheusServer, definition: str, values: dict[str, str]) -> list[str]:
    selector, label = label_values_query(substitute(definition, values))
    return sorted({r["metric"][label] for r in prom.query(f"count by ({label}) ({selector})")})


def _rules_health(prom: PrometheusServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{prom.url}/api/v1/rules", timeout=10) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _check_against(prom: PrometheusServer, ledger: Ledger) -> None:
    # A rare transport error (a keep-alive connection closed under the client) does not matter
    # here: the router's metrics are under test, not the load generator.
    assert ledger.answered >= 0.95 * ledger.sent, ledger.transport_errors[:3]
    for what in ("fallbacks", "cooldowns", "rejections", "cache_lookups"):
        assert getattr(ledger, what), f"the load was too mild: no {what}"
    prom.wait_for_scrape(min_scrapes=2, timeout_s=20)
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    # The variables' own queries list the scraped job and the demo's routes.
    services = _variable_values(prom, variables["service"]["definition"], {})
    scraped = sorted({r["metric"]["__name__"] for r in prom.query(f'{{job="{JOB}"}}')})
    assert services == [JOB], f"series scraped from the demo router: {scraped}"
    routes = _variable_values(
        prom, variables["route"]["definition"], {"service": _grafana_values(services)}
    )
    assert routes == sorted(ledger.routes)

    selections = {
        "All": {"service": ".*", "route": ".*", "__rate_interval": RATE_INTERVAL},
        "each value picked": {
            "service": _grafana_values(services),
            "route": _grafana_values(routes),
            "__rate_interval": RATE_INTERVAL,
        },
    }
    empty = []
    for panel, target in panel_targets(dashboard):
        where = f"{panel['title']} [{target['refId']}]"
        if (panel["title"], target["refId"]) in QUIET_WHEN_HEALTHY:
            for values in selections.values():
                prom.query(substitute(target["expr"], values))  # valid: Prometheus answers
            continue
        for selection, values in selections.items():
            expr = substitute(target["expr"], values)
            if not _has_value(prom.query(expr)):
                empty.append(f"{where} ({selection}): {expr}")
        for sel in selectors(target["expr"]):
            query = substitute(sel.text(), selections["All"])
            if not prom.query(query):
                empty.append(f"{where}: selector {query} matches no series")
    assert empty == [], "queries without data:\n" + "\n".join(empty)

    # The alert rules load into the same Prometheus and evaluate without errors on real data.
    rules = _rules_health(prom)
    assert len(rules) == 19
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    for rule in rules:
        if rule["type"] == "recording":
            assert prom.query(rule["name"]), f"recording rule {rule['name']} recorded nothing"


@pytest.mark.integration
def test_every_panel_query_returns_data_from_the_demo_router():
    """Every panel query returns data and every rule evaluates on Prometheus scraping the demo."""
    require_prometheus()
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]

    async def scenario(prom: PrometheusServer) -> None:
        routemeter.setup(exporters="prometheus", prometheus_server=False)
        router = Router(Upstreams.build(SEED, cycle_s=LOAD.duration_s), SETTINGS)
        async with serving(build_app(router), sock) as url:
            ledger = await run_load(url, LOAD)
            # keep serving (and being scraped) while the queries run
            await asyncio.to_thread(_check_against, prom, ledger)

    try:
        with PrometheusServer([f"127.0.0.1:{port}"], rule_files=[RULES]) as prom:
            asyncio.run(scenario(prom))
    finally:
        sock.close()
