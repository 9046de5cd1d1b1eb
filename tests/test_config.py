"""Configuration: arguments, then environment, then defaults; every bad value named and refused."""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routemeter._config import SETTINGS, Config, ConfigError, load

_READABLE = __file__  # any readable file stands in for a PEM bundle; content is unread
_OTHER_READABLE = str(Path(__file__).with_name("conftest.py"))

BY_FIELD = {s.field: s for s in SETTINGS}
DEFAULTS = {
    "disabled": False,
    "service_name": None,
    "exporters": ("prometheus",),
    "prometheus_host": "localhost",
    "prometheus_port": 9464,
    "prometheus_server": True,
    "metrics_path": "/metrics",
    "metrics_token": None,
    "prometheus_worker_ports": 1,
    "otlp_protocol": "http/protobuf",
    "otlp_endpoint": None,
    "otlp_headers": (),
    "otlp_timeout_ms": 10_000.0,
    "otlp_compression": "none",
    "otlp_insecure": None,
    "otlp_certificate": None,
    "temporality": "cumulative",
    "histogram_aggregation": "explicit_bucket_histogram",
    "exemplar_filter": "trace_based",
    "export_interval_ms": 60_000.0,
    "export_timeout_ms": 30_000.0,
    "shutdown_timeout_ms": 5_000.0,
    "cardinality_limit": 2000,
    "recorder": "aggregate",
    "http_instrumentation": "routemeter",
    "models": (),
    "providers": (),
    "max_models": 100,
    "max_providers": 20,
    "prices_file": None,
    "tenants": (),
    "max_tenants": 20,
    "recent_requests": 200,
    "history_retention": "10s:1h,1m:48h,1h:30d",
    "history_path": None,
}

# Two valid (raw, parsed) samples per setting: the first for the specific variable, the second
# for the general one, so precedence tests can tell them apart.
VALID = {
    "disabled": [(" TRUE ", True), ("0", False)],
    "service_name": [("  my-router ", "my-router"), ("gateway", "gateway")],
    "exporters": [("otlp", ("otlp",)),
                  ("Prometheus, OTLP ,console", ("prometheus", "otlp", "console"))],
    "prometheus_host": [("0.0.0.0", "0.0.0.0"), (" ::1 ", "::1")],
    "prometheus_port": [("0", 0), ("65535", 65535)],
    "prometheus_server": [("false", False), ("On", True)],
    "metrics_path": [("/internal/metrics", "/internal/metrics"), (" /m ", "/m")],
    "metrics_token": [("0123456789abcdef", "0123456789abcdef"),
                      (" s3cr3t-t0k3n_~=+/.x ", "s3cr3t-t0k3n_~=+/.x")],
    "prometheus_worker_ports": [("1", 1), ("1024", 1024)],
    "otlp_protocol": [("grpc", "grpc"), ("HTTP/Protobuf", "http/protobuf")],
    "otlp_endpoint": [("https://otel.example:4318", "https://otel.example:4318"),
                      ("http://collector:4317", "http://collector:4317")],
    "otlp_headers": [("api-key=abc", (("api-key", "abc"),)),
                     ("X-A=1,x-b=2", (("x-a", "1"), ("x-b", "2")))],
    "otlp_timeout_ms": [("2500", 2500.0), ("0.5", 0.5)],
    "otlp_compression": [("gzip", "gzip"), ("Deflate", "deflate")],
    "otlp_insecure": [("true", True), ("no", False)],
    "otlp_certificate": [(_READABLE, _READABLE), (f" {_OTHER_READABLE} ", _OTHER_READABLE)],
    "temporality": [("delta", "delta"), ("LowMemory", "lowmemory")],
    "histogram_aggregation": [
        ("base2_exponential_bucket_histogram", "base2_exponential_bucket_histogram"),
        (" Explicit_Bucket_Histogram ", "explicit_bucket_histogram"),
    ],
    "exemplar_filter": [("always_on", "always_on"), ("ALWAYS_OFF", "always_off")],
    "export_interval_ms": [("1000", 1000.0), ("1e3", 1000.0)],
    "export_timeout_ms": [("0", 0.0), ("250.5", 250.5)],
    "shutdown_timeout_ms": [("0", 0.0), ("1500", 1500.0)],
    "cardinality_limit": [("1", 1), ("1000000", 1_000_000)],
    "recorder": [("sdk", "sdk"), (" Aggregate ", "aggregate")],
    "http_instrumentation": [("opentelemetry", "opentelemetry"), (" RouteMeter ", "routemeter")],
    "models": [("gpt-4o, claude-sonnet-4-5,gpt-4o", ("gpt-4o", "claude-sonnet-4-5")),
               ("x", ("x",))],
    "providers": [("openai,anthropic", ("openai", "anthropic")), (" , azure ,", ("azure",))],
    "max_models": [("0", 0), ("100000", 100_000)],
    "max_providers": [("5", 5), ("10000", 10_000)],
    "prices_file": [("prices.toml", "prices.toml"), ("/srv/p.json", "/srv/p.json")],
    "tenants": [("gold, silver,gold", ("gold", "silver")), ("team-a", ("team-a",))],
    "max_tenants": [("0", 0), ("10000", 10_000)],
    "recent_requests": [("0", 0), ("10000", 10_000)],
    "history_retention": [(" 1m:1d , 1h:7d", "1m:1d,1h:7d"), ("5s:5s", "5s:5s")],
    "history_path": [("/tmp/history.db", "/tmp/history.db"), ("/tmp/./h.db", "/tmp/h.db")],
}  # fmt: skip
TWO_VARIABLES = [s for s in SETTINGS if len(s.env) == 2]


