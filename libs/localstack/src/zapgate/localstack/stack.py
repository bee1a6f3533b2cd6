"""The whole system on one machine: NATS, PostgreSQL, the W-API simulator and the three services.

`Stack(StackConfig.from_env()).up()` starts, in order: nats-server (JetStream), an embedded
PostgreSQL, the migrations of every service, the simulator (unless real W-API credentials are
configured), then ingest, health and sender as separate processes; it then registers the demo
instance in health, points its six webhook slots at ingest and starts the operator console
(login printed; the password is made once and kept in the data dir). `down()` stops everything in
reverse order. Data lives under `.zapgate/` (gitignored) so it survives restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Self

import nats
import structlog
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from zapgate.console.adapters.passwords import Argon2Passwords
from zapgate.contracts import subjects
from zapgate.contracts.health import RegisterInstance, RegistryReply
from zapgate.devservers.nats import NatsServer
from zapgate.devservers.nats_auth import DevCredentials
from zapgate.devservers.postgres import EmbeddedPostgres, free_port
from zapgate.localstack.processes import ProcessSpec, ServiceProcess
from zapgate.runtime.db import migrate_all
from zapgate.runtime.db_roles import service_role
from zapgate.runtime.provision_cli import provision
from zapgate.wapi.client import DEFAULT_BASE_URL, WapiClient
from zapgate.wapi.credentials import InstanceCredentials
from zapgate.wapi.results import WebhooksConfigured

log = structlog.get_logger("zapgate.localstack.stack")

DATABASE_NAME = "zapgate"
SIM_INSTANCE_ID = "demo"
SIM_INSTANCE_TOKEN = "demo-token"  # noqa: S105 - the simulator's own made-up token
SIM_INSTANCE_PHONE = "5511900000001"
LOCALHOST = "127.0.0.1"
CONSOLE_OPERATOR = "operador"
NATS_URL_FILE = "nats-url"
"""In the data dir: the NATS URL with the harness user's password, for `zapgate-demo`."""


class StackConfig(BaseSettings):
    """Where the local stack keeps its data and listens (`ZAPGATE_UP_*`), and its pace.

    Ports default to fixed values away from the system's own NATS (4222) and PostgreSQL
    (5432); 0 picks a free port (tests).
    """

    model_config = SettingsConfigDict(env_prefix="ZAPGATE_UP_", extra="ignore", frozen=True)

    data_dir: Path = Path(".zapgate")
    nats_port: int = Field(default=14222, ge=0, le=65535)
    postgres_port: int = Field(default=15432, ge=0, le=65535)
    sim_port: int = Field(default=18099, ge=0, le=65535)
    ingest_port: int = Field(default=18080, ge=0, le=65535)
    ingest_probe_port: int = Field(default=18081, ge=0, le=65535)
    health_probe_port: int = Field(default=18082, ge=0, le=65535)
    sender_probe_port: int = Field(default=18083, ge=0, le=65535)
    console_port: int = Field(default=18090, ge=0, le=65535)
    webhook_secret: SecretStr | None = Field(
        default=None, description="Path secret of ingest's webhook URL; default: made once."
    )
    tick_interval: timedelta = timedelta(seconds=5)
    restart_cooldown: timedelta = timedelta(minutes=5)
    stuck_window: timedelta = timedelta(seconds=10)
    sweep_every: timedelta = timedelta(seconds=2)
    log_level: str = "INFO"
    ready_timeout: float = Field(default=60.0, gt=0)


class RealWapiConfig(BaseSettings):
    """Real W-API credentials (`ZAPGATE_WAPI_*`, `ZAPGATE_PUBLIC_URL`); all unset: simulator."""

    model_config = SettingsConfigDict(env_prefix="ZAPGATE_", extra="ignore", frozen=True)

    wapi_base_url: str | None = None
    wapi_instance_id: str | None = None
    wapi_token: SecretStr | None = None
    public_url: str | None = Field(
        default=None, description="Where W-API reaches ingest from the internet (a tunnel)."
    )

    @property
    def configured(self) -> bool:
        return bool(self.wapi_instance_id and self.wapi_token)


@dataclass(frozen=True)
class Endpoints:
    """Where each part of a running stack listens."""

    nats_url: str
    database_url: str
    sim_url: str | None
    wapi_base_url: str
    ingest_webhook_url: str
    public_webhook_url: str | None
    probes: dict[str, str]
    instance_id: str
    logs_dir: Path
    console_url: str | None = None
    console_login: str | None = None
    """`user / password` of the local operator (made once, kept in the data dir)."""

    def describe(self) -> str:
        lines = [
            f"NATS (JetStream)   {self.nats_url}",
            f"PostgreSQL         {self.database_url}",
            f"W-API              {self.wapi_base_url}"
            + ("  (simulator, control API at /_sim)" if self.sim_url else "  (real)"),
            f"ingest webhooks    {_mask_secret(self.ingest_webhook_url)}",
        ]
        if self.public_webhook_url:
            lines.append(f"public webhooks    {_mask_secret(self.public_webhook_url)}")
        if self.console_url:
            lines.append(f"console            {self.console_url}")
            lines.append(f"console login      {self.console_login}")
        lines.extend(f"{name:<18} {url}" for name, url in self.probes.items())
        lines.append(f"instance           {self.instance_id}")
        lines.append(f"logs               {self.logs_dir}/")
        return "\n".join(lines)


