"""Every JetStream stream, consumer, publication and request-reply verb of zapgate, declared once.

Each service ensures the whole topology at startup (`ensure_streams(nc, all_streams())`); the
call is idempotent, so the order in which services start does not matter. A service's pull
loops take their `ConsumerSpec` from here (`PullConsumer(connection, SENDER_COMMANDS, ...)`).
The AsyncAPI document of each service is generated from these declarations and the contract
models (`docs/tools/docgen.py`): declare a new subject here, then run `./taskw docs:gen`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Final, get_args

from zapgate.contracts import health, sending, subjects, webhooks
from zapgate.contracts.webhooks import WebhookKind
from zapgate.runtime.streams import (
    DEAD_LETTER_STREAM,
    DEAD_LETTER_SUBJECT_PREFIX,
    ConsumerSpec,
    PublicationSpec,
    RequestSpec,
    StreamSpec,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

INSTANCE = "instance_id"
COMMAND = "command_id"

WEBHOOKS: Final = StreamSpec(
    name=subjects.STREAM_WEBHOOKS,
    subjects=(subjects.WEBHOOKS_ALL,),
    max_age=timedelta(days=7),
    # The provider resends; the database copy dedupes beyond this window.
    duplicate_window=timedelta(minutes=10),
    description="One typed event per accepted W-API webhook",
)

HEALTH: Final = StreamSpec(
    name=subjects.STREAM_HEALTH,
    subjects=(subjects.HEALTH_ALL,),
    max_age=timedelta(days=7),
    description="Instance state changes, notifications and observations sent to health",
)

TICKS: Final = StreamSpec(
    name=subjects.STREAM_TICKS,
    subjects=("zg.tick.>", "zg.schedule.>"),  # HEALTH_TICK and HEALTH_TICK_SCHEDULE
    # No max_age: it would expire the schedule message itself and ticks would stop. Each
    # subject keeps its newest messages only, which bounds the tick history instead.
    max_msgs_per_subject=1000,
    allow_msg_schedules=True,
    description="Ticks published by the NATS server from message schedules",
)

SEND_PARTITIONS: Final = 8
"""Fixed number of send-command partitions. Changing it remaps instances: drain the command
consumers first (a stored command stays on the partition subject it was stored under)."""
SEND_PARTITION_GROUP: Final = "sender"
"""The pinned priority group of every partition consumer: one sender replica per partition."""

SEND: Final = StreamSpec(
    name=subjects.STREAM_SEND,
    subjects=("zg.send.>",),
    max_age=timedelta(days=30),
    duplicate_window=timedelta(minutes=10),
    # The server stores `zg.send.command.<instance>` as `zg.send.p.<k>.<instance>`, k =
    # FNV-1a(instance token) mod SEND_PARTITIONS (`subjects.send_partition`): callers publish
    # and are authorized on the original subject, each partition has its own durable.
    subject_transform=(
        subjects.SEND_COMMANDS_ALL,
        f"zg.send.p.{{{{partition({SEND_PARTITIONS},1)}}}}.{{{{wildcard(1)}}}}",
    ),
    description="Send commands (stored per partition), outcomes, delivery tracking and alerts",
)

DEAD_LETTERS: Final = StreamSpec(
    name=DEAD_LETTER_STREAM,
    subjects=(f"{DEAD_LETTER_SUBJECT_PREFIX}.>",),
    max_age=timedelta(days=30),
    duplicate_window=timedelta(minutes=10),
    description="A copy of every message a consumer gave up on (zg.deadletter.<service>.<name>)",
)

API_HOOKS: Final = StreamSpec(
    name=subjects.STREAM_API_HOOKS,
    subjects=(subjects.API_HOOKS_ALL,),
    # Longer than the HTTP API's retry window (26 h by default), with room for an outage.
    max_age=timedelta(days=4),
    duplicate_window=timedelta(minutes=10),
    description="The HTTP API's outbound events: one job per (webhook subscription, event)",
)

ALL_STREAMS: Final = (WEBHOOKS, HEALTH, TICKS, SEND, DEAD_LETTERS, API_HOOKS)

# --- consumers, by service ----------------------------------------------------------------

INGEST_ARCHIVER: Final = ConsumerSpec(
    service="ingest",
    name="archiver",
    stream=subjects.STREAM_WEBHOOKS,
    filter_subjects=(subjects.WEBHOOKS_ALL,),
    ack_wait=timedelta(seconds=15),
    description="The archiver (durable pull) stores every webhook event in PostgreSQL in batches.",
    handler="archive_webhooks",
)
INGEST_STATES: Final = ConsumerSpec(
    service="ingest",
    name="states",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.STATE_CHANGED_ALL,),
    message=health.InstanceStateChanged,
    parameters=(INSTANCE,),
    ordered=True,
    description=(
        "Followed (ordered consumer, last per subject) to know each instance's last state "
        "(proof of life on stale state only)."
    ),
    handler="follow_instance_states",
)

SENDER_COMMANDS: Final = ConsumerSpec(
    service="sender",
    name="commands",
    stream=subjects.STREAM_SEND,
    filter_subjects=(subjects.SEND_COMMANDS_ALL,),
    message=sending.SendMessage,
    parameters=(INSTANCE,),
    # Short: a crashed sender's commands come back within seconds; in-progress heartbeats
    # (every third of it) keep a delivery while a provider call or a database outage lasts.
    ack_wait=timedelta(seconds=10),
    heartbeat=timedelta(seconds=10) / 3,
    description="Send commands (durable pull; per-instance lanes keep order within one replica).",
    handler="on_send_command",
)
SENDER_COMMAND_PARTITIONS: Final = tuple(
    replace(
        SENDER_COMMANDS,
        name=f"commands-p{partition}",
        filter_subjects=(subjects.send_partition_subject(partition),),
        priority_group=SEND_PARTITION_GROUP,
        # Longer than the ack wait: when the pin moves, what the lost replica left is due again.
        priority_timeout=SENDER_COMMANDS.ack_wait * 3 / 2,
        description=(
            f"Send commands of partition {partition} (durable pull, pinned priority group: one "
            "sender replica at a time; per-instance lanes keep order)."
        ),
    )
    for partition in range(SEND_PARTITIONS)
)
"""One durable per partition (`sender-commands-p<k>`): the sender's command consumers."""


