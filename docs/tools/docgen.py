"""Generate the docs that follow the code: AsyncAPI per service and the configuration reference.

    python docs/tools/docgen.py [docs-dir]     # what `./taskw docs:gen` runs

AsyncAPI: FastStream's own generator sees only FastStream subscribers, and most of zapgate's
traffic goes through raw nats-py (ingest entirely, the sender's consumers and publishers). So
each service's channels are declared below from `zapgate.contracts.subjects` and the contract
models, and a test checks the declarations against the FastStream apps' subscribers. Payload
schemas are the contract models' JSON Schemas. tests/docs fails when a committed file drifts.
"""

# ruff: noqa: INP001 - a script beside the docs, imported by tests/docs by path, not a package

from __future__ import annotations

import html
import json
import sys
import typing
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, SecretStr
from pydantic.json_schema import models_json_schema
from pydantic_settings import BaseSettings

from zapgate.contracts import health, sending, subjects, webhooks
from zapgate.health import cli as health_cli
from zapgate.health.settings import HealthSettings
from zapgate.ingest import handlers as ingest_http
from zapgate.ingest.settings import IngestSettings
from zapgate.runtime import migrate_cli
from zapgate.sender import cli as sender_cli
from zapgate.sender.settings import SenderSettings

Action = Literal["send", "receive"]
ASYNCAPI_VERSION = "3.0.0"
INSTANCE = "instance_id"
COMMAND = "command_id"
SERVICES = ("ingest", "health", "sender")


@dataclass(frozen=True)
class Channel:
    """One subject a service publishes to (`send`) or consumes from (`receive`)."""

    action: Action
    address: str
    model: type[BaseModel] | None
    description: str
    stream: str | None = None
    reply: type[BaseModel] | None = None
    operation: str = ""
    parameters: tuple[str, ...] = field(default=())


def _param(subject_fn: typing.Callable[[str], str], name: str) -> str:
    """`zg.health.state.{instance_id}` from the contracts' own subject function."""
    marker = "PARAMxMARKER"
    return subject_fn(marker).replace(marker, "{" + name + "}")


def _webhook_models() -> dict[str, type[BaseModel]]:
    """kind -> model, read from the discriminated union ingest publishes."""
    union = get_args(webhooks.AnyWebhookEvent)[0]
    found: dict[str, type[BaseModel]] = {}
    for model in get_args(union):
        kind = model.model_fields["kind"].default
        found[str(kind.value if hasattr(kind, "value") else kind)] = model
    return found


def _ingest() -> list[Channel]:
    published = [
        Channel(
            "send",
            subjects.webhook_subject(kind),
            model,
            f"One accepted W-API webhook routed as `{kind}` (Nats-Msg-Id = dedupe key).",
            subjects.STREAM_WEBHOOKS,
            operation=f"publish_{kind}",
        )
        for kind, model in sorted(_webhook_models().items())
    ]
    return [
        *published,
        Channel(
            "send",
            subjects.webhook_subject(webhooks.QUARANTINE_KIND),
            webhooks.WebhookQuarantined,
            "An authenticated body that is not a JSON object, kept byte for byte.",
            subjects.STREAM_WEBHOOKS,
            operation="publish_quarantined",
        ),
        Channel(
            "send",
            _param(subjects.proof_of_life_subject, INSTANCE),
            health.SessionProofOfLife,
            "A webhook carried `connectedPhone`: the session is alive and complete right now.",
            subjects.STREAM_HEALTH,
            operation="publish_proof_of_life",
            parameters=(INSTANCE,),
        ),
        Channel(
            "receive",
            subjects.WEBHOOKS_ALL,
            None,
            "The archiver (durable pull) stores every webhook event in PostgreSQL in batches.",
            subjects.STREAM_WEBHOOKS,
            operation="archive_webhooks",
        ),
        Channel(
            "receive",
            _param(subjects.state_changed_subject, INSTANCE),
            health.InstanceStateChanged,
            "Followed to know each instance's last state (proof of life on stale state only).",
            subjects.STREAM_HEALTH,
            operation="follow_instance_states",
            parameters=(INSTANCE,),
        ),
    ]


