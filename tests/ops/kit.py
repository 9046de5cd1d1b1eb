"""Shared helpers for the operations-kit tests: the shipped files, the metric schema they must
use, a small PromQL reader (metric selectors and ``by`` clauses), and tool requirements."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from routemeter.recording import _instruments as ins

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
COLLECTOR = REPO / "otel-collector-config.yaml"
PROMETHEUS = REPO / "ops" / "prometheus.yml"
RULES = REPO / "alerts" / "routemeter-rules.yaml"
RULE_TESTS = sorted((REPO / "alerts" / "tests").glob("*.yaml"))
DASHBOARD = REPO / "dashboards" / "routemeter.json"


def require_module(name: str) -> ModuleType:
    """Import a dev dependency; skip when missing, but fail under CI=true (CI never skips)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is not installed (a dev dependency: pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true so ops tests may not skip")
        pytest.skip(message, allow_module_level=True)


def require_promtool() -> str:
    """The promtool binary; skip when missing, fail under CI=true."""
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found on PATH (Debian: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true so ops tests may not skip")
        pytest.skip(message, allow_module_level=True)
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_promtool(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load_yaml(path: Path) -> Any:
    yaml = require_module("yaml")
    return yaml.safe_load(path.read_text())


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


# --- the metric schema -----------------------------------------------------------------------

ALWAYS_LABELS = frozenset({"job", "instance", "otel_scope_name", "otel_scope_version"})
"""Labels every scraped series may carry besides its attributes."""


def _label(attribute: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", attribute)


def series_schema() -> dict[str, frozenset[str]]:
    """Every Prometheus series name routemeter exposes, with the labels it may carry.

    Built from the instrument specs (the source docs/metrics.md is generated from), with the
    exporter's renaming: histograms expose ``_bucket`` (with ``le``), ``_count`` and ``_sum``.
    """
    schema: dict[str, frozenset[str]] = {}
    for spec in ins.ALL:
        name = ins.prometheus_name(spec)
        labels = ALWAYS_LABELS | {_label(a) for a in spec.attributes}
        if spec.kind == "histogram":
            schema[f"{name}_bucket"] = labels | {"le"}
            schema[f"{name}_count"] = labels
            schema[f"{name}_sum"] = labels
        else:
            schema[name] = labels
    return schema


# --- a small PromQL reader -------------------------------------------------------------------

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_IDENT = re.compile(r"(?<![\w:.$\"])([a-zA-Z_:][\w:]*)")
_SELECTOR = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*,?')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]
    """(label, operator, value) with the value unquoted."""

    def text(self) -> str:
        inner = ", ".join(f"{k}{op}{json.dumps(v)}" for k, op, v in self.matchers)
        return f"{self.metric}{{{inner}}}"


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (selectors with or without braces)."""
    e = _STRING.sub('""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = _GROUPING.sub(" ", e)
    names = set()
    for m in _IDENT.finditer(e):
        rest = e[m.end() :].lstrip()
        if rest.startswith("("):  # a function call
            continue
        if m.group(1).lower() in _KEYWORDS:
            continue
        names.add(m.group(1))
    return names


def selectors(expr: str) -> list[Selector]:
    """Every ``metric{...}`` selector in ``expr``."""
    found = []
    for m in _SELECTOR.finditer(expr):
        matchers = tuple(
            (mm.group(1), mm.group(2), json.loads(mm.group(3)))
            for mm in _MATCHER.finditer(m.group(2))
        )
        found.append(Selector(m.group(1), matchers))
    return found


def _balanced(text: str, start: int) -> str:
    """The parenthesised group starting at ``text[start] == "("``, without the parentheses."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    raise ValueError(f"unbalanced parentheses in {text!r}")


def by_clauses(expr: str) -> Iterator[tuple[tuple[str, ...], str]]:
    """Each ``agg by (labels) (argument)`` as (labels, argument text)."""
    for m in re.finditer(r"\bby\s*\(([^)]*)\)\s*\(", expr):
        labels = tuple(x.strip() for x in m.group(1).split(",") if x.strip())
        yield labels, _balanced(expr, m.end() - 1)


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana variables (``$name`` and ``${name}``) by ``values``."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return expr


def variables_used(expr: str) -> set[str]:
    return set(re.findall(r"\$\{?(\w+)", expr))


def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (panel, target) pair with a PromQL expression, rows' nested panels included."""
    for panel in dashboard["panels"]:
        nested = panel.get("panels", []) if panel.get("type") == "row" else [panel]
        for p in nested:
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield p, t


def schema_problems(expr: str, schema: dict[str, frozenset[str]]) -> list[str]:
    """Metric names the schema lacks, and matcher or ``by`` labels the metric does not carry."""
    problems = [f"unknown metric {n}" for n in sorted(metric_names(expr)) if n not in schema]
    for sel in selectors(expr):
        for label, _, _ in sel.matchers:
            if sel.metric in schema and label not in schema[sel.metric] | {"__name__"}:
                problems.append(f"{sel.metric} has no label {label}")
    for labels, argument in by_clauses(expr):
        for name in metric_names(argument):
            missing = set(labels) - schema.get(name, frozenset(labels))
            if missing:
                problems.append(f"by ({', '.join(labels)}): {name} has no {sorted(missing)}")
    return problems


def label_values_query(definition: str) -> tuple[str, str]:
    """Grafana's ``label_values(selector, label)`` as (PromQL selector, label)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", definition)
    assert m, f"not a label_values() query: {definition!r}"
    return m.group(1), m.group(2)


# --- the Collector ---------------------------------------------------------------------------


def collector_config() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(COLLECTOR)
    return config


def collector_listeners(config: dict[str, Any]) -> dict[str, str]:
    """Every address the Collector listens on, by where it is configured."""
    out = {}
    for name, receiver in (config.get("receivers") or {}).items():
        for proto, settings in ((receiver or {}).get("protocols") or {}).items():
            out[f"receivers.{name}.{proto}"] = settings["endpoint"]
    for kind in ("exporters", "extensions"):
        for name, settings in (config.get(kind) or {}).items():
            endpoint = (settings or {}).get("endpoint")
            if endpoint and "://" not in endpoint:
                out[f"{kind}.{name}"] = endpoint
    for i, reader in enumerate(config["service"]["telemetry"]["metrics"]["readers"]):
        prom = reader["pull"]["exporter"]["prometheus"]
        out[f"service.telemetry.metrics.readers[{i}]"] = f"{prom['host']}:{prom['port']}"
    return out


def collector_ports(config: dict[str, Any] | None = None) -> dict[str, int]:
    """Port of every Collector listener (used by the compose consistency tests too)."""
    listeners = collector_listeners(config or collector_config())
    return {where: int(addr.rsplit(":", 1)[1]) for where, addr in listeners.items()}


# --- compose ---------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    compose: dict[str, Any] = load_yaml(COMPOSE)
    return compose


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(repository path, container path) of each bind mount (short syntax, relative source)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts.append(((COMPOSE.parent / source).resolve(), target))
    return mounts


def resolve_in_container(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository file a container path shows, through the service's bind mounts."""
    best: tuple[int, Path] | None = None
    for source, target in bind_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            rest = container_path[len(target) :].lstrip("/")
            if best is None or len(target) > best[0]:
                best = (len(target), source / rest if rest else source)
    return best[1] if best else None