def sender_command_partition(instance_id: str) -> ConsumerSpec:
    """The partition consumer that reads the instance's commands."""
    return SENDER_COMMAND_PARTITIONS[subjects.send_partition(instance_id, SEND_PARTITIONS)]


def stored_command_subject(instance_id: str) -> str:
    """The subject the stream stores the instance's commands under (`zg.send.p.<k>.<token>`)."""
    partition = subjects.send_partition(instance_id, SEND_PARTITIONS)
    return f"zg.send.p.{partition}.{subjects.token(instance_id)}"


SENDER_RECEIPTS: Final = ConsumerSpec(
    service="sender",
    name="receipts",
    stream=subjects.STREAM_WEBHOOKS,
    filter_subjects=(subjects.webhook_subject(WebhookKind.MESSAGE_STATUS.value),),
    message=webhooks.MessageStatusReported,
    heartbeat=timedelta(seconds=10),
    description="Delivery receipts from W-API, matched to sends by messageId.",
    handler="on_message_status",
)
SENDER_STATES: Final = ConsumerSpec(
    service="sender",
    name="states",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.STATE_CHANGED_ALL,),
    message=health.InstanceStateChanged,
    parameters=(INSTANCE,),
    heartbeat=timedelta(seconds=10),
    description="Instance recoveries release held sends.",
    handler="on_instance_state_changed",
)
SENDER_TICKS: Final = ConsumerSpec(
    service="sender",
    name="ticks",
    stream=subjects.STREAM_TICKS,
    filter_subjects=(subjects.SENDER_TICK,),
    ack_wait=timedelta(minutes=2),
    heartbeat=timedelta(seconds=40),
    description="The server-scheduled sweep tick: stuck `sent` messages and expired holds.",
    handler="on_sender_tick",
)