def _health() -> list[Channel]:
    api: list[tuple[str, type[BaseModel], type[BaseModel]]] = [
        (subjects.API_HEALTH_REGISTER, health.RegisterInstance, health.RegistryReply),
        (subjects.API_HEALTH_LIST, health.ListInstances, health.InstanceListReply),
        (subjects.API_HEALTH_PAUSE, health.PauseInstance, health.RegistryReply),
        (subjects.API_HEALTH_REMOVE, health.RemoveInstance, health.RegistryReply),
        (subjects.API_HEALTH_GET, health.GetInstanceHealth, health.HealthReply),
        (subjects.API_HEALTH_CHECK_NOW, health.CheckNow, health.CheckNowReply),
    ]
    observed: list[tuple[typing.Callable[[str], str], type[BaseModel], str]] = [
        (subjects.proof_of_life_subject, health.SessionProofOfLife, "proof of life from ingest"),
        (subjects.session_observed_subject, health.SessionObserved, "live sessions the sender saw"),
        (subjects.delivery_signal_subject, health.DeliverySignalled, "delivery stall / resume"),
        (subjects.reconnect_requested_subject, health.ReconnectRequested, "reconnect requests"),
    ]
    return [
        Channel(
            "receive",
            subjects.HEALTH_TICK,
            health.HealthTick,
            "The server-scheduled tick: check every due instance (durable pull, one replica).",
            subjects.STREAM_TICKS,
            operation="on_health_tick",
        ),
        *(
            Channel(
                "receive",
                _param(fn, INSTANCE),
                model,
                f"Observation: {what} (durable pull).",
                subjects.STREAM_HEALTH,
                operation=f"on_{fn.__name__.removesuffix('_subject')}",
                parameters=(INSTANCE,),
            )
            for fn, model, what in observed
        ),
        *(
            Channel(
                "receive",
                subjects.webhook_subject(kind),
                _webhook_models()[kind],
                f"The `{kind}` webhook as ingest published it.",
                subjects.STREAM_WEBHOOKS,
                operation=f"on_{kind}",
            )
            for kind in (
                webhooks.WebhookKind.INSTANCE_CONNECTED.value,
                webhooks.WebhookKind.INSTANCE_DISCONNECTED.value,
                # Receipts are fresh delivery evidence: they lift a DELIVERY_STALLED gate.
                webhooks.WebhookKind.MESSAGE_STATUS.value,
            )
        ),
        *(
            Channel(
                "receive",
                subject,
                request,
                "Request-reply API (core NATS, queue group `health-api`).",
                reply=reply,
                operation=subject.removeprefix("zg.api.health.").replace(".", "_"),
            )
            for subject, request, reply in api
        ),
        Channel(
            "send",
            _param(subjects.state_changed_subject, INSTANCE),
            health.InstanceStateChanged,
            "Every state transition, from the outbox (Nats-Msg-Id = event id).",
            subjects.STREAM_HEALTH,
            operation="publish_state_changed",
            parameters=(INSTANCE,),
        ),
        Channel(
            "send",
            _param(subjects.notification_subject, INSTANCE),
            health.InstanceNotification,
            "One notification per outage and per recovery, from the outbox.",
            subjects.STREAM_HEALTH,
            operation="publish_notification",
            parameters=(INSTANCE,),
        ),
    ]


