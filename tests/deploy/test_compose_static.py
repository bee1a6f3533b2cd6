"""The compose file and the Dockerfiles, checked statically (no Docker engine on our machines)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from zapgate.api.settings import ApiSettings
from zapgate.console.settings import ConsoleSettings
from zapgate.health.settings import HealthSettings
from zapgate.ingest.settings import IngestSettings
from zapgate.runtime import db_roles
from zapgate.runtime.migrate_cli import DATABASE_URL_ENV
from zapgate.runtime.provision_cli import NATS_SEED_ENV
from zapgate.sender.settings import SenderSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
SETTINGS: dict[str, type[BaseSettings]] = {
    "ingest": IngestSettings,
    "health": HealthSettings,
    "sender": SenderSettings,
    "api": ApiSettings,
    "console": ConsoleSettings,
}
# Defaults that point at 127.0.0.1 are wrong inside a container, so compose must set them.
MUST_SET_IN_CONTAINERS = frozenset({"nats_url", "database_url"})
ONE_SHOT = frozenset({"migrate"})
BASE_IMAGE = "python:3.11-slim"
MIN_NATS = (2, 14)


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _env_files(service: dict[str, Any]) -> list[tuple[Path, bool]]:
    entries = service.get("env_file", [])
    entries = [entries] if isinstance(entries, str) else entries
    found = []
    for entry in entries:
        if isinstance(entry, str):
            found.append((DEPLOY / entry, True))
        else:
            found.append((DEPLOY / entry["path"], bool(entry.get("required", True))))
    return found


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            values[key.strip()] = value.strip()
    return values


def _provided_env(service: dict[str, Any]) -> set[str]:
    provided = set(service.get("environment", {}))
    for path, _required in _env_files(service):
        if path.exists():
            provided |= set(_read_env_file(path))
    return provided


def _env_name(settings: type[BaseSettings], field: str) -> str:
    return f"{settings.model_config.get('env_prefix', '')}{field}".upper()


def _needed_env(settings: type[BaseSettings]) -> set[str]:
    return {
        _env_name(settings, name)
        for name, info in settings.model_fields.items()
        if info.is_required() or name in MUST_SET_IN_CONTAINERS
    }


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    found = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _dockerfiles() -> dict[str, Path]:
    built = {}
    for name, service in _services().items():
        build = service.get("build")
        if build is not None:
            built[name] = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
    return built


def test_every_long_running_service_has_a_healthcheck() -> None:
    """Each service but the one-shot migration declares a healthcheck with a test command."""
    for name, service in _services().items():
        if name in ONE_SHOT:
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_depends_on_names_existing_services_with_a_real_condition() -> None:
    """Every dependency exists and waits for health or, for migrate, for completion."""
    services = _services()
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert rule["condition"] == expected, f"{name} -> {dependency}: {rule}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} cannot be healthy"


def test_the_services_wait_for_nats_postgres_and_the_migration() -> None:
    """Every service starts only once its dependencies are up and migrated."""
    for name in SETTINGS:
        dependencies = _services()[name]["depends_on"]
        assert {"nats", "postgres", "migrate"} <= set(dependencies), name


def test_every_build_points_at_an_existing_dockerfile_in_deploy() -> None:
    """Each build names a Dockerfile that exists under deploy/; each service has its own."""
    dockerfiles = _dockerfiles()
    assert set(SETTINGS) | ONE_SHOT <= set(dockerfiles)
    for name, path in dockerfiles.items():
        assert path.is_file(), f"{name}: {path} missing"
        assert path.parent == DEPLOY, f"{name}: {path} is not in deploy/"
    assert len(set(dockerfiles.values())) == len(dockerfiles), "services share a Dockerfile"


def test_required_env_files_exist_and_optional_ones_are_not_committed() -> None:
    """Every required env_file exists; the real secrets file (.env) is optional and ignored."""
    for name, service in _services().items():
        for path, required in _env_files(service):
            if required:
                assert path.is_file(), f"{name}: env file {path} missing"
            else:
                assert path.name == ".env", f"{name}: only deploy/.env may be optional"


def test_every_setting_without_a_usable_default_is_provided_to_its_service() -> None:
    """Required settings (from the settings classes) and the server URLs reach each service."""
    services = _services()
    for name, settings in SETTINGS.items():
        missing = _needed_env(settings) - _provided_env(services[name])
        assert not missing, f"{name} lacks {sorted(missing)}"
    assert DATABASE_URL_ENV in _provided_env(services["migrate"])


def test_no_service_sets_a_variable_its_settings_do_not_read() -> None:
    """A misspelled ZAPGATE_<SVC>_* variable would be silently ignored, so none may exist."""
    services = _services()
    for name, settings in SETTINGS.items():
        prefix = str(settings.model_config.get("env_prefix", "")).upper()
        known = {_env_name(settings, field) for field in settings.model_fields}
        set_here = {key for key in services[name].get("environment", {}) if key.startswith(prefix)}
        assert set_here <= known, f"{name}: unknown {sorted(set_here - known)}"
    every_known = {_env_name(s, f) for s in SETTINGS.values() for f in s.model_fields}
    example = set(_read_env_file(DEPLOY / ".env.example"))
    for key in example:
        if key.startswith("ZAPGATE_") and key not in {DATABASE_URL_ENV, NATS_SEED_ENV}:
            assert key in every_known, f".env.example sets unknown {key}"


def test_the_example_webhook_secret_is_refused_outside_dev() -> None:
    """Started with the example file in prod, ingest refuses the placeholder webhook secret."""
    example = _read_env_file(DEPLOY / ".env.example")
    values = {
        "database_url": "postgresql+psycopg://zapgate:a-real-password@postgres/zapgate",
        "webhook_secrets": example["ZAPGATE_INGEST_WEBHOOK_SECRETS"],
    }
    with pytest.raises(ValidationError, match="webhook_secrets"):
        IngestSettings.model_validate({**values, "environment": "prod"})
    assert IngestSettings.model_validate({**values, "environment": "dev"}).webhook_secrets


@pytest.mark.parametrize("svc", sorted(SETTINGS))
def test_the_example_database_password_is_refused_outside_dev(svc: str) -> None:
    """The example database URL carries a placeholder password, so prod must refuse it."""
    example = _read_env_file(DEPLOY / ".env.example")
    settings = SETTINGS[svc]
    values = {
        "environment": "prod",
        "database_url": example[_env_name(settings, "database_url")],
        "webhook_secrets": "a-real-webhook-secret-0123456789",
    }
    with pytest.raises(ValidationError, match="database_url"):
        settings.model_validate(values)


def test_nats_images_are_at_least_2_14() -> None:
    """Message schedules (the ticks) need nats-server 2.12+; zapgate requires 2.14."""
    images = [
        s["image"] for s in _services().values() if str(s.get("image", "")).startswith("nats")
    ]
    assert len(images) == 4  # the single server and the three cluster nodes
    for image in images:
        match = re.fullmatch(r"nats:(\d+)\.(\d+)(?:\.\d+)?(?:-[a-z0-9.]+)?", image)
        assert match, image
        assert (int(match[1]), int(match[2])) >= MIN_NATS, image


def test_nats_keeps_jetstream_on_a_volume_and_the_cluster_routes_to_its_peers() -> None:
    """Each NATS config enables JetStream in /data (a volume); cluster nodes name the others."""
    services = _services()
    for name in ("nats", "nats-1", "nats-2", "nats-3"):
        mounts = services[name]["volumes"]
        assert any(str(m).endswith(":/data") for m in mounts), name
        config = next(m.split(":")[0] for m in mounts if str(m).endswith("nats.conf:ro"))
        text = (DEPLOY / config).read_text(encoding="utf-8")
        assert "store_dir: /data/jetstream" in text, name
        if name != "nats":
            assert services[name]["profiles"] == ["cluster"]
            peers = {p for p in ("nats-1", "nats-2", "nats-3") if p != name}
            assert set(re.findall(r"nats-route://(nats-\d):6222", text)) == peers, name


def test_every_named_volume_is_declared() -> None:
    """Named volumes used by services appear under the top-level `volumes` key."""
    declared = set(_compose().get("volumes") or {})
    used = set()
    for service in _services().values():
        for mount in service.get("volumes", []):
            source = str(mount).split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used, "no named volumes at all"
    assert used <= declared, sorted(used - declared)
    assert {"nats-data", "postgres-data"} <= used


def test_postgres_is_16_and_the_simulator_runs_only_in_its_profile() -> None:
    """PostgreSQL 16 with a volume; the W-API simulator is opt-in through a profile."""
    services = _services()
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["simulator"]["profiles"] == ["simulator"]


@pytest.mark.parametrize("name", sorted(SETTINGS) + sorted(ONE_SHOT) + ["simulator"])
def test_dockerfile_installs_dependencies_before_copying_the_code(name: str) -> None:
    """`uv sync --no-install-workspace` from the lock runs before any source directory COPY."""
    steps = _instructions(_dockerfiles()[name])
    dependency_step = next(
        i
        for i, (op, args) in enumerate(steps)
        if op == "RUN"
        and "uv sync" in args
        and "--frozen" in args
        and "--no-install-workspace" in args
    )
    lock_copy = next(i for i, (op, args) in enumerate(steps) if op == "COPY" and "uv.lock" in args)
    code_copies = [
        i
        for i, (op, args) in enumerate(steps)
        if op == "COPY" and re.match(r"(libs|services)(/[a-z]+)?/?\s", args + " ")
    ]
    assert code_copies, "the code is never copied"
    assert lock_copy < dependency_step < min(code_copies)


@pytest.mark.parametrize("name", sorted(SETTINGS) + sorted(ONE_SHOT) + ["simulator"])
def test_dockerfile_runs_as_non_root_on_python_slim(name: str) -> None:
    """Every stage builds FROM python:3.11-slim and the final user is not root."""
    steps = _instructions(_dockerfiles()[name])
    bases = [args.split()[0] for op, args in steps if op == "FROM"]
    assert bases, "no FROM"
    assert all(base == BASE_IMAGE for base in bases), bases
    users = [args for op, args in steps if op == "USER"]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_service_dockerfile_probes_readyz_and_runs_its_console_script(name: str) -> None:
    """The image's HEALTHCHECK asks /readyz and its CMD is the package's own console script."""
    steps = _instructions(_dockerfiles()[name])
    healthchecks = [args for op, args in steps if op == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/readyz" in healthchecks[0]
    pyproject = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text("utf-8"))
    scripts = set(pyproject["project"]["scripts"])
    command = next(args for op, args in steps if op == "CMD")
    assert re.search(r'\["([a-z\-]+)"', command)[1] in scripts  # type: ignore[index]
    assert f"--package {pyproject['project']['name']}" in next(
        args for op, args in steps if op == "RUN" and "--no-install-workspace" in args
    )


def test_one_shot_migration_image_declares_no_healthcheck_and_installs_every_service() -> None:
    """The migrate image says HEALTHCHECK NONE and installs every service's migrations."""
    steps = _instructions(_dockerfiles()["migrate"])
    assert ("HEALTHCHECK", "NONE") in steps
    install = next(args for op, args in steps if op == "RUN" and "--no-install-workspace" in args)
    for name in SETTINGS:
        assert f"--package zapgate-{name}" in install