HEALTH_TICK: Final = ConsumerSpec(
    service="health",
    name="tick",
    stream=subjects.STREAM_TICKS,
    filter_subjects=(subjects.HEALTH_TICK,),
    message=health.HealthTick,
    # A long tick (thousands of instances) is kept in progress, never given to another replica.
    ack_wait=timedelta(minutes=1),
    heartbeat=timedelta(seconds=20),
    description="The server-scheduled tick: check every due instance (durable pull, one replica).",
    handler="on_health_tick",
)
HEALTH_PROOF_OF_LIFE: Final = ConsumerSpec(
    service="health",
    name="proof-of-life",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.PROOF_OF_LIFE_ALL,),
    message=health.SessionProofOfLife,
    parameters=(INSTANCE,),
    description="Observation: proof of life from ingest (durable pull).",
)
HEALTH_SESSION_OBSERVED: Final = ConsumerSpec(
    service="health",
    name="session-observed",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.SESSION_OBSERVED_ALL,),
    message=health.SessionObserved,
    parameters=(INSTANCE,),
    description="Observation: live sessions the sender saw (durable pull).",
)
HEALTH_DELIVERY_SIGNAL: Final = ConsumerSpec(
    service="health",
    name="delivery-signal",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.DELIVERY_STALL_ALL,),
    message=health.DeliverySignalled,
    parameters=(INSTANCE,),
    description="Observation: delivery stall / resume (durable pull).",
)
HEALTH_RECONNECT: Final = ConsumerSpec(
    service="health",
    name="reconnect",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.RECONNECT_REQUESTED_ALL,),
    message=health.ReconnectRequested,
    parameters=(INSTANCE,),
    description="Observation: reconnect requests (durable pull).",
    handler="on_reconnect_requested",
)
HEALTH_WEBHOOK_CONNECTED: Final = ConsumerSpec(
    service="health",
    name="webhook-connected",
    stream=subjects.STREAM_WEBHOOKS,
    filter_subjects=(subjects.webhook_subject(WebhookKind.INSTANCE_CONNECTED.value),),
    message=webhooks.InstanceConnected,
    description="The `instance_connected` webhook as ingest published it.",
    handler="on_instance_connected",
)
HEALTH_WEBHOOK_DISCONNECTED: Final = ConsumerSpec(
    service="health",
    name="webhook-disconnected",
    stream=subjects.STREAM_WEBHOOKS,
    filter_subjects=(subjects.webhook_subject(WebhookKind.INSTANCE_DISCONNECTED.value),),
    message=webhooks.InstanceDisconnected,
    description="The `instance_disconnected` webhook as ingest published it.",
    handler="on_instance_disconnected",
)
HEALTH_WEBHOOK_STATUS: Final = ConsumerSpec(
    service="health",
    name="webhook-status",
    stream=subjects.STREAM_WEBHOOKS,
    filter_subjects=(subjects.webhook_subject(WebhookKind.MESSAGE_STATUS.value),),
    message=webhooks.MessageStatusReported,
    description=(
        "The `message_status` webhook as ingest published it: receipts are fresh delivery "
        "evidence and lift a DELIVERY_STALLED gate."
    ),
    handler="on_message_status",
)

API_EVENTS_OUTCOMES: Final = ConsumerSpec(
    service="api",
    name="events-outcomes",
    stream=subjects.STREAM_SEND,
    filter_subjects=(subjects.SEND_OUTCOMES_ALL,),
    message=sending.SendOutcome,
    deliver_new_only=True,
    description="Send outcomes, fanned out to the HTTP API's webhook subscriptions.",
)
API_EVENTS_STATUS: Final = ConsumerSpec(
    service="api",
    name="events-status",
    stream=subjects.STREAM_SEND,
    filter_subjects=(subjects.MESSAGE_STATUS_ALL,),
    message=sending.MessageStatusChanged,
    deliver_new_only=True,
    description="Message status changes, fanned out to the HTTP API's webhook subscriptions.",
)
API_EVENTS_RECEIVED: Final = ConsumerSpec(
    service="api",
    name="events-received",
    stream=subjects.STREAM_WEBHOOKS,
    filter_subjects=(subjects.webhook_subject(WebhookKind.MESSAGE_RECEIVED.value),),
    message=webhooks.MessageReceived,
    deliver_new_only=True,
    description="Received messages, fanned out to the HTTP API's webhook subscriptions.",
)
API_WEBHOOK_DELIVERIES: Final = ConsumerSpec(
    service="api",
    name="webhook-deliveries",
    stream=subjects.STREAM_API_HOOKS,
    filter_subjects=(subjects.API_HOOKS_ALL,),
    ack_wait=timedelta(seconds=30),
    description="One signed POST per job; retried with backoff (nak with delay) for >= 24 h.",
)

ALL_CONSUMERS: Final = (
    INGEST_ARCHIVER,
    INGEST_STATES,
    *SENDER_COMMAND_PARTITIONS,
    SENDER_RECEIPTS,
    SENDER_STATES,
    SENDER_TICKS,
    HEALTH_TICK,
    HEALTH_PROOF_OF_LIFE,
    HEALTH_SESSION_OBSERVED,
    HEALTH_DELIVERY_SIGNAL,
    HEALTH_RECONNECT,
    HEALTH_WEBHOOK_CONNECTED,
    HEALTH_WEBHOOK_DISCONNECTED,
    HEALTH_WEBHOOK_STATUS,
    API_EVENTS_OUTCOMES,
    API_EVENTS_STATUS,
    API_EVENTS_RECEIVED,
    API_WEBHOOK_DELIVERIES,
)

