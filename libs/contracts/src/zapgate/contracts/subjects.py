"""Stream and subject names: the only place they are spelled out.

Subjects are lower-case dot-separated tokens. Tokens taken from outside data (instance ids,
command ids) go through `token()` so a stray `.`, `*` or `>` can never change routing, and a
5,000-character id can never exceed the server's control-line limit.
"""

from __future__ import annotations

from typing import Final

from zapgate.contracts.bounds import bounded_id


def token(value: str) -> str:
    """`value` as one subject token: `bounds.bounded_id(value, token=True)`.

    Safe values (`[A-Za-z0-9_-]`, 1..64 characters) are unchanged; others are rewritten and cut
    with a hash suffix, so distinct values stay distinct (`a.b` -> `a_b~<hash>`, `a_b` -> `a_b`).
    """
    return bounded_id(value, token=True)


# --- ingest: one message per accepted webhook -------------------------------------------
STREAM_WEBHOOKS: Final = "ZG_WEBHOOKS"
WEBHOOKS_ALL: Final = "zg.webhook.>"


def webhook_subject(kind: str) -> str:
    return f"zg.webhook.{kind}"


# --- health: state, notifications and the observations other services send it ------------
STREAM_HEALTH: Final = "ZG_HEALTH"
HEALTH_ALL: Final = "zg.health.>"
STATE_CHANGED_ALL: Final = "zg.health.state.*"
NOTIFICATIONS_ALL: Final = "zg.health.notification.*"
PROOF_OF_LIFE_ALL: Final = "zg.health.observed.proof_of_life.*"
SESSION_OBSERVED_ALL: Final = "zg.health.observed.live.*"
RECONNECT_REQUESTED_ALL: Final = "zg.health.reconnect.*"
DELIVERY_STALL_ALL: Final = "zg.health.delivery.*"


def state_changed_subject(instance_id: str) -> str:
    return f"zg.health.state.{token(instance_id)}"


def notification_subject(instance_id: str) -> str:
    return f"zg.health.notification.{token(instance_id)}"


def proof_of_life_subject(instance_id: str) -> str:
    return f"zg.health.observed.proof_of_life.{token(instance_id)}"


def session_observed_subject(instance_id: str) -> str:
    return f"zg.health.observed.live.{token(instance_id)}"


def reconnect_requested_subject(instance_id: str) -> str:
    return f"zg.health.reconnect.{token(instance_id)}"


def delivery_signal_subject(instance_id: str) -> str:
    return f"zg.health.delivery.{token(instance_id)}"


# --- ticks: published by the NATS server itself from a message schedule -------------------
STREAM_TICKS: Final = "ZG_TICKS"
HEALTH_TICK: Final = "zg.tick.health"
HEALTH_TICK_SCHEDULE: Final = "zg.schedule.health"
SENDER_TICK: Final = "zg.tick.sender"
SENDER_TICK_SCHEDULE: Final = "zg.schedule.sender"

# --- sender: commands in, outcomes and delivery tracking out -------------------------------
STREAM_SEND: Final = "ZG_SEND"
SEND_COMMANDS_ALL: Final = "zg.send.command.*"
SEND_OUTCOMES_ALL: Final = "zg.send.outcome.*"
MESSAGE_STATUS_ALL: Final = "zg.send.status.*"
MESSAGE_ALERTS_ALL: Final = "zg.send.alert.*"


SEND_PARTITIONS_ALL: Final = "zg.send.p.*.*"
"""Where the server stores a command: `zg.send.p.<partition>.<instance token>` (the stream's
subject transform of `zg.send.command.<instance token>`)."""
_FNV_OFFSET: Final = 0x811C9DC5
_FNV_PRIME: Final = 0x01000193


def send_command_subject(instance_id: str) -> str:
    """Where callers publish a command; the stream stores it on its partition's subject."""
    return f"zg.send.command.{token(instance_id)}"


def send_partition_subject(partition: int) -> str:
    """The stored commands of one partition (every instance of it): `zg.send.p.<k>.*`."""
    return f"zg.send.p.{partition}.*"


def send_partition(instance_id: str, partitions: int) -> int:
    """The partition nats-server's `{{partition(partitions,1)}}` gives the instance's subject
    token: FNV-1a (32 bit) of the token's bytes, modulo `partitions` (nats-server
    `subject_transform.go`, checked against 2.15.1 in the runtime's tests)."""
    digest = _FNV_OFFSET
    for byte in token(instance_id).encode():
        digest = ((digest ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return digest % partitions


def partition_of_subject(subject: str) -> int | None:
    """The partition of a stored command's subject (`zg.send.p.<k>.<token>`), else None."""
    parts = subject.split(".")
    if len(parts) == 5 and parts[:3] == ["zg", "send", "p"] and parts[3].isdigit():  # noqa: PLR2004
        return int(parts[3])
    return None


def send_outcome_subject(command_id: str) -> str:
    return f"zg.send.outcome.{token(command_id)}"


def message_status_subject(instance_id: str) -> str:
    return f"zg.send.status.{token(instance_id)}"


def message_alert_subject(instance_id: str) -> str:
    return f"zg.send.alert.{token(instance_id)}"


# --- the HTTP API's outbound events: one job per (webhook subscription, event) ------------
STREAM_API_HOOKS: Final = "ZG_API_HOOKS"
API_HOOKS_ALL: Final = "zg.apihook.>"


def api_hook_subject(subscription_id: str) -> str:
    return f"zg.apihook.delivery.{token(subscription_id)}"


# --- request-reply APIs (core NATS, no stream) ---------------------------------------------
API_HEALTH_REGISTER: Final = "zg.api.health.instances.register"
API_HEALTH_LIST: Final = "zg.api.health.instances.list"
API_HEALTH_PAUSE: Final = "zg.api.health.instances.pause"
API_HEALTH_REMOVE: Final = "zg.api.health.instances.remove"
API_HEALTH_GET: Final = "zg.api.health.instances.health"
API_HEALTH_CHECK_NOW: Final = "zg.api.health.instances.check"
API_HEALTH_RESTART: Final = "zg.api.health.instances.restart"
API_HEALTH_QR_CODE: Final = "zg.api.health.instances.qr"
API_HEALTH_PAIRING_CODE: Final = "zg.api.health.instances.pairing"
API_HEALTH_HISTORY: Final = "zg.api.health.instances.history"
API_SENDER_OUTCOME: Final = "zg.api.sender.outcome"
API_SENDER_RETRY: Final = "zg.api.sender.retry"
API_SENDER_CANCEL: Final = "zg.api.sender.cancel"
API_SENDER_LIST: Final = "zg.api.sender.list"
API_SENDER_STUCK_COUNTS: Final = "zg.api.sender.stuck_counts"
API_INGEST_WEBHOOK_COUNTS: Final = "zg.api.ingest.webhooks.counts"

# --- header names -------------------------------------------------------------------------
MSG_ID_HEADER: Final = "Nats-Msg-Id"