def test_the_cluster_profile_points_every_nats_client_at_the_cluster_with_r3_streams() -> None:
    """docker-compose.cluster.yml: migrate provisions R3 against nats-1, each service connects
    to nats-1 and verifies R3 streams, and waits for all three nodes; the nodes run with the
    single server's users and TLS, routed to each other."""
    overlay = yaml.safe_load((DEPLOY / "docker-compose.cluster.yml").read_text(encoding="utf-8"))
    services = overlay["services"]
    assert "--replicas 3" in " ".join(services["migrate"]["command"])
    assert services["migrate"]["environment"]["ZAPGATE_NATS_URL"] == "tls://nats-1:4222"
    for name, settings in SETTINGS.items():
        env = services[name]["environment"]
        assert env[_env_name(settings, "nats_url")] == "tls://nats-1:4222"
        assert env[_env_name(settings, "stream_replicas")] == "3"
    for service in services.values():
        assert set(service["depends_on"]) == {"nats-1", "nats-2", "nats-3"}
    base = _services()
    for index in (1, 2, 3):
        node = base[f"nats-{index}"]
        assert node["profiles"] == ["cluster"]
        mounts = " ".join(node["volumes"])
        assert "auth.conf" in mounts
        assert "certs" in mounts
        conf = (DEPLOY / "nats" / f"cluster-{index}.conf").read_text(encoding="utf-8")
        assert "include ./auth.conf" in conf
        assert "tls {" in conf
        routes = set(re.findall(r"nats-route://(nats-\d):6222", conf))
        assert routes == {f"nats-{other}" for other in (1, 2, 3) if other != index}