def test_settings_cover_every_config_field_once():
    """Each Config field but sources has exactly one Setting, in declaration order."""
    fields = [f.name for f in dataclasses.fields(Config) if f.name != "sources"]
    assert [s.field for s in SETTINGS] == fields
    assert set(VALID) == set(fields) == set(DEFAULTS)


def test_defaults_with_empty_environment():
    """With no variables and no arguments every setting is its default, sourced 'default'."""
    config = load({})
    assert {f: getattr(config, f) for f in DEFAULTS} == DEFAULTS
    assert dict(config.sources) == dict.fromkeys(DEFAULTS, "default")
    assert all(getattr(config, s.field) == s.default for s in SETTINGS)


def test_explicit_env_mapping_ignores_process_environment(monkeypatch):
    """load(env) reads only the mapping it is given."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    assert load({}).exporters == ("prometheus",)


def test_no_env_mapping_reads_process_environment(monkeypatch):
    """load() without a mapping reads os.environ."""
    for s in SETTINGS:
        for name in s.env:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    config = load()
    assert config.exporters == ("console",)
    assert config.sources["exporters"] == "env:OTEL_METRICS_EXPORTER"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.field)
@pytest.mark.parametrize("sample", [0, 1])
def test_every_setting_parses_from_each_of_its_variables(setting, sample):
    """Each variable a setting reads yields the parsed value and records env:NAME."""
    raw, expected = VALID[setting.field][sample]
    for name in setting.env:
        config = load({name: raw})
        assert getattr(config, setting.field) == expected
        assert config.sources[setting.field] == f"env:{name}"


@pytest.mark.parametrize("setting", TWO_VARIABLES, ids=lambda s: s.field)
def test_signal_specific_variable_wins_over_general(setting):
    """OTEL_EXPORTER_OTLP_METRICS_* beats OTEL_EXPORTER_OTLP_* when both are set."""
    specific, general = setting.env
    assert "_METRICS_" in specific
    assert "_METRICS_" not in general
    (raw_a, value_a), (raw_b, value_b) = VALID[setting.field]
    assert value_a != value_b
    config = load({specific: raw_a, general: raw_b})
    assert getattr(config, setting.field) == value_a
    assert config.sources[setting.field] == f"env:{specific}"
    config = load({general: raw_b})
    assert getattr(config, setting.field) == value_b
    assert config.sources[setting.field] == f"env:{general}"


@pytest.mark.parametrize("setting", TWO_VARIABLES, ids=lambda s: s.field)
def test_empty_specific_variable_falls_through_to_general(setting):
    """An empty or blank signal-specific variable counts as unset."""
    specific, general = setting.env
    raw_b, value_b = VALID[setting.field][1]
    config = load({specific: "  ", general: raw_b})
    assert getattr(config, setting.field) == value_b
    assert config.sources[setting.field] == f"env:{general}"


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.field != "disabled"], ids=lambda s: s.field
)
def test_empty_variable_means_default(setting):
    """An empty variable leaves the setting at its default."""
    config = load(dict.fromkeys(setting.env, ""))
    assert getattr(config, setting.field) == setting.default
    assert config.sources[setting.field] == "default"


def test_empty_sdk_disabled_is_false_from_env():
    """OTEL_SDK_DISABLED='' is read (as false), as the SDK reads it."""
    config = load({"OTEL_SDK_DISABLED": ""})
    assert config.disabled is False
    assert config.sources["disabled"] == "env:OTEL_SDK_DISABLED"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("exporters", ["prometheus", "console"], ("prometheus", "console")),
        ("exporters", "otlp", ("otlp",)),
        ("otlp_protocol", "grpc", "grpc"),
        ("prometheus_port", 0, 0),
        ("prometheus_server", False, False),
        ("disabled", True, True),
        ("otlp_timeout_ms", 1500, 1500.0),
        ("models", ("gpt-4o", "gpt-4o", "o3"), ("gpt-4o", "o3")),
        ("otlp_headers", {"Authorization": "Bearer x"}, (("authorization", "Bearer x"),)),
        ("otlp_headers", [("X-Key", "v")], (("x-key", "v"),)),
        ("otlp_headers", "a=b%20c", (("a", "b c"),)),
        ("cardinality_limit", 5, 5),
    ],
    ids=repr,
)
def test_arguments_win_over_environment(field, value, expected):
    """A setup() argument beats any variable and records source 'argument'."""
    env = dict.fromkeys(BY_FIELD[field].env, VALID[field][1][0])
    config = load(env, **{field: value})
    assert getattr(config, field) == expected
    assert config.sources[field] == "argument"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("otlp,OTLP", ("otlp",)),
        ("Prometheus, prometheus ,PROMETHEUS", ("prometheus",)),
        ("console,otlp,Console", ("console", "otlp")),
    ],
)
def test_exporters_are_deduplicated_case_insensitively(raw, expected):
    """An exporter named twice in any case is built once (no second reader or port)."""
    assert load({"OTEL_METRICS_EXPORTER": raw}).exporters == expected


def test_none_argument_falls_back_to_environment():
    """An argument given as None is treated as not given."""
    config = load({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, otlp_protocol=None)
    assert config.otlp_protocol == "grpc"
    assert config.sources["otlp_protocol"] == "env:OTEL_EXPORTER_OTLP_PROTOCOL"


def test_header_argument_as_key_value_strings():
    """Headers given as a list of 'key=value' strings parse like the variable does."""
    config = load({}, otlp_headers=["api-key=abc", "X-Tenant=t1"])
    assert config.otlp_headers == (("api-key", "abc"), ("x-tenant", "t1"))


def test_sources_do_not_affect_equality():
    """Two configs with the same values are equal whatever their sources."""
    assert load({"OTEL_METRICS_EXPORTER": "otlp"}) == load({}, exporters="otlp")


BAD_ENV = [
    ("OTEL_SDK_DISABLED", "maybe"),
    ("OTEL_SDK_DISABLED", "2"),
    ("ROUTEMETER_PROMETHEUS_SERVER", "enabled"),
    ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "yes please"),
    ("OTEL_EXPORTER_OTLP_INSECURE", "t"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "65536"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "-1"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "http"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "80.5"),
    ("ROUTEMETER_CARDINALITY_LIMIT", "0"),
    ("ROUTEMETER_CARDINALITY_LIMIT", "1000001"),
    ("ROUTEMETER_MAX_MODELS", "-1"),
    ("ROUTEMETER_MAX_MODELS", "lots"),
    ("ROUTEMETER_MAX_PROVIDERS", "10001"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "-1"),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "10s"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "nan"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "inf"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "abc"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "-inf"),
    ("OTEL_METRIC_EXPORT_TIMEOUT", "-5"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
    ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "zstd"),
    ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "sometimes"),
    ("ROUTEMETER_RECORDER", "otel"),
    ("ROUTEMETER_HTTP_INSTRUMENTATION", "asgi"),
    ("OTEL_METRICS_EXPORTER", ","),
    ("OTEL_METRICS_EXPORTER", " , ,"),
    ("OTEL_METRICS_EXPORTER", "none,otlp"),
    ("OTEL_METRICS_EXPORTER", "prometheus,none"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "api-key"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "=value"),
    ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "a=1,b"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "collector:4317"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"),
    ("ROUTEMETER_METRICS_PATH", "metrics"),
    ("ROUTEMETER_METRICS_PATH", "/met rics"),
    ("ROUTEMETER_RECENT_REQUESTS", "10001"),
    ("ROUTEMETER_HISTORY_RETENTION", "10s"),
    ("ROUTEMETER_HISTORY_RETENTION", "1m:1h,90s:2h"),
    ("ROUTEMETER_HISTORY_RETENTION", "1h:1m"),
    ("ROUTEMETER_HISTORY_RETENTION", "1s:2d"),
    ("ROUTEMETER_HISTORY_RETENTION", "1s:1m,1m:1h,1h:1d,1d:30d,30d:60d"),
    ("ROUTEMETER_HISTORY_PATH", "/no/such/dir/history.db"),
    ("ROUTEMETER_HISTORY_PATH", "/tmp"),
]


@pytest.mark.parametrize(("name", "raw"), BAD_ENV, ids=lambda v: v)
def test_bad_variable_names_variable_value_and_allowed(name, raw):
    """A bad value raises ConfigError naming the variable, the value and what is allowed."""
    with pytest.raises(ConfigError) as info:
        load({name: raw})
    message = str(info.value)
    assert name in message
    assert "allowed" in message
    if "HEADERS" in name:  # header values are secrets: the message must not echo them
        assert repr(raw) not in message
        assert f"{name}=<redacted>" in message
    else:
        assert repr(raw) in message


def test_bad_general_variable_is_ignored_when_specific_is_set():
    """Only the winning variable is parsed: a bad general one behind a good specific is unread."""
    env = {"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": "bad"}
    assert load(env).otlp_protocol == "grpc"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prometheus_port", 70_000),
        ("prometheus_port", True),
        ("prometheus_server", "sometimes"),
        ("otlp_protocol", "http/json"),
        ("otlp_timeout_ms", -1),
        ("exporters", []),
        ("exporters", ["none", "otlp"]),
        ("otlp_endpoint", "collector:4317"),
        ("metrics_path", "metrics"),
        ("otlp_headers", "novalue"),
        ("cardinality_limit", 0),
    ],
    ids=repr,
)
def test_bad_argument_names_field_value_and_allowed(field, value):
    """A bad argument raises ConfigError naming the argument, the value and what is allowed."""
    with pytest.raises(ConfigError) as info:
        load({}, **{field: value})
    message = str(info.value)
    assert field in message
    assert repr(value) in message
    assert "allowed" in message


def test_unknown_argument_lists_allowed_names():
    """An unknown setup() argument raises ConfigError listing every allowed name."""
    with pytest.raises(ConfigError) as info:
        load({}, exporter="otlp", bogus=1)
    message = str(info.value)
    assert "bogus" in message
    assert "exporter" in message
    assert "allowed" in message
    assert all(s.field in message.split("allowed", 1)[1] for s in SETTINGS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Authorization=Bearer%20abc", (("authorization", "Bearer abc"),)),
        ("X-Scope-OrgID = tenant%2C1 , a=b=c", (("x-scope-orgid", "tenant,1"), ("a", "b=c"))),
        ("k=", (("k", ""),)),
        ("a=1,,b=2,", (("a", "1"), ("b", "2"))),
        ("My-Key=v%3Dw", (("my-key", "v=w"),)),
        ("dd-api-key=%E2%9C%93", (("dd-api-key", "\u2713"),)),
    ],
    ids=repr,
)
def test_headers_are_percent_decoded_with_lowercased_keys(raw, expected):
    """Header values are percent-decoded after splitting; keys are lower-cased."""
    assert load({"OTEL_EXPORTER_OTLP_HEADERS": raw}).otlp_headers == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http://localhost:4318/v1/metrics"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http://localhost:4317"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/metrics"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/metrics"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c/otlp"}, "https://c/otlp/v1/metrics"),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/m"}, "http://c:4318/m"),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318"}, "http://c:4318"),
        (
            {
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:1/x",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://g:2",
            },
            "http://m:1/x",
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
            "http://c:4317",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "http://localhost:4317",
        ),
    ],
    ids=repr,
)
def test_metrics_endpoint_rules(env, expected):
    """The general endpoint gets /v1/metrics for http; the metrics one and grpc are as is."""
    assert load(env).metrics_endpoint == expected


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_endpoint_argument_is_used_as_is(protocol):
    """An endpoint passed to setup() is the URL the exporter uses, like the SDK's argument."""
    config = load({}, otlp_endpoint="http://c:4318/custom", otlp_protocol=protocol)
    assert config.metrics_endpoint == "http://c:4318/custom"