# --- publications, by service -------------------------------------------------------------


def webhook_models() -> dict[str, type[BaseModel]]:
    """Webhook kind -> the typed event model ingest publishes for it (from the contracts'
    discriminated union `AnyWebhookEvent`)."""
    union = get_args(webhooks.AnyWebhookEvent)[0]
    found: dict[str, type[BaseModel]] = {}
    for model in get_args(union):
        kind = model.model_fields["kind"].default
        found[str(kind.value if hasattr(kind, "value") else kind)] = model
    return dict(sorted(found.items()))


def _published(  # noqa: PLR0913, PLR0917 - a compact table of declarations, read in order
    service: str,
    subject: str,
    stream: str,
    message: type[BaseModel] | None,
    operation: str,
    description: str,
    parameters: tuple[str, ...] = (),
) -> PublicationSpec:
    return PublicationSpec(
        service=service,
        subject=subject,
        stream=stream,
        message=message,
        operation=operation,
        description=description,
        parameters=parameters,
    )


def _publications() -> tuple[PublicationSpec, ...]:
    ingest = [
        _published(
            "ingest",
            subjects.webhook_subject(kind),
            subjects.STREAM_WEBHOOKS,
            model,
            f"publish_{kind}",
            f"One accepted W-API webhook routed as `{kind}` (Nats-Msg-Id = dedupe key).",
        )
        for kind, model in webhook_models().items()
    ]
    ingest += [
        _published(
            "ingest",
            subjects.webhook_subject(webhooks.QUARANTINE_KIND),
            subjects.STREAM_WEBHOOKS,
            webhooks.WebhookQuarantined,
            "publish_quarantined",
            "An authenticated body that is not a JSON object, kept byte for byte.",
        ),
        _published(
            "ingest",
            subjects.PROOF_OF_LIFE_ALL,
            subjects.STREAM_HEALTH,
            health.SessionProofOfLife,
            "publish_proof_of_life",
            "A webhook carried `connectedPhone`: the session is alive and complete right now.",
            (INSTANCE,),
        ),
    ]
    health_events = [
        _published(
            "health",
            subjects.STATE_CHANGED_ALL,
            subjects.STREAM_HEALTH,
            health.InstanceStateChanged,
            "publish_state_changed",
            "Every state transition, from the outbox (Nats-Msg-Id = event id).",
            (INSTANCE,),
        ),
        _published(
            "health",
            subjects.NOTIFICATIONS_ALL,
            subjects.STREAM_HEALTH,
            health.InstanceNotification,
            "publish_notification",
            "One notification per outage and per recovery, from the outbox.",
            (INSTANCE,),
        ),
    ]
    sender = [
        _published(
            "sender",
            subjects.SEND_OUTCOMES_ALL,
            subjects.STREAM_SEND,
            sending.SendOutcome,
            "publish_send_outcome",
            "The honest outcome of a command (Nats-Msg-Id per command and status).",
            (COMMAND,),
        ),
        _published(
            "sender",
            subjects.MESSAGE_STATUS_ALL,
            subjects.STREAM_SEND,
            sending.MessageStatusChanged,
            "publish_message_status",
            "A sent message moved forward (delivered, read, played).",
            (INSTANCE,),
        ),
        _published(
            "sender",
            subjects.MESSAGE_ALERTS_ALL,
            subjects.STREAM_SEND,
            sending.MessageStuck,
            "publish_message_stuck",
            "A message stayed `sent` longer than the stuck window.",
            (INSTANCE,),
        ),
        _published(
            "sender",
            subjects.DELIVERY_STALL_ALL,
            subjects.STREAM_HEALTH,
            health.DeliverySignalled,
            "publish_delivery_signal",
            "Delivery stalled or resumed, for health.",
            (INSTANCE,),
        ),
        _published(
            "sender",
            subjects.SESSION_OBSERVED_ALL,
            subjects.STREAM_HEALTH,
            health.SessionObserved,
            "publish_session_observed",
            "What the live pre-send check saw, for health.",
            (INSTANCE,),
        ),
        _published(
            "sender",
            subjects.RECONNECT_REQUESTED_ALL,
            subjects.STREAM_HEALTH,
            health.ReconnectRequested,
            "publish_reconnect_requested",
            "A send found the session down: ask health to reconnect.",
            (INSTANCE,),
        ),
    ]
    return (*ingest, *health_events, *sender)


ALL_PUBLICATIONS: Final = _publications()

# --- request-reply verbs (core NATS, queue groups) ------------------------------------------