def _merged_env(name: str) -> dict[str, str]:
    """What the container `name` sees: .env.example, then its `environment:` block."""
    values = _read_env_file(DEPLOY / ".env.example")
    values.update({k: str(v) for k, v in _services()[name].get("environment", {}).items()})
    return values


@pytest.mark.parametrize("svc", sorted(SETTINGS))
def test_each_service_logs_in_to_postgres_as_its_own_role_with_its_own_password(svc: str) -> None:
    """The service's URL names zapgate_<svc> (never the superuser of ZAPGATE_DATABASE_URL); its
    password is a setting of its own, which `migrate` also sees to set the role's password."""
    env = _merged_env(svc)
    prefix = f"ZAPGATE_{svc.upper()}_"
    url = make_url(env[f"{prefix}DATABASE_URL"])
    assert url.username == db_roles.service_role(svc)
    assert url.username != make_url(env[DATABASE_URL_ENV]).username
    assert url.password is None, "the password belongs in DATABASE_PASSWORD, not the URL"
    assert env[db_roles.password_env(svc)]
    assert db_roles.password_env(svc) in _merged_env("migrate")


@pytest.mark.parametrize("svc", sorted(SETTINGS))
def test_containers_bind_probes_and_http_to_their_own_address(svc: str) -> None:
    """Loopback is the settings' default; inside a container the probes (and the HTTP of the
    API and the console) must answer the healthcheck's and Prometheus's connections."""
    env = _merged_env(svc)
    prefix = f"ZAPGATE_{svc.upper()}_"
    for field in ("probe_host", "http_host"):
        if field in SETTINGS[svc].model_fields and (field != "probe_host" or svc != "console"):
            assert env.get(f"{prefix}{field.upper()}") == "0.0.0.0", (svc, field)  # noqa: S104
