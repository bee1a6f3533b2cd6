"""Typed events ingest publishes, one per accepted webhook (stream ZG_WEBHOOKS).

Every event keeps the provider's body as received in `raw`, so nothing the provider said is
lost even when our reading of it is partial. Facts and grades: shared/WAPI.md.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, Field

from zapgate.contracts.envelope import Contract, Envelope
from zapgate.contracts.errors import Problem
from zapgate.contracts.health import InstanceId


class WebhookKind(StrEnum):
    """What a webhook was routed to; also the last token of its subject."""

    MESSAGE_RECEIVED = "message_received"
    MESSAGE_SENT = "message_sent"
    MESSAGE_CHANGED = "message_changed"
    MESSAGE_STATUS = "message_status"
    INSTANCE_CONNECTED = "instance_connected"
    INSTANCE_DISCONNECTED = "instance_disconnected"
    CHAT_PRESENCE = "chat_presence"
    UNROUTED = "unrouted"


class DeliveryStatus(StrEnum):
    """Provider message status, ordered: a message never moves backwards."""

    PENDING = "pending"
    SENT = "sent"  # provider SERVER
    DELIVERED = "delivered"  # provider DELIVERY
    READ = "read"  # provider READ
    PLAYED = "played"  # provider PLAYED
    FAILED = "failed"  # provider ERROR


class ChatChannel(StrEnum):
    """Where a chat id points: a person or group, a story, or a channel."""

    CHAT = "chat"
    STORY = "story"  # status / status@broadcast
    NEWSLETTER = "newsletter"  # ...@newsletter


class Chat(Contract):
    id: str
    is_group: bool = False
    is_lid: bool = False
    channel: ChatChannel = ChatChannel.CHAT


class Sender(Contract):
    id: str | None = None
    push_name: str | None = None
    lid: str | None = None


class Media(Contract):
    mimetype: str | None = None
    url: str | None = None
    file_length: int | None = None
    file_name: str | None = None
    seconds: int | None = None
    media_key: str | None = None


class Location(Contract):
    """A shared place (`locationMessage`) or live location (`liveLocationMessage`)."""

    latitude: float | None = Field(default=None, description="Degrees, WGS 84.")
    longitude: float | None = Field(default=None, description="Degrees, WGS 84.")
    name: str | None = None
    address: str | None = None
    url: str | None = None
    live: bool = False


class ContactCard(Contract):
    """One shared contact (`contactMessage`, or one of `contactsArrayMessage.contacts`)."""

    display_name: str | None = None
    vcard: str | None = Field(default=None, description="The vCard text as the provider sent it.")


class PollOption(Contract):
    name: str


class Poll(Contract):
    """A poll as created (`pollCreationMessage`, V2, V3 and later versions)."""

    name: str | None = None
    options: list[PollOption] = Field(default_factory=list)
    selectable_count: int | None = Field(
        default=None, description="How many options one voter may pick; 0 means any number."
    )


class PollVote(Contract):
    """A vote on a poll (`pollUpdateMessage`): WhatsApp encrypts it for the poll's creator.

    `selected_options` is filled only when the provider already decrypted it; otherwise the
    encrypted payload is kept for whoever holds the poll's key.
    """

    poll_message_id: str | None = Field(description="Id of the poll's creation message.")
    selected_options: list[str] | None = None
    encrypted_payload: str | None = Field(default=None, description="vote.encPayload (base64).")
    encrypted_iv: str | None = Field(default=None, description="vote.encIv (base64).")


class MessageContent(Contract):
    """What a message says, as far as we understood it; `type` is the provider's key.

    Wrappers (view-once in every version, ephemeral, document-with-caption, edited, device-sent
    and any other `{"<x>Message": {"message": {...}}}`) are unwrapped: `type` and the fields are
    those of the inner message and `wrappers` names each wrapper, outermost first.
    """

    type: str = Field(description="Provider content key, e.g. conversation, imageMessage.")
    text: str | None = None
    caption: str | None = None
    media: Media | None = None
    quoted_message_id: str | None = Field(
        default=None, description="contextInfo.stanzaID / stanzaId of a quoted reply."
    )
    button_id: str | None = None
    wrappers: list[str] = Field(
        default_factory=list, description="Wrappers around the content, outermost first."
    )
    view_once: bool = Field(default=False, description="A view-once message (any version).")
    placeholder: bool = Field(
        default=False,
        description="WhatsApp could not decrypt it yet (only key distribution, or stub type 2); "
        "the real content may follow under the same message id as a content update.",
    )
    location: Location | None = None
    contacts: list[ContactCard] | None = None
    poll: Poll | None = None


class WebhookEvent(Envelope):
    """Fields every routed webhook carries."""

    kind: WebhookKind
    instance_id: str | None = Field(description="Provider instance id; None when absent.")
    received_at: AwareDatetime = Field(description="When ingest accepted the webhook.")
    moment: AwareDatetime | None = Field(
        default=None, description="Provider's `moment` (Unix seconds) as a datetime."
    )
    dedupe_key: str = Field(description="Key used to publish and store this webhook once.")
    connected_phone: str | None = Field(
        default=None, description="The instance's own phone, when the payload carried it."
    )
    raw: dict[str, Any] = Field(
        description="The provider's JSON body after the one sanitising step (see `sanitized`), "
        "without the fields listed in `omitted_fields`."
    )
    sanitized: list[str] = Field(
        default_factory=list,
        description="What the sanitiser changed in `raw` (invalid_utf8, lone_surrogate, "
        "nul_character, non_finite_number, number_out_of_range, duplicate_key, too_deep).",
    )
    body_base64: str | None = Field(
        default=None, description="The body exactly as received (base64), when carried inline."
    )
    body_object: str | None = Field(
        default=None,
        description="Name of the exact body in the JetStream Object Store bucket "
        "`ZG_WEBHOOK_BODIES`, when it was too large to carry inline.",
    )
    omitted_fields: list[str] = Field(
        default_factory=list,
        description="JSON paths of oversized values replaced in `raw` by a placeholder; the "
        "whole body is in `body_object`.",
    )


class MessageReceived(WebhookEvent):
    """A message arrived at the instance (provider event `webhookReceived`)."""

    kind: Literal[WebhookKind.MESSAGE_RECEIVED] = WebhookKind.MESSAGE_RECEIVED
    message_id: str | None
    from_me: bool = False
    chat: Chat
    sender: Sender = Field(default_factory=Sender)
    content: MessageContent


class MessageSent(WebhookEvent):
    """The instance sent a message, from the phone or through the API (`webhookDelivery`).

    Not a delivery receipt: receipts are MessageStatusReported.
    """

    kind: Literal[WebhookKind.MESSAGE_SENT] = WebhookKind.MESSAGE_SENT
    message_id: str | None
    from_api: bool | None = None
    chat: Chat
    content: MessageContent | None = None


class MessageChangeKind(StrEnum):
    """How an existing message changed; `content_update` is a later body of the same message id
    with different content (e.g. the real text after an undecryptable placeholder)."""

    EDIT = "edit"
    DELETE = "delete"
    REACTION = "reaction"
    POLL_VOTE = "poll_vote"
    CONTENT_UPDATE = "content_update"
    OTHER = "other"


class MessageChanged(WebhookEvent):
    """An existing message was edited, deleted or reacted to."""

    kind: Literal[WebhookKind.MESSAGE_CHANGED] = WebhookKind.MESSAGE_CHANGED
    change: MessageChangeKind
    message_id: str | None = Field(description="Id of the webhook's own message.")
    target_message_id: str | None = Field(description="Id of the message that changed.")
    chat: Chat
    sender: Sender = Field(default_factory=Sender)
    new_text: str | None = None
    reaction: str | None = None
    poll_vote: PollVote | None = Field(default=None, description="Set for `poll_vote`.")
    content: MessageContent | None = Field(
        default=None, description="The message's content now (`content_update`, `edit`)."
    )


class MessageStatusReported(WebhookEvent):
    """The provider reported the status of one sent message (`webhookStatus`)."""

    kind: Literal[WebhookKind.MESSAGE_STATUS] = WebhookKind.MESSAGE_STATUS
    message_id: str | None
    status: DeliveryStatus | None = Field(description="None when the raw status is unknown.")
    status_raw: str = Field(description="The provider's status word as received.")
    chat_id: str | None = None


class InstanceConnected(WebhookEvent):
    """The provider says the session connected; `connected_phone` may be missing."""

    kind: Literal[WebhookKind.INSTANCE_CONNECTED] = WebhookKind.INSTANCE_CONNECTED


class InstanceDisconnected(WebhookEvent):
    """The provider says the session dropped."""

    kind: Literal[WebhookKind.INSTANCE_DISCONNECTED] = WebhookKind.INSTANCE_DISCONNECTED


class ChatPresenceObserved(WebhookEvent):
    """The event-less `{instanceId, connectedPhone, connectedLid, chat, status, moment}` shape."""

    kind: Literal[WebhookKind.CHAT_PRESENCE] = WebhookKind.CHAT_PRESENCE
    chat_id: str | None = None
    status_raw: str | None = Field(default=None, description="Presence word, kept as data.")
    connected_lid: str | None = None


class WebhookUnrouted(WebhookEvent):
    """A webhook we could not route: kept whole, with its key set, for diagnosis."""

    kind: Literal[WebhookKind.UNROUTED] = WebhookKind.UNROUTED
    reason: str
    keys: list[str]


AnyWebhookEvent = Annotated[
    MessageReceived
    | MessageSent
    | MessageChanged
    | MessageStatusReported
    | InstanceConnected
    | InstanceDisconnected
    | ChatPresenceObserved
    | WebhookUnrouted,
    Field(discriminator="kind"),
]


# --- the gateway's own answers and its quarantine ------------------------------------------

QUARANTINE_KIND: Final = "quarantined"
"""Last subject token of quarantined bodies: `webhook_subject(QUARANTINE_KIND)`."""


class WebhookErrorCode(StrEnum):
    """Stable machine codes of the webhook gateway's refusals (HTTP 4xx/5xx bodies)."""

    WEBHOOK_UNAUTHORIZED = "WEBHOOK_UNAUTHORIZED"
    WEBHOOK_TOO_LARGE = "WEBHOOK_TOO_LARGE"
    WEBHOOK_NOT_JSON = "WEBHOOK_NOT_JSON"
    WEBHOOK_NOT_OBJECT = "WEBHOOK_NOT_OBJECT"
    WEBHOOK_NOT_DURABLE = "WEBHOOK_NOT_DURABLE"
    WEBHOOK_TOO_DEEP = "WEBHOOK_TOO_DEEP"
    WEBHOOK_BODY_TIMEOUT = "WEBHOOK_BODY_TIMEOUT"
    WEBHOOK_UNREADABLE = "WEBHOOK_UNREADABLE"
    WEBHOOK_HEADER_TIMEOUT = "WEBHOOK_HEADER_TIMEOUT"
    WEBHOOK_HEADERS_TOO_LARGE = "WEBHOOK_HEADERS_TOO_LARGE"
    WEBHOOK_BUSY = "WEBHOOK_BUSY"


