"""The package layout: a small root, layers that point one way, private SDK names in one seam."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import routemeter

PACKAGE = Path(routemeter.__file__).parent
SEAM = PACKAGE / "recording" / "_otel_private.py"
SDK_PRIVATE_NAMES = frozenset(
    {
        "_instrument_class_temporality",
        "_instrument_class_aggregation",
        "_max_size",
        "_max_scale",
        "_collect",
        "_set_collect_callback",
        "_RUNTIME_CONTEXT",
        "_current_context",
        "_sdk_config",
        "_mapping",
        "_Gauge",
        "_receive_metrics",
    }
)
ALLOWED_PRIVATE_MODULES = ("opentelemetry.semconv._incubating",)  # semconv's documented home


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != SEAM)


def test_package_root_holds_at_most_six_modules():
    """Besides __init__, __main__ and testing, at most six modules sit at the package root."""
    root = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py", "testing.py"}
    assert len(root) <= 6, sorted(root)


def test_subpackages_are_named_for_the_architecture():
    """The folder list reads like the design."""
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == {"demo", "export", "integrations", "recording", "request", "tools"}


def _private_sdk_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    own_slots = {
        id(const)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)
        for const in ast.walk(node.value)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opentelemetry"):
            module = node.module or ""
            private_module = any(part.startswith("_") for part in module.split("."))
            if private_module and not module.startswith(ALLOWED_PRIVATE_MODULES):
                found.append(f"{path.name}:{node.lineno} from {module}")
            found += [
                f"{path.name}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")
            ]
        elif (
            isinstance(node, ast.Constant)
            and node.value in SDK_PRIVATE_NAMES
            and id(node) not in own_slots
        ):
            found.append(f"{path.name}:{node.lineno} {node.value!r}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in SDK_PRIVATE_NAMES
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        ):
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def test_private_sdk_names_are_read_only_in_the_seam():
    """No module but recording/_otel_private.py reads a private OTel SDK or exporter name."""
    offenders = [use for path in _sources() for use in _private_sdk_uses(path)]
    assert offenders == []


def test_the_seam_check_finds_a_private_read():
    """The scan above would catch a private read (it is not vacuous)."""
    assert _private_sdk_uses(SEAM)


def test_import_contracts_hold():
    """lint-imports keeps every pyproject.toml contract: layers, no cycles, no OTel in request."""
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert linter is not None
    done = subprocess.run(
        [linter],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout
