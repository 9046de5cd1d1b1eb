"""compose.yaml is valid against the compose-spec schema and agrees with the files it mounts:
service names, ports, scrape targets, the OTLP endpoint, Grafana provisioning and limits.

No Docker engine exists on these machines: the stack is validated, not run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from routemeter.demo import parser as demo_parser

from .kit import (
    COLLECTOR,
    COMPOSE,
    DASHBOARD,
    PROMETHEUS,
    REPO,
    bind_mounts,
    collector_ports,
    load_compose,
    load_yaml,
    require_module,
    resolve_in_container,
)

COLLECTOR_SERVICE = "otel-collector"
SCHEMA_ARGS = ("--builtin-schema", "vendor.compose-spec")


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_compose()["services"]
    return services


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    require_module("check_jsonschema")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_is_valid_against_the_compose_spec_schema():
    """check-jsonschema's bundled compose-spec schema accepts compose.yaml."""
    result = _validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_compose_file(tmp_path: Path):
    """The same check rejects a misspelt service key, so the validation above is not vacuous."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    image: prom/", "    imagee: prom/", 1))
    result = _validate(broken)
    assert result.returncode != 0
    assert "imagee" in result.stdout + result.stderr


def test_services_are_the_documented_four():
    """The stack is the Collector, Prometheus, Grafana and the demo router."""
    assert set(_services()) == {COLLECTOR_SERVICE, "prometheus", "grafana", "router"}


def test_images_are_pinned():
    """Every pulled image has a full version tag and the router's base image pins Python."""
    for name, service in _services().items():
        if "build" in service:
            dockerfile = REPO / service["build"]["context"] / service["build"]["dockerfile"]
            base = re.search(r"^FROM\s+(\S+)", dockerfile.read_text(), re.M)
            assert base, f"{dockerfile} has no FROM"
            assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim(-\w+)?", base.group(1))
            continue
        image, _, tag = service["image"].rpartition(":")
        assert image, name
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {service['image']}"


def test_host_ports_bind_loopback_only():
    """Every published port is bound to 127.0.0.1: nothing in the stack has authentication."""
    for name, service in _services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def _mib(size: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG])i?B?", size, re.I)
    assert m, size
    return float(m.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024}[m.group(2).upper()]


def test_every_service_has_a_memory_limit():
    """Each service sets deploy.resources.limits.memory."""
    for name, service in _services().items():
        assert service["deploy"]["resources"]["limits"]["memory"], name


def test_gomemlimit_is_about_80_percent_of_the_collector_memory_limit():
    """GOMEMLIMIT is 75-85 % of the Collector container's memory limit (production guidance)."""
    collector = _services()[COLLECTOR_SERVICE]
    limit = _mib(collector["deploy"]["resources"]["limits"]["memory"])
    gomemlimit = _mib(collector["environment"]["GOMEMLIMIT"])
    assert 0.75 <= gomemlimit / limit <= 0.85, (gomemlimit, limit)


def test_collector_publishes_exactly_its_listeners():
    """The ports compose publishes for the Collector are the ports its config listens on."""
    published = {int(str(p).rsplit(":", 1)[1]) for p in _services()[COLLECTOR_SERVICE]["ports"]}
    assert published == set(collector_ports().values())


def test_collector_reads_the_mounted_config():
    """The Collector's --config path is where compose mounts otel-collector-config.yaml."""
    collector = _services()[COLLECTOR_SERVICE]
    (flag,) = [c for c in collector["command"] if c.startswith("--config=")]
    assert resolve_in_container(collector, flag.split("=", 1)[1]) == COLLECTOR


def test_bind_mount_sources_exist():
    """Every ./path a service mounts exists in the repository."""
    for name, service in _services().items():
        for source, target in bind_mounts(service):
            assert source.exists(), f"{name} mounts missing {source} at {target}"


def test_depends_on_names_services():
    """depends_on only names services of this file."""
    services = _services()
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def _prometheus_port() -> int:
    command = _services()["prometheus"]["command"]
    (flag,) = [c for c in command if c.startswith("--web.listen-address=")]
    return int(flag.rsplit(":", 1)[1])


def test_prometheus_reads_the_mounted_config():
    """Prometheus's --config.file is where compose mounts ops/prometheus.yml."""
    prometheus = _services()["prometheus"]
    (flag,) = [c for c in prometheus["command"] if c.startswith("--config.file=")]
    assert resolve_in_container(prometheus, flag.split("=", 1)[1]) == PROMETHEUS


