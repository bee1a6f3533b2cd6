"""Generate the docs that follow the code: AsyncAPI per service and the configuration reference.

    python docs/tools/docgen.py [docs-dir]     # what `./taskw docs:gen` runs

AsyncAPI: generated from the declarations in `zapgate.runtime.topology` (streams, consumer
specs, publications, request-reply verbs) and the contract models, the same declarations the
services run with; nothing is declared a second time here. FastStream's own generator would see
only FastStream subscribers, and most traffic goes through raw nats-py. Payload schemas are the
contract models' JSON Schemas. tests/docs fails when a committed file drifts.
"""

# ruff: noqa: INP001 - a script beside the docs, imported by tests/docs by path, not a package

from __future__ import annotations

import html
import json
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr
from pydantic.json_schema import models_json_schema
from pydantic_settings import BaseSettings

from zapgate.api.settings import ApiSettings
from zapgate.console.settings import ConsoleSettings
from zapgate.health import cli as health_cli
from zapgate.health.settings import HealthSettings
from zapgate.ingest import handlers as ingest_http
from zapgate.ingest.settings import IngestSettings
from zapgate.runtime import migrate_cli, topology
from zapgate.runtime.settings import iso_duration
from zapgate.sender import cli as sender_cli
from zapgate.sender.settings import SenderSettings

Action = Literal["send", "receive"]
ASYNCAPI_VERSION = "3.0.0"
SERVICES = topology.SERVICES


@dataclass(frozen=True)
class Channel:
    """One subject a service publishes to (`send`) or consumes from (`receive`), as documented."""

    action: Action
    address: str
    model: type[BaseModel] | None
    description: str
    stream: str | None = None
    reply: type[BaseModel] | None = None
    operation: str = ""
    parameters: tuple[str, ...] = field(default=())


def _address(subject: str, parameters: tuple[str, ...]) -> str:
    """`zg.health.state.*` with parameters (`instance_id`,) -> `zg.health.state.{instance_id}`."""
    names = iter(parameters)
    return ".".join(
        "{" + next(names) + "}" if part == "*" and parameters else part
        for part in subject.split(".")
    )


def channels(service: str) -> list[Channel]:
    """The channels of one service, from the topology's declarations (nothing declared here)."""
    consumed = [
        Channel(
            "receive",
            _address(spec.filter_subjects[0], spec.parameters),
            spec.message,
            spec.description or "",
            spec.stream,
            operation=spec.operation,
            parameters=spec.parameters,
        )
        for spec in topology.consumers_of(service)
    ]
    answered = [
        Channel(
            "receive",
            spec.subject,
            spec.request,
            spec.description,
            reply=spec.reply,
            operation=spec.operation,
        )
        for spec in topology.requests_of(service)
    ]
    published = [
        Channel(
            "send",
            _address(spec.subject, spec.parameters),
            spec.message,
            spec.description,
            spec.stream,
            operation=spec.operation,
            parameters=spec.parameters,
        )
        for spec in topology.publications_of(service)
    ]
    return [*consumed, *answered, *published]


_DESCRIPTIONS = {
    "ingest": "Webhook gateway: POST /webhooks/{secret} (HTTP) in, one JetStream message per "
    f"accepted webhook out. HTTP path template: `{ingest_http.WEBHOOK_PATH}`.",
    "health": "The single owner of instance state: checks on ticks, restarts, notifications.",
    "sender": "Gated, idempotent sends with honest outcomes and delivery tracking.",
}


def _channel_id(address: str) -> str:
    return address.replace("{", "").replace("}", "").replace(".>", ".all").replace(".", "_")