WEBHOOK_MESSAGES_PT_BR: dict[WebhookErrorCode, str] = {
    WebhookErrorCode.WEBHOOK_UNAUTHORIZED: "Segredo do webhook inválido. Nada foi registrado.",
    WebhookErrorCode.WEBHOOK_TOO_LARGE: (
        "O corpo do webhook é maior que o limite aceito. A instância, o evento e o id da "
        "mensagem foram registrados em quarentena; o corpo não."
    ),
    WebhookErrorCode.WEBHOOK_NOT_JSON: (
        "O corpo do webhook não é JSON válido. Ele foi guardado em quarentena para análise."
    ),
    WebhookErrorCode.WEBHOOK_NOT_OBJECT: (
        "O corpo do webhook é JSON, mas não é um objeto. Ele foi guardado em quarentena para "
        "análise."
    ),
    WebhookErrorCode.WEBHOOK_NOT_DURABLE: (
        "Não foi possível guardar o webhook com segurança agora. Tente novamente em instantes."
    ),
    WebhookErrorCode.WEBHOOK_TOO_DEEP: (
        "O JSON do webhook tem aninhamento profundo demais para ser lido. Ele foi guardado em "
        "quarentena para análise."
    ),
    WebhookErrorCode.WEBHOOK_BODY_TIMEOUT: (
        "O corpo do webhook não chegou completo a tempo. Nada foi registrado; envie de novo."
    ),
    WebhookErrorCode.WEBHOOK_UNREADABLE: (
        "Não foi possível interpretar o webhook. Ele foi guardado em quarentena para análise."
    ),
    WebhookErrorCode.WEBHOOK_HEADER_TIMEOUT: (
        "Os cabeçalhos da requisição não chegaram a tempo. Nada foi registrado; envie de novo."
    ),
    WebhookErrorCode.WEBHOOK_HEADERS_TOO_LARGE: (
        "Os cabeçalhos da requisição são grandes demais. Nada foi registrado."
    ),
    WebhookErrorCode.WEBHOOK_BUSY: (
        "O gateway está com conexões demais abertas agora. Nada foi registrado; tente de novo "
        "em instantes."
    ),
}