def test_scrape_targets_are_compose_services_on_ports_they_listen_on():
    """Each scrape target is a compose service on a port it listens on, labels honoured."""
    services = _services()
    config = load_yaml(PROMETHEUS)
    listening = {
        COLLECTOR_SERVICE: collector_ports(),
        "prometheus": {"--web.listen-address": _prometheus_port()},
    }
    seen = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "localhost":
                    assert job["job_name"] == "prometheus"
                    assert int(port) == _prometheus_port()
                    continue
                assert host in services, f"job {job['job_name']} scrapes unknown host {host}"
                assert int(port) in listening[host].values(), f"{target}: nothing listens there"
                seen[job["job_name"]] = int(port)
    ports = collector_ports()
    assert seen["otel-collector"] == ports["service.telemetry.metrics.readers[0]"]
    assert seen["otel-collector-exporter"] == ports["exporters.prometheus"]
    (exporter_job,) = [
        j for j in config["scrape_configs"] if j["job_name"] == "otel-collector-exporter"
    ]
    assert exporter_job["honor_labels"] is True


def test_router_pushes_otlp_to_the_collectors_receiver_for_its_protocol():
    """The router pushes OTLP to the receiver of its protocol, more often than expiry."""
    env = _services()["router"]["environment"]
    assert env["OTEL_METRICS_EXPORTER"] == "otlp"
    assert env["OTEL_SERVICE_NAME"]
    m = re.fullmatch(r"http://([\w-]+):(\d+)", env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert m, env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert m.group(1) == COLLECTOR_SERVICE
    receiver = {"http/protobuf": "http", "grpc": "grpc"}[env["OTEL_EXPORTER_OTLP_PROTOCOL"]]
    assert int(m.group(2)) == collector_ports()[f"receivers.otlp.{receiver}"]
    expiration = load_yaml(COLLECTOR)["exporters"]["prometheus"]["metric_expiration"]
    assert int(env["OTEL_METRIC_EXPORT_INTERVAL"]) * 3 <= int(expiration.rstrip("m")) * 60_000


def test_router_runs_the_demo_as_two_replicas_with_valid_flags():
    """The router runs two replicas of `routemeter demo` with flags its parser accepts."""
    router = _services()["router"]
    assert router["deploy"]["replicas"] == 2
    command = router["command"]
    assert command[0] == "demo"
    args = demo_parser().parse_args(command[1:])
    assert not args.serve, "--serve sends no load"
    dockerfile = (REPO / router["build"]["context"] / router["build"]["dockerfile"]).read_text()
    cmd = re.search(r"^CMD\s+(\[.*\])$", dockerfile, re.M)
    entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])$", dockerfile, re.M)
    assert cmd
    assert entrypoint
    assert shlex.split(entrypoint.group(1).strip("[]").replace(",", " ")) == ["routemeter"]
    default = shlex.split(cmd.group(1).strip("[]").replace(",", " "))
    assert default[0] == "demo"
    demo_parser().parse_args(default[1:])


def test_grafana_datasource_points_at_the_prometheus_service():
    """Grafana's datasource is the prometheus service, timeInterval its scrape interval."""
    grafana = _services()["grafana"]
    folder = resolve_in_container(grafana, "/etc/grafana/provisioning/datasources")
    assert folder is not None
    assert folder.is_dir()
    (datasource,) = [d for f in sorted(folder.glob("*.yaml")) for d in load_yaml(f)["datasources"]]
    assert datasource["url"] == f"http://prometheus:{_prometheus_port()}"
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True
    interval = load_yaml(PROMETHEUS)["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == interval


def test_grafana_provisions_the_dashboard_and_makes_it_home():
    """Grafana's provider and home dashboard paths resolve to dashboards/routemeter.json."""
    grafana = _services()["grafana"]
    folder = resolve_in_container(grafana, "/etc/grafana/provisioning/dashboards")
    assert folder is not None
    (provider,) = [p for f in sorted(folder.glob("*.yaml")) for p in load_yaml(f)["providers"]]
    dashboards = resolve_in_container(grafana, provider["options"]["path"])
    assert dashboards is not None
    assert (dashboards / DASHBOARD.name) == DASHBOARD
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert resolve_in_container(grafana, home) == DASHBOARD


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_stateful_services_keep_data_in_named_volumes(service: str):
    """Prometheus and Grafana store their data in named volumes declared by the file."""
    volumes = load_compose()["volumes"]
    named = [v.split(":")[0] for v in _services()[service]["volumes"] if not v.startswith(".")]
    assert named
    assert all(v in volumes for v in named)