def _sender() -> list[Channel]:
    return [
        Channel(
            "receive",
            _param(subjects.send_command_subject, INSTANCE),
            sending.SendMessage,
            "Send commands (durable pull; per-instance lanes keep order within one replica).",
            subjects.STREAM_SEND,
            operation="on_send_command",
            parameters=(INSTANCE,),
        ),
        Channel(
            "receive",
            subjects.webhook_subject(webhooks.WebhookKind.MESSAGE_STATUS.value),
            webhooks.MessageStatusReported,
            "Delivery receipts from W-API, matched to sends by messageId.",
            subjects.STREAM_WEBHOOKS,
            operation="on_message_status",
        ),
        Channel(
            "receive",
            _param(subjects.state_changed_subject, INSTANCE),
            health.InstanceStateChanged,
            "Instance recoveries release held sends.",
            subjects.STREAM_HEALTH,
            operation="on_instance_state_changed",
            parameters=(INSTANCE,),
        ),
        Channel(
            "receive",
            subjects.SENDER_TICK,
            None,
            "The server-scheduled sweep tick: stuck `sent` messages and expired holds.",
            subjects.STREAM_TICKS,
            operation="on_sender_tick",
        ),
        Channel(
            "receive",
            subjects.API_SENDER_OUTCOME,
            sending.GetSendOutcome,
            "Request-reply: the stored outcome of one command.",
            reply=sending.SendOutcomeReply,
            operation="get_send_outcome",
        ),
        Channel(
            "receive",
            subjects.API_SENDER_RETRY,
            sending.RetrySend,
            "Request-reply: retry a failed send as a new command.",
            reply=sending.SendOutcomeReply,
            operation="retry_send",
        ),
        Channel(
            "receive",
            subjects.API_SENDER_CANCEL,
            sending.CancelSend,
            "Request-reply: cancel a held command (it fails with CANCELLED, never sent).",
            reply=sending.SendOutcomeReply,
            operation="cancel_send",
        ),
        Channel(
            "send",
            _param(subjects.send_outcome_subject, COMMAND),
            sending.SendOutcome,
            "The honest outcome of a command (Nats-Msg-Id per command and status).",
            subjects.STREAM_SEND,
            operation="publish_send_outcome",
            parameters=(COMMAND,),
        ),
        Channel(
            "send",
            _param(subjects.message_status_subject, INSTANCE),
            sending.MessageStatusChanged,
            "A sent message moved forward (delivered, read, played).",
            subjects.STREAM_SEND,
            operation="publish_message_status",
            parameters=(INSTANCE,),
        ),
        Channel(
            "send",
            _param(subjects.message_alert_subject, INSTANCE),
            sending.MessageStuck,
            "A message stayed `sent` longer than the stuck window.",
            subjects.STREAM_SEND,
            operation="publish_message_stuck",
            parameters=(INSTANCE,),
        ),
        Channel(
            "send",
            _param(subjects.delivery_signal_subject, INSTANCE),
            health.DeliverySignalled,
            "Delivery stalled or resumed, for health.",
            subjects.STREAM_HEALTH,
            operation="publish_delivery_signal",
            parameters=(INSTANCE,),
        ),
        Channel(
            "send",
            _param(subjects.session_observed_subject, INSTANCE),
            health.SessionObserved,
            "What the live pre-send check saw, for health.",
            subjects.STREAM_HEALTH,
            operation="publish_session_observed",
            parameters=(INSTANCE,),
        ),
        Channel(
            "send",
            _param(subjects.reconnect_requested_subject, INSTANCE),
            health.ReconnectRequested,
            "A send found the session down: ask health to reconnect.",
            subjects.STREAM_HEALTH,
            operation="publish_reconnect_requested",
            parameters=(INSTANCE,),
        ),
    ]


def channels(service: str) -> list[Channel]:
    """The declared channels of one service."""
    return {"ingest": _ingest, "health": _health, "sender": _sender}[service]()


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
}


def _type_name(annotation: Any) -> str:  # noqa: ANN401 - any type annotation
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
        return f"`{value.total_seconds():g}` (s)"
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
            "Each service reads its own prefix. Durations take seconds (`300`) or ISO 8601 "
            "(`PT5M`). `environment` is `prod` unless set: prod refuses secrets and database "
            "passwords shorter than 32 characters, placeholders (`changeme...`, "
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