def test_describe_has_one_row_per_setting():
    """describe() lists (field, first variable, shown value, source) for every setting."""
    config = load({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, exporters=["otlp", "console"])
    rows = config.describe()
    assert [r[0] for r in rows] == [s.field for s in SETTINGS]
    assert [r[1] for r in rows] == [s.env[0] for s in SETTINGS]
    by_field = {r[0]: r for r in rows}
    assert by_field["exporters"][2:] == ("otlp,console", "argument")
    assert by_field["otlp_protocol"][2:] == ("grpc", "env:OTEL_EXPORTER_OTLP_PROTOCOL")
    assert by_field["otlp_endpoint"][2:] == ("(unset)", "default")
    assert by_field["models"][2:] == ("(none)", "default")
    assert by_field["prometheus_port"][2:] == ("9464", "default")


def test_describe_never_reveals_header_values():
    """Header values (env or argument) never appear in describe(); their keys do."""
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20s3cr3t-t0ken,x-api-key=k3yk3y"}
    for config in (load(env), load({}, otlp_headers={"Authorization": "Bearer s3cr3t-t0ken"})):
        text = repr(config.describe())
        assert "s3cr3t" not in text
        assert "k3yk3y" not in text
        assert "Bearer" not in text
        assert "authorization=<redacted>" in text


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=1))
def test_describe_hides_any_header_value(value):
    """No header value, whatever its content, shows up in describe()."""
    secret = "zq" + value
    config = load({"OTEL_EXPORTER_OTLP_METRICS_HEADERS": f"k={secret}"})
    assert config.otlp_headers == (("k", secret),)
    assert all(secret not in cell for row in config.describe() for cell in row)


def test_missing_certificate_file_fails_naming_variable(tmp_path):
    """A TLS roots file that does not exist fails at load, not at the first export."""
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_CERTIFICATE") as info:
        load({"OTEL_EXPORTER_OTLP_CERTIFICATE": str(missing)})
    assert "readable PEM file" in str(info.value)
    present = tmp_path / "roots.pem"
    present.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load({"OTEL_EXPORTER_OTLP_CERTIFICATE": str(present)}).otlp_certificate == str(present)
