"""The Prometheus config and alert rules pass promtool (check config, check rules, and the
rules' unit tests), every alert is tested both firing and quiet, and the rules only use metrics
and labels routemeter exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .kit import (
    PROMETHEUS,
    RULE_TESTS,
    RULES,
    load_compose,
    load_dashboard,
    load_yaml,
    promtool,
    resolve_in_container,
    schema_problems,
    series_schema,
)


def _rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _container_layout(root: Path) -> Path:
    """Lay out Prometheus's files under ``root`` the way compose mounts them; return the path
    of the config file as Prometheus reads it."""
    service = load_compose()["services"]["prometheus"]
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            link = root / target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((PROMETHEUS.parents[1] / source).resolve())
    (flag,) = [c for c in service["command"] if c.startswith("--config.file=")]
    return root / flag.split("=", 1)[1].lstrip("/")


def test_prometheus_config_passes_promtool_as_compose_mounts_it(tmp_path: Path):
    """promtool check config passes on ops/prometheus.yml as mounted, rules included."""
    config = _container_layout(tmp_path)
    result = promtool("check", "config", str(config))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS: 1 rule files found" in output
    assert f"{RULES.name}" in output
    assert "SUCCESS: 19 rules found" in output


def test_rule_files_resolve_to_the_repository_rules():
    """Each rule_files entry resolves through compose's mounts to the rules file."""
    service = load_compose()["services"]["prometheus"]
    (flag,) = [c for c in service["command"] if c.startswith("--config.file=")]
    config_dir = Path(flag.split("=", 1)[1]).parent
    for entry in load_yaml(PROMETHEUS)["rule_files"]:
        assert resolve_in_container(service, str(config_dir / entry)) == RULES


def test_rules_pass_promtool_check_rules():
    """`promtool check rules` accepts the rules file."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(test_file: Path):
    """`promtool test rules` passes: synthetic series make each alert fire or stay quiet."""
    result = promtool("test", "rules", test_file.name, cwd=test_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet():
    """Every alert has a unit-test case where it fires and one where it is expected silent."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for test_file in RULE_TESTS:
        for case in load_yaml(test_file)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


def test_alerts_required_by_the_issue_exist():
    """Each alert the issue asks for exists."""
    names = {rule["alert"] for rule in _alerts()}
    for needed in ("ErrorRate", "FallbackSurge", "LatencyP95", "CostBurnRate", "CacheHitCollapse"):
        assert any(needed in n for n in names), needed
    assert "RoutemeterTargetDown" in names


def test_alerts_have_severity_and_runbook_annotations():
    """Each alert has a severity, a `for`, a summary, a description and a runbook."""
    for rule in _alerts():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), rule["alert"]
        steps = re.findall(r"^(\d+)\. ", annotations["runbook"], re.M)
        assert steps[:2] == ["1", "2"], f"{rule['alert']}: runbook steps {steps}"


def test_runbooks_name_real_dashboard_panels():
    """Every "quoted" panel title a runbook points to is a panel of dashboards/routemeter.json."""
    titles = {p["title"] for p in load_dashboard()["panels"]}
    for rule in _alerts():
        for quoted in re.findall(r'"([^"]+)"', rule["annotations"]["runbook"]):
            assert quoted in titles, f"{rule['alert']} runbook names unknown panel {quoted!r}"


def _schema_with_records() -> dict[str, frozenset[str]]:
    """routemeter's series plus `up` and each recording rule (labels of its `by` clause, or of
    the recorded series it combines)."""
    schema = dict(series_schema())
    schema["up"] = frozenset({"job", "instance"})
    for rule in _rules():
        if "record" not in rule:
            continue
        by = re.search(r"\bby\s*\(([^)]*)\)", rule["expr"])
        if by:
            labels = frozenset(x.strip() for x in by.group(1).split(","))
        else:
            labels = frozenset().union(
                *(schema[n] for n in re.findall(r"routemeter:\w+:\w+", rule["expr"]))
            )
        schema[rule["record"]] = labels
    return schema


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.get("alert") or r["record"])
def test_rules_use_exported_metrics_and_labels(rule: dict[str, Any]):
    """Every metric and label a rule reads is exported by routemeter or recorded earlier."""
    assert schema_problems(rule["expr"], _schema_with_records()) == []


def test_recording_rule_names_follow_the_convention():
    """Recording rules are named level:metric:operations, all under routemeter:."""
    for rule in _rules():
        if "record" in rule:
            assert re.fullmatch(r"routemeter:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]
