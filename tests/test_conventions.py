"""The conventions of docs/design.md that code review would otherwise have to catch by eye."""

from __future__ import annotations

import ast
import re
import typing
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic.functional_validators import BeforeValidator

from zapgate.api.settings import ApiSettings
from zapgate.console.settings import ConsoleSettings
from zapgate.health.settings import HealthSettings
from zapgate.ingest.settings import IngestSettings
from zapgate.runtime.settings import ServiceSettings
from zapgate.sender.settings import SenderSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "libs").glob("*/src")) + sorted((ROOT / "services").glob("*/src"))
SERVICES = sorted(path.name for path in (ROOT / "services").iterdir() if (path / "src").is_dir())
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def _log_events(path: Path) -> list[tuple[int, str]]:
    """(line, event) of every log call whose event is a string literal (both arms of an `if`)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LOG_METHODS
            and "log" in ast.unparse(node.func.value).lower()
            and node.args
        ):
            continue
        event = node.args[0]
        arms = [event.body, event.orelse] if isinstance(event, ast.IfExp) else [event]
        found += [
            (node.lineno, arm.value)
            for arm in arms
            if isinstance(arm, ast.Constant) and isinstance(arm.value, str)
        ]
    return found


def test_log_event_names_are_snake_case() -> None:
    """Every event a package logs is a snake_case fact (`restart_skipped`), never a sentence."""
    offending = [
        f"{path.relative_to(ROOT)}:{line}: {event!r}"
        for source in SOURCES
        for path in sorted(source.rglob("*.py"))
        for line, event in _log_events(path)
        if not _SNAKE.fullmatch(event)
    ]
    assert not offending, "\n".join(offending)


def test_the_event_scan_sees_log_calls() -> None:
    """The scan above finds events in a file known to log some (it is not vacuous)."""
    probes = ROOT / "libs/runtime/src/zapgate/runtime/probes.py"
    assert {event for _, event in _log_events(probes)} >= {"readiness_check_failed"}


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_same_module_set(service: str) -> None:
    """The same file names mean the same layer in every service (docs/design.md, "Shape")."""
    package = ROOT / "services" / service / "src" / "zapgate" / service
    expected = [
        "app.py",
        "lifecycle.py",
        "handlers.py",
        "service.py",
        "ports.py",
        "settings.py",
        "tables.py",
        "adapters/__init__.py",
        "migrations/__init__.py",
    ]
    missing = [name for name in expected if not (package / name).is_file()]
    if not ((package / "domain.py").is_file() or (package / "domain" / "__init__.py").is_file()):
        missing.append("domain.py")
    if not (ROOT / "services" / service / "tests" / "fakes.py").is_file():
        missing.append("tests/fakes.py")
    assert not missing, f"{service} lacks {missing}"


def _protocols(path: Path) -> list[str]:
    return [
        node.name
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
        and any(
            ast.unparse(base).split("[")[0] in {"Protocol", "typing.Protocol"}
            for base in node.bases
        )
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_every_protocol_of_a_service_is_in_its_ports(service: str) -> None:
    """A service's use cases depend on Protocols declared in one place, `ports.py`."""
    package = ROOT / "services" / service / "src" / "zapgate" / service
    elsewhere = [
        f"{path.relative_to(package)}: {name}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "ports.py"
        for name in _protocols(path)
    ]
    assert not elsewhere
    assert _protocols(package / "ports.py")


# Ports whose real adapter the unit tests use on purpose, each with the reason.
_NO_FAKE_NEEDED = {
    ("console", "PasswordVerifier"): "pwdlib's Argon2 is the library itself, fast enough here",
}


def _methods(node: ast.ClassDef) -> set[str]:
    defined = {
        item.name for item in node.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    fields = {
        item.target.id
        for item in node.body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }
    return defined | fields


@pytest.mark.parametrize("service", SERVICES)
def test_every_port_of_a_service_has_an_in_memory_fake(service: str) -> None:
    """For each Protocol in ports.py, tests/fakes.py has a class with all of its methods, so a
    use case is unit-tested without servers."""
    ports = ROOT / "services" / service / "src" / "zapgate" / service / "ports.py"
    fakes = ROOT / "services" / service / "tests" / "fakes.py"
    classes = [
        _methods(node)
        for node in ast.walk(ast.parse(fakes.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
    ]
    missing = [
        node.name
        for node in ast.parse(ports.read_text(encoding="utf-8")).body
        if isinstance(node, ast.ClassDef)
        and node.name in _protocols(ports)
        and (service, node.name) not in _NO_FAKE_NEEDED
        and not any(_methods(node) <= methods for methods in classes)
    ]
    assert not missing, f"{service}: no fake for {missing}"


_METRIC = re.compile(r"^zapgate_[a-z]+_[a-z0-9_]+$")
_METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Summary"}


def _metric_names(path: Path) -> list[tuple[int, str, str]]:
    return [
        (node.lineno, ast.unparse(node.func).rsplit(".", 1)[-1], node.args[0].value)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and ast.unparse(node.func).rsplit(".", 1)[-1] in _METRIC_TYPES
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ]


def test_metric_names_follow_the_convention() -> None:
    """`zapgate_<area>_<what>[_<unit>]`, snake_case; a counter is declared without `_total`
    (prometheus_client adds it), so every name reads the same in code and in `/metrics`."""
    names = [
        (path, line, kind, name)
        for source in SOURCES
        for path in sorted(source.rglob("*.py"))
        for line, kind, name in _metric_names(path)
    ]
    offending = [
        f"{path.relative_to(ROOT)}:{line}: {kind}({name!r})"
        for path, line, kind, name in names
        if not _METRIC.fullmatch(name) or (kind == "Counter" and name.endswith("_total"))
    ]
    assert names
    assert not offending, "\n".join(offending)


_UNIT_SUFFIXES = ("_s", "_ms", "_seconds", "_secs", "_minutes", "_hours")


@pytest.mark.parametrize(
    "settings", [ApiSettings, ConsoleSettings, HealthSettings, IngestSettings, SenderSettings]
)
def test_every_duration_setting_is_a_timedelta_read_as_iso_8601(
    settings: type[ServiceSettings],
) -> None:
    """A duration is a `timedelta` in code and ISO 8601 in the environment (`Duration`), never a
    number of seconds under a `_s`-style name."""
    durations = {
        name: field
        for name, field in settings.model_fields.items()
        if field.annotation is timedelta or timedelta in typing.get_args(field.annotation)
    }
    not_iso = [
        name
        for name, field in durations.items()
        if not any(
            isinstance(item, BeforeValidator) and item.func.__name__ == "_iso_8601_only"
            for item in field.metadata
        )
    ]
    in_numbers = [name for name in settings.model_fields if name.endswith(_UNIT_SUFFIXES)]
    assert durations
    assert (not_iso, in_numbers) == ([], [])


def test_services_set_up_logging_from_their_settings() -> None:
    """Every service configures logging through `configure_service_logging(settings)`, so each
    masks the secrets its settings list; none calls `configure_logging` with its own choice."""
    calls = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted((ROOT / "services").glob("*/src/**/*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("configure_logging")
    ]
    assert not calls, "\n".join(calls)