class WebhookQuarantined(Envelope):
    """An authenticated body we could not read as a JSON object, kept byte for byte."""

    kind: Literal["quarantined"] = QUARANTINE_KIND
    received_at: AwareDatetime = Field(description="When ingest accepted the body.")
    code: WebhookErrorCode = Field(description="Why it was quarantined.")
    dedupe_key: str = Field(description="Hash of the body: the same body is kept once.")
    body_base64: str = Field(
        description="The body as received, base64-encoded (above the size cap: its first part)."
    )
    content_type: str | None = Field(default=None, max_length=200)
    size: int | None = Field(default=None, description="Body size in bytes, when known.")
    instance_id: str | None = Field(default=None, description="instanceId, when readable.")
    event: str | None = Field(default=None, description="The provider's `event`, when readable.")
    message_id: str | None = Field(default=None, description="messageId, when readable.")


# --- request-reply API: what ingest archived per instance -------------------------------------

WEBHOOK_COUNTS_MAX_WINDOW_S: Final = 3600
"""The longest window `CountWebhooks` takes: one instance's last hour, a bounded index scan."""


class WebhookDisposition(StrEnum):
    """What ingest did with an accepted webhook, as its archive records it."""

    ROUTED = "routed"
    """Typed as one of the known kinds and published on its subject."""
    UNROUTED = "unrouted"
    """A JSON object of no known kind: kept whole as `unrouted`, nothing lost."""
    QUARANTINED = "quarantined"
    """Not a readable JSON object (or over the size cap): its bytes kept in the quarantine."""