def _mask_secret(url: str) -> str:
    head, _, _secret = url.rpartition("/")
    return f"{head}/***"


class StackError(RuntimeError):
    """The stack could not be brought up."""


class Stack:
    """Start and stop the local stack; see the module docstring for the order."""

    def __init__(
        self,
        config: StackConfig | None = None,
        real: RealWapiConfig | None = None,
        *,
        out: IO[str] | None = None,
    ) -> None:
        self.config = config or StackConfig()
        self.real = real if real is not None else RealWapiConfig()
        self._out = out
        self.data_dir = self.config.data_dir.resolve()
        self.logs_dir = self.data_dir / "logs"
        self.nats: NatsServer | None = None
        self.nats_credentials = DevCredentials.generate()
        self.postgres: EmbeddedPostgres | None = None
        self.processes: dict[str, ServiceProcess] = {}
        self.endpoints: Endpoints | None = None

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.down()

    # --- up / down ---------------------------------------------------------------------------

    def up(self) -> Endpoints:
        """Start everything; on failure stop what was started and raise."""
        try:
            return self._up()
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop the processes (reverse start order), then NATS and PostgreSQL."""
        for name in reversed(list(self.processes)):
            with contextlib.suppress(Exception):
                self.processes[name].stop()
            self._say(f"stopped {name}")
        self.processes.clear()
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
            self._say("stopped nats-server")
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
            self._say("stopped PostgreSQL")

    def _up(self) -> Endpoints:
        config = self.config
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        # NATS with zapgate's users and permissions: each service logs in with its own nkey
        # seed, streams are provisioned once by the admin user (as in production).
        self.nats_credentials = DevCredentials.generate()
        self.nats = NatsServer(
            self.data_dir / "nats",
            port=config.nats_port or None,
            log_path=self.logs_dir / "nats.log",
            auth=self.nats_credentials,
        ).start()
        asyncio.run(provision(self.nats.anonymous_url, self.nats_credentials.seed("admin")))
        url_file = self.data_dir / NATS_URL_FILE
        url_file.write_text(self.nats.url)
        url_file.chmod(0o600)
        self._say(
            f"nats-server {'.'.join(map(str, self.nats.version))} on {self.nats.anonymous_url} "
            "(auth on; streams provisioned by the admin user)"
        )
        self.postgres = EmbeddedPostgres(
            self.data_dir / "postgres", port=config.postgres_port or None
        ).start()
        database_url = self._database()
        migrated = migrate_all(database_url)
        self._say(
            f"PostgreSQL on port {self.postgres.port}; migrated: "
            + ", ".join(spec.service for spec in migrated)
        )
        secret = self._webhook_secret()
        ingest_port = config.ingest_port or _free_port()
        webhook_url = f"http://{LOCALHOST}:{ingest_port}/webhooks/{secret}"
        sim_url: str | None = None
        if self.real.configured:
            wapi_base_url = self.real.wapi_base_url or DEFAULT_BASE_URL
            instance_id = str(self.real.wapi_instance_id)
            token = self.real.wapi_token or SecretStr("")
        else:
            sim_port = config.sim_port or _free_port()
            sim_url = f"http://{LOCALHOST}:{sim_port}"
            wapi_base_url = f"{sim_url}/v1"
            instance_id, token = SIM_INSTANCE_ID, SecretStr(SIM_INSTANCE_TOKEN)
            self._start(
                "wapi-sim",
                (
                    "zapgate-wapi-sim",
                    "--host",
                    LOCALHOST,
                    "--port",
                    str(sim_port),
                    "--instance",
                    f"{SIM_INSTANCE_ID}:{SIM_INSTANCE_TOKEN}:{SIM_INSTANCE_PHONE}",
                ),
                {},
                f"{sim_url}/_sim/calls",
            )
        probes = self._start_services(database_url, wapi_base_url, ingest_port, secret)
        public_url = None
        if self.real.configured and self.real.public_url:
            public_url = f"{self.real.public_url.rstrip('/')}/webhooks/{secret}"
        asyncio.run(
            self._register(
                instance_id,
                token,
                wapi_base_url,
                public_url if self.real.configured else webhook_url,
            )
        )
        console_url, console_login = self._start_console(database_url)
        self.endpoints = Endpoints(
            nats_url=self.nats.url,
            database_url=database_url,
            sim_url=sim_url,
            wapi_base_url=wapi_base_url,
            ingest_webhook_url=webhook_url,
            public_webhook_url=public_url,
            probes=probes,
            instance_id=instance_id,
            logs_dir=self.logs_dir,
            console_url=console_url,
            console_login=console_login,
        )
        return self.endpoints

    # --- parts -------------------------------------------------------------------------------

    def _database(self) -> str:
        assert self.postgres is not None  # noqa: S101 - started just before
        with contextlib.suppress(Exception):  # exists already: data persists between runs
            self.postgres.create_database(DATABASE_NAME)
        return self.postgres.url(DATABASE_NAME)

    def _webhook_secret(self) -> str:
        return read_webhook_secret(self.config, create=True)

    def _start_services(
        self, database_url: str, wapi_base_url: str, ingest_port: int, secret: str
    ) -> dict[str, str]:
        config = self.config
        assert self.nats is not None  # noqa: S101 - started first
        ports = {
            "ingest": config.ingest_probe_port or _free_port(),
            "health": config.health_probe_port or _free_port(),
            "sender": config.sender_probe_port or _free_port(),
        }

        def common(prefix: str, service: str) -> dict[str, str]:
            assert self.nats is not None  # noqa: S101 - started first
            return {
                # dev: the local stack's own throwaway secrets (prod is the default).
                f"{prefix}ENVIRONMENT": "dev",
                f"{prefix}NATS_SEED": self.nats_credentials.seed(service),
                f"{prefix}NATS_URL": self.nats.url,
                f"{prefix}DATABASE_URL": database_url,
                # Each service logs in as its own role (trust on the local server's loopback).
                f"{prefix}DATABASE_USER": service_role(service),
                f"{prefix}PROBE_HOST": LOCALHOST,
                f"{prefix}PROBE_PORT": str(ports[service]),
                f"{prefix}LOG_LEVEL": config.log_level,
                f"{prefix}LOG_JSON": "true",
            }

        envs = {
            "ingest": common("ZAPGATE_INGEST_", "ingest")
            | {
                "ZAPGATE_INGEST_WEBHOOK_SECRETS": secret,
                "ZAPGATE_INGEST_HTTP_HOST": "0.0.0.0" if self.real.public_url else LOCALHOST,  # noqa: S104 - reached through the public URL
                "ZAPGATE_INGEST_HTTP_PORT": str(ingest_port),
                "ZAPGATE_INGEST_SPOOL_DIR": str(self.data_dir / "ingest-spool"),
                "ZAPGATE_INGEST_ACCESS_LOG": "false",
            },
            "health": common("ZAPGATE_HEALTH_", "health")
            | {
                "ZAPGATE_HEALTH_WAPI_BASE_URL": wapi_base_url,
                "ZAPGATE_HEALTH_TICK_INTERVAL": _iso(config.tick_interval),
                "ZAPGATE_HEALTH_RESTART_COOLDOWN": _iso(config.restart_cooldown),
            },
            "sender": common("ZAPGATE_SENDER_", "sender")
            | {
                "ZAPGATE_SENDER_WAPI_BASE_URL": wapi_base_url,
                "ZAPGATE_SENDER_STUCK_WINDOW": _iso(config.stuck_window),
                "ZAPGATE_SENDER_SWEEP_EVERY": _iso(config.sweep_every),
                "ZAPGATE_SENDER_MIN_SEND_GAP": "PT0S",
            },
        }
        started = [
            self._start(name, (f"zapgate-{name}", "run"), env, None, wait=False)
            for name, env in envs.items()
        ]
        # The three start at once (each spends seconds importing); then wait for each.
        with ThreadPoolExecutor(max_workers=len(started)) as pool:
            for future in [pool.submit(proc.wait_ready) for proc in started]:
                future.result()
        probes = {f"{name} probes": f"http://{LOCALHOST}:{port}" for name, port in ports.items()}
        for name in ports:
            self._say(f"{name} ready (pid {self.processes[name].pid})")
        return probes

    def _start_console(self, database_url: str) -> tuple[str, str]:
        """The operator console, with one local operator whose password is made once."""
        assert self.nats is not None  # noqa: S101 - started first
        port = self.config.console_port or _free_port()
        url = f"http://{LOCALHOST}:{port}"
        password = _secret_file(self.data_dir / "console-password")
        env = {
            "ZAPGATE_CONSOLE_ENVIRONMENT": "dev",
            # The console's own NATS user, as every service (the URL's harness login is
            # dropped when a seed is set).
            "ZAPGATE_CONSOLE_NATS_SEED": self.nats_credentials.seed("console"),
            "ZAPGATE_CONSOLE_NATS_URL": self.nats.url,
            "ZAPGATE_CONSOLE_DATABASE_URL": database_url,
            "ZAPGATE_CONSOLE_DATABASE_USER": service_role("console"),
            "ZAPGATE_CONSOLE_HTTP_HOST": LOCALHOST,
            "ZAPGATE_CONSOLE_HTTP_PORT": str(port),
            "ZAPGATE_CONSOLE_SESSION_SECRET": _secret_file(
                self.data_dir / "console-session-secret"
            ),
            "ZAPGATE_CONSOLE_OPERATORS": json.dumps(
                {CONSOLE_OPERATOR: Argon2Passwords().hash(password)}
            ),
            "ZAPGATE_CONSOLE_COOKIE_SECURE": "false",  # plain HTTP on localhost
            "ZAPGATE_CONSOLE_LOG_LEVEL": self.config.log_level,
            "ZAPGATE_CONSOLE_LOG_JSON": "true",
        }
        self._start("console", ("zapgate-console", "run"), env, f"{url}/readyz")
        return url, f"{CONSOLE_OPERATOR} / {password}"

    def _start(
        self,
        name: str,
        argv: tuple[str, ...],
        env: dict[str, str],
        ready_url: str | None,
        *,
        wait: bool = True,
    ) -> ServiceProcess:
        if ready_url is None:
            port = next(value for key, value in env.items() if key.endswith("_PROBE_PORT"))
            ready_url = f"http://{LOCALHOST}:{port}/readyz"
        process = ServiceProcess(
            ProcessSpec(
                name=name,
                argv=argv,
                env=env,
                ready_url=ready_url,
                log_path=self.logs_dir / f"{name}.log",
            ),
            ready_timeout=self.config.ready_timeout,
        )
        self.processes[name] = process
        process.start(wait_ready=wait)
        if wait:
            self._say(f"{name} ready (pid {process.pid})")
        return process

    async def _register(
        self, instance_id: str, token: SecretStr, wapi_base_url: str, webhook_url: str | None
    ) -> None:
        assert self.nats is not None  # noqa: S101 - started first
        nc = await nats.connect(
            self.nats.anonymous_url,
            connect_timeout=5,
            **self.nats_credentials.options("operator"),
        )
        try:
            command = RegisterInstance(
                instance_id=instance_id,
                display_name="zapgate local stack",
                token=token,
                replace=True,
            )
            answer = await nc.request(
                subjects.API_HEALTH_REGISTER, command.model_dump_json().encode(), timeout=30
            )
        finally:
            await nc.close()
        reply = RegistryReply.model_validate_json(answer.data)
        if not reply.ok:
            detail = reply.error.message if reply.error else "unknown"
            raise StackError(f"health refused to register {instance_id}: {detail}")
        self._say(f"registered instance {instance_id} in health")
        if webhook_url is None:
            self._say("no ZAPGATE_PUBLIC_URL: W-API webhook slots left as they are")
            return
        client = WapiClient(base_url=wapi_base_url)
        try:
            result = await client.configure_webhooks(
                InstanceCredentials(instance_id=instance_id, token=token), webhook_url
            )
        finally:
            await client.aclose()
        if not isinstance(result, WebhooksConfigured):
            raise StackError(f"could not point the webhook slots at ingest: {result!r}")
        self._say(f"pointed the six webhook slots of {instance_id} at ingest")

    def _say(self, text: str) -> None:
        log.info("stack", step=text)
        if self._out is not None:
            self._out.write(f"zapgate-up: {text}\n")
            self._out.flush()


def read_webhook_secret(config: StackConfig, *, create: bool = False) -> str:
    """Ingest's path secret: from the config, else the one made once in the data dir."""
    if config.webhook_secret is not None:
        return config.webhook_secret.get_secret_value()
    path = config.data_dir.resolve() / "webhook-secret"
    if not path.exists():
        if not create:
            raise StackError(f"no {path}: is the stack running (`./taskw up`)?")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _secret_file(path: Path) -> str:
    """A random secret made once and kept in `path` (0600), so it survives restarts."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def read_nats_url(config: StackConfig) -> str:
    """The running stack's NATS URL with the harness user's credentials (`./taskw up` writes
    it, mode 0600, each run: the stack's NATS users are made afresh every start)."""
    path = config.data_dir.resolve() / NATS_URL_FILE
    if not path.exists():
        raise StackError(f"no {path}: is the stack running (`./taskw up`)?")
    return path.read_text().strip()


def _iso(duration: timedelta) -> str:
    """ISO 8601 (`PT2.5S`): how pydantic reads a timedelta from an environment variable."""
    return f"PT{duration.total_seconds():g}S"


def _free_port() -> int:
    return free_port(LOCALHOST)