def asyncapi(service: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of one service, deterministic."""
    declared = channels(service)
    models = sorted(
        {m for c in declared for m in (c.model, c.reply) if m is not None},
        key=lambda m: m.__name__,
    )
    _, schema_defs = models_json_schema(
        [(model, "validation") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    messages: dict[str, Any] = {
        "AnyPayload": {"name": "AnyPayload", "payload": {"type": "object"}},
    }
    for model in models:
        messages[model.__name__] = {
            "name": model.__name__,
            "title": model.__name__,
            "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "",
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
        }
    doc_channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel in declared:
        channel_id = _channel_id(channel.address)
        entry = doc_channels.setdefault(
            channel_id,
            {"address": channel.address, "messages": {}, "description": channel.description},
        )
        if channel.stream is not None:
            entry["x-jetstream-stream"] = channel.stream
        if channel.parameters:
            entry["parameters"] = {
                p: {"description": f"`{p}` as a subject token"} for p in channel.parameters
            }
        message = channel.model.__name__ if channel.model else "AnyPayload"
        entry["messages"][message] = {"$ref": f"#/components/messages/{message}"}
        operation: dict[str, Any] = {
            "action": channel.action,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": channel.description,
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message}"}],
        }
        if channel.reply is not None:
            reply_id = f"{channel_id}_reply"
            doc_channels[reply_id] = {
                "address": None,
                "description": "The requester's inbox (core NATS reply subject).",
                "messages": {
                    channel.reply.__name__: {
                        "$ref": f"#/components/messages/{channel.reply.__name__}"
                    }
                },
            }
            operation["reply"] = {
                "channel": {"$ref": f"#/channels/{reply_id}"},
                "messages": [{"$ref": f"#/channels/{reply_id}/messages/{channel.reply.__name__}"}],
            }
        operations[channel.operation] = operation
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"zapgate-{service}",
            "version": metadata.version(f"zapgate-{service}"),
            "description": _DESCRIPTIONS[service],
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "nats:4222",
                "protocol": "nats",
                "description": "NATS with JetStream (>= 2.14)",
            }
        },
        "channels": dict(sorted(doc_channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": {
            "messages": dict(sorted(messages.items())),
            "schemas": dict(sorted(schema_defs["$defs"].items())),
        },
    }


# --- HTML ----------------------------------------------------------------------------------


def render_html(doc: dict[str, Any]) -> str:
    """A small self-contained page: operations with their channel, message and payload schema."""
    esc = html.escape
    info = doc["info"]
    rows = []
    for op_id, operation in doc["operations"].items():
        channel_id = operation["channel"]["$ref"].rsplit("/", 1)[-1]
        channel = doc["channels"][channel_id]
        message = operation["messages"][0]["$ref"].rsplit("/", 1)[-1]
        reply = ""
        if "reply" in operation:
            reply_name = operation["reply"]["messages"][0]["$ref"].rsplit("/", 1)[-1]
            reply = f' &rarr; reply <a href="#schema-{esc(reply_name)}">{esc(reply_name)}</a>'
        stream = channel.get("x-jetstream-stream")
        rows.append(
            f'<tr><td class="{esc(operation["action"])}">{esc(operation["action"])}</td>'
            f"<td><code>{esc(channel['address'])}</code></td>"
            f"<td>{esc(stream) if stream else 'core NATS'}</td>"
            f'<td><a href="#schema-{esc(message)}">{esc(message)}</a>{reply}</td>'
            f"<td><code>{esc(op_id)}</code><br>{esc(operation['summary'])}</td></tr>"
        )
    schemas = [
        f'<details id="schema-{esc(name)}"><summary>{esc(name)}</summary>'
        f"<pre>{esc(json.dumps(schema, indent=2, ensure_ascii=False))}</pre></details>"
        for name, schema in doc["components"]["schemas"].items()
    ]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2rem;max-width:80rem}"
        "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4rem;"
        "vertical-align:top;text-align:left}.send{color:#05a}.receive{color:#a50}"
        "pre{background:#f6f6f6;padding:.5rem;overflow:auto}summary{cursor:pointer}"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(info['title'])} AsyncAPI</title><style>{style}</style></head><body>\n"
        f"<h1>{esc(info['title'])} <small>{esc(info['version'])}</small></h1>\n"
        f"<p>{esc(info['description'])}</p>\n"
        f"<p>AsyncAPI {esc(doc['asyncapi'])}, generated by docs/tools/docgen.py; "
        "do not edit.</p>\n"
        "<h2>Operations</h2>\n<table><tr><th>action</th><th>subject</th><th>stream</th>"
        "<th>message</th><th>operation</th></tr>\n" + "\n".join(rows) + "\n</table>\n"
        "<h2>Schemas</h2>\n" + "\n".join(schemas) + "\n</body></html>\n"
    )


# --- configuration reference ---------------------------------------------------------------

SETTINGS: dict[str, type[BaseSettings]] = {
    "ingest": IngestSettings,
    "health": HealthSettings,
    "sender": SenderSettings,
    "console": ConsoleSettings,
    "api": ApiSettings,
}


def _type_name(annotation: Any) -> str:  # noqa: ANN401 - any type annotation
    if get_origin(annotation) is Annotated:  # e.g. the runtime's Duration: its base type
        return _type_name(get_args(annotation)[0])
    if get_origin(annotation) in {Union, UnionType}:
        return " or ".join(_type_name(member) for member in get_args(annotation))
    text = getattr(annotation, "__name__", None) if not get_args(annotation) else None
    text = text or str(annotation).replace("typing.", "").replace("pathlib.", "")
    replacements = {
        "timedelta": "duration",
        "SecretStr": "secret",
        "pydantic.types.": "",
        "datetime.": "",
        "NoneType": "None",
    }
    for old, new in replacements.items():
        text = text.replace(old, new)
    text = text.replace(" | ", " or ")
    if text == "list[secret]":
        text = "list of secrets (comma-separated)"
    if text.startswith("Literal["):
        text = "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    return text


def _default(value: object) -> str:
    if isinstance(value, timedelta):
        return f"`{iso_duration(value)}`"
    if isinstance(value, SecretStr):
        return "(secret)"
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def configuration_markdown() -> str:
    """Every setting of every service, its environment variable and default."""
    lines = [
        "# Configuration reference",
        "",
        (
            "Generated from the settings classes by `./taskw docs:gen` (docs/tools/docgen.py); "
            "a test fails when it drifts. Do not edit by hand."
        ),
        "",
        (
            "Each service reads its own prefix. Durations are ISO 8601 (`PT30S`, `PT5M`, "
            "`P1D`); settings not yet typed `Duration` also take seconds (`300`). "
            "`environment` is `prod` unless set: prod refuses secrets and database passwords"
            " shorter than 32 characters, placeholders (`changeme...`, "
            "`dev-secret...`), common passwords and a database URL without a password, each "
            "with a coded message (`SECRET_TOO_SHORT`, ...); `test` refuses placeholders; "
            "`dev` accepts anything. Booleans: `true`/`false`."
        ),
        "",
    ]
    for service, settings in SETTINGS.items():
        prefix = str(settings.model_config.get("env_prefix", ""))
        lines += [
            f"## {service} (`{settings.__name__}`, prefix `{prefix}`)",
            "",
            "| setting | environment variable | type | default | meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, info in settings.model_fields.items():
            default = "**required**" if info.is_required() else _default(info.get_default())
            meaning = (info.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| `{name}` | `{(prefix + name).upper()}` | {_type_name(info.annotation)} "
                f"| {default} | {meaning} |"
            )
        lines.append("")
    lines += [
        "## Command-line tools",
        "",
        "| variable | read by | meaning |",
        "| --- | --- | --- |",
        (
            f"| `{migrate_cli.DATABASE_URL_ENV}` | `zapgate-migrate` | PostgreSQL URL to migrate "
            "(every installed service's tables) |"
        ),
        (
            f"| `{health_cli.NATS_URL_ENV}` | `zapgate-health` (commands) | NATS URL of the "
            "request API |"
        ),
        (
            f"| `{health_cli.TOKEN_ENV}` | `zapgate-health instances add` | the instance's W-API "
            "token (read from the environment, never from the command line) |"
        ),
        (
            f"| `{sender_cli.NATS_URL_ENV}` | `zapgate-sender` (commands) | NATS URL of the "
            "sender API |"
        ),
        "",
    ]
    return "\n".join(lines)


def render_all() -> dict[str, str]:
    """Relative path under docs/ -> text, for every generated file."""
    files = {"configuration.md": configuration_markdown()}
    for service in SERVICES:
        doc = asyncapi(service)
        files[f"asyncapi/{service}.json"] = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        files[f"asyncapi/{service}.yaml"] = yaml.safe_dump(
            doc, sort_keys=False, allow_unicode=True, width=100
        )
        files[f"asyncapi/{service}.html"] = render_html(doc)
    return files


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    for relative, text in render_all().items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