class CountWebhooks(Envelope):
    """How many webhooks of one instance ingest archived in the last `window_s` seconds, per
    kind and disposition (`zg.api.ingest.webhooks.counts`).

    Counts come from ingest's archive by receipt time (ingest's clock). A body received again
    (the provider's retry, a redelivery) is stored once and counted once: duplicates leave no
    row. Webhooks still on their way to the archive (a batch, usually under a second) are not
    counted yet.
    """

    instance_id: InstanceId
    window_s: int = Field(
        default=WEBHOOK_COUNTS_MAX_WINDOW_S, ge=60, le=WEBHOOK_COUNTS_MAX_WINDOW_S
    )


class WebhookCount(Contract):
    """One (kind, disposition) group: `kind` is a `WebhookKind` value, or `quarantined` with the
    quarantine `code` (a `WebhookErrorCode`, or the archive's own `ARCHIVE_*` codes)."""

    kind: str
    disposition: WebhookDisposition
    code: str | None = None
    count: int = Field(ge=1)
    last_received_at: AwareDatetime


class WebhookCountsReply(Contract):
    """`counts` sorted by count (largest first); empty when nothing arrived in the window."""

    ok: bool
    instance_id: str | None = None
    since: AwareDatetime | None = Field(default=None, description="Window start (inclusive).")
    until: AwareDatetime | None = Field(
        default=None, description="Window end (inclusive): when ingest answered."
    )
    counts: list[WebhookCount] = Field(default_factory=list)
    error: Problem | None = None