_HEALTH_API = "Request-reply API (core NATS, queue group `health-api`)."
ALL_REQUESTS: Final = (
    *(
        RequestSpec(
            service="health",
            subject=subject,
            request=request,
            reply=reply,
            queue="health-api",
            operation=subject.removeprefix("zg.api.health.").replace(".", "_"),
            description=_HEALTH_API,
        )
        for subject, request, reply in (
            (subjects.API_HEALTH_REGISTER, health.RegisterInstance, health.RegistryReply),
            (subjects.API_HEALTH_LIST, health.ListInstances, health.InstanceListReply),
            (subjects.API_HEALTH_PAUSE, health.PauseInstance, health.RegistryReply),
            (subjects.API_HEALTH_REMOVE, health.RemoveInstance, health.RegistryReply),
            (subjects.API_HEALTH_GET, health.GetInstanceHealth, health.HealthReply),
            (subjects.API_HEALTH_CHECK_NOW, health.CheckNow, health.CheckNowReply),
            (subjects.API_HEALTH_RESTART, health.RestartInstance, health.RestartReply),
            (subjects.API_HEALTH_QR_CODE, health.GetQrCode, health.QrCodeReply),
            (subjects.API_HEALTH_PAIRING_CODE, health.RequestPairingCode, health.PairingCodeReply),
            (subjects.API_HEALTH_HISTORY, health.GetInstanceHistory, health.InstanceHistoryReply),
        )
    ),
    RequestSpec(
        service="sender",
        subject=subjects.API_SENDER_OUTCOME,
        request=sending.GetSendOutcome,
        reply=sending.SendOutcomeReply,
        queue="sender-api",
        operation="get_send_outcome",
        description="Request-reply: the stored outcome of one command.",
    ),
    RequestSpec(
        service="sender",
        subject=subjects.API_SENDER_RETRY,
        request=sending.RetrySend,
        reply=sending.SendOutcomeReply,
        queue="sender-api",
        operation="retry_send",
        description="Request-reply: retry a failed send as a new command.",
    ),
    RequestSpec(
        service="sender",
        subject=subjects.API_SENDER_CANCEL,
        request=sending.CancelSend,
        reply=sending.SendOutcomeReply,
        queue="sender-api",
        operation="cancel_send",
        description="Request-reply: cancel a held command (it fails with CANCELLED, never sent).",
    ),
    RequestSpec(
        service="sender",
        subject=subjects.API_SENDER_LIST,
        request=sending.ListSends,
        reply=sending.SendListReply,
        queue="sender-api",
        operation="list_sends",
        description="Request-reply: one instance's sends, newest first, by status or stuck.",
    ),
    RequestSpec(
        service="sender",
        subject=subjects.API_SENDER_STUCK_COUNTS,
        request=sending.CountStuck,
        reply=sending.StuckCountsReply,
        queue="sender-api",
        operation="count_stuck",
        description="Request-reply: how many sends are stuck, per instance.",
    ),
    RequestSpec(
        service="ingest",
        subject=subjects.API_INGEST_WEBHOOK_COUNTS,
        request=webhooks.CountWebhooks,
        reply=webhooks.WebhookCountsReply,
        queue="ingest-api",
        operation="count_webhooks",
        description="Request-reply: one instance's archived webhooks of the last hour, per "
        "kind and disposition.",
    ),
)

SERVICES: Final = ("ingest", "health", "sender")


def consumers_of(service: str) -> tuple[ConsumerSpec, ...]:
    """The consumer specs of one service, in declaration order."""
    return tuple(spec for spec in ALL_CONSUMERS if spec.service == service)


def publications_of(service: str) -> tuple[PublicationSpec, ...]:
    """What one service publishes, in declaration order."""
    return tuple(spec for spec in ALL_PUBLICATIONS if spec.service == service)


def requests_of(service: str) -> tuple[RequestSpec, ...]:
    """The request-reply verbs one service answers."""
    return tuple(spec for spec in ALL_REQUESTS if spec.service == service)


def queue_of(service: str) -> str:
    """The queue group that serves every request-reply verb of `service` (one replica answers
    each request). Raises ValueError if the service answers none, or in several groups."""
    queues = {spec.queue for spec in requests_of(service)}
    if len(queues) != 1:
        raise ValueError(f"{service} serves its verbs in {len(queues)} queue groups, not one")
    return queues.pop()


def all_streams(replicas: int = 1) -> tuple[StreamSpec, ...]:
    """The topology with `replicas` copies of every stream (3 on a three-node cluster)."""
    return tuple(replace(spec, replicas=replicas) for spec in ALL_STREAMS)
