"""Every JetStream stream and durable consumer zapgate uses, declared once.

Each service ensures the whole topology at startup (`ensure_streams(nc, all_streams())`); the
call is idempotent, so the order in which services start does not matter. A service's pull
loops take their `ConsumerSpec` from here (`PullConsumer(connection, SENDER_COMMANDS, ...)`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Final

from zapgate.contracts import subjects
from zapgate.contracts.health import (
    DeliverySignalled,
    HealthTick,
    InstanceStateChanged,
    ReconnectRequested,
    SessionObserved,
    SessionProofOfLife,
)
from zapgate.contracts.sending import SendMessage
from zapgate.contracts.webhooks import (
    InstanceConnected,
    InstanceDisconnected,
    MessageStatusReported,
    WebhookKind,
)
from zapgate.runtime.streams import (
    DEAD_LETTER_STREAM,
    DEAD_LETTER_SUBJECT_PREFIX,
    ConsumerSpec,
    StreamSpec,
)

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

SEND: Final = StreamSpec(
    name=subjects.STREAM_SEND,
    subjects=("zg.send.>",),
    max_age=timedelta(days=30),
    duplicate_window=timedelta(minutes=10),
    description="Send commands, outcomes, delivery tracking and alerts",
)

DEAD_LETTERS: Final = StreamSpec(
    name=DEAD_LETTER_STREAM,
    subjects=(f"{DEAD_LETTER_SUBJECT_PREFIX}.>",),
    max_age=timedelta(days=30),
    duplicate_window=timedelta(minutes=10),
    description="A copy of every message a consumer gave up on (zg.deadletter.<service>.<name>)",
)

ALL_STREAMS: Final = (WEBHOOKS, HEALTH, TICKS, SEND, DEAD_LETTERS)

# --- durable pull consumers, by service -----------------------------------------------------

INGEST_ARCHIVER: Final = ConsumerSpec(
    service="ingest",
    name="archiver",
    stream=subjects.STREAM_WEBHOOKS,
    filter_subjects=(subjects.WEBHOOKS_ALL,),
    ack_wait=timedelta(seconds=15),
    description="Keeps a database copy of every published webhook event",
)

SENDER_COMMANDS: Final = ConsumerSpec(
    service="sender",
    name="commands",
    stream=subjects.STREAM_SEND,
    filter_subjects=(subjects.SEND_COMMANDS_ALL,),
    message=SendMessage,
    ack_wait=timedelta(minutes=5),
    description="Send commands, decided and sent in per-instance order",
)
SENDER_RECEIPTS: Final = ConsumerSpec(
    service="sender",
    name="receipts",
    stream=subjects.STREAM_WEBHOOKS,
    filter_subjects=(subjects.webhook_subject(WebhookKind.MESSAGE_STATUS.value),),
    message=MessageStatusReported,
    description="Delivery receipts applied to sent messages",
)
SENDER_STATES: Final = ConsumerSpec(
    service="sender",
    name="states",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.STATE_CHANGED_ALL,),
    message=InstanceStateChanged,
    description="Instance state changes that release held sends",
)
SENDER_TICKS: Final = ConsumerSpec(
    service="sender",
    name="ticks",
    stream=subjects.STREAM_TICKS,
    filter_subjects=(subjects.SENDER_TICK,),
    ack_wait=timedelta(minutes=2),
    description="The sender's scheduled sweep of stuck deliveries",
)

HEALTH_TICK: Final = ConsumerSpec(
    service="health",
    name="tick",
    stream=subjects.STREAM_TICKS,
    filter_subjects=(subjects.HEALTH_TICK,),
    message=HealthTick,
    ack_wait=timedelta(minutes=1),
    description="The scheduled health round over every instance",
)
HEALTH_PROOF_OF_LIFE: Final = ConsumerSpec(
    service="health",
    name="proof-of-life",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.PROOF_OF_LIFE_ALL,),
    message=SessionProofOfLife,
    description="Proof that a session works, reported by ingest",
)
HEALTH_SESSION_OBSERVED: Final = ConsumerSpec(
    service="health",
    name="session-observed",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.SESSION_OBSERVED_ALL,),
    message=SessionObserved,
    description="Live session observations",
)
HEALTH_DELIVERY_SIGNAL: Final = ConsumerSpec(
    service="health",
    name="delivery-signal",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.DELIVERY_STALL_ALL,),
    message=DeliverySignalled,
    description="Delivery stalls reported by the sender",
)
HEALTH_RECONNECT: Final = ConsumerSpec(
    service="health",
    name="reconnect",
    stream=subjects.STREAM_HEALTH,
    filter_subjects=(subjects.RECONNECT_REQUESTED_ALL,),
    message=ReconnectRequested,
    description="Requests to reconnect an instance",
)
HEALTH_WEBHOOK_CONNECTED: Final = ConsumerSpec(
    service="health",
    name="webhook-connected",
    stream=subjects.STREAM_WEBHOOKS,
    filter_subjects=(subjects.webhook_subject(WebhookKind.INSTANCE_CONNECTED.value),),
    message=InstanceConnected,
    description="The provider's connected webhooks",
)
HEALTH_WEBHOOK_DISCONNECTED: Final = ConsumerSpec(
    service="health",
    name="webhook-disconnected",
    stream=subjects.STREAM_WEBHOOKS,
    filter_subjects=(subjects.webhook_subject(WebhookKind.INSTANCE_DISCONNECTED.value),),
    message=InstanceDisconnected,
    description="The provider's disconnected webhooks",
)

ALL_CONSUMERS: Final = (
    INGEST_ARCHIVER,
    SENDER_COMMANDS,
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
)


def consumers_of(service: str) -> tuple[ConsumerSpec, ...]:
    """The consumer specs of one service, in declaration order."""
    return tuple(spec for spec in ALL_CONSUMERS if spec.service == service)


def all_streams(replicas: int = 1) -> tuple[StreamSpec, ...]:
    """The topology with `replicas` copies of every stream (3 on a three-node cluster)."""
    return tuple(replace(spec, replicas=replicas) for spec in ALL_STREAMS)
