"""Pure decisions of the console: an instance's facts in, what an operator reads out (pt-BR).

Nothing here does I/O. Times are shown in the operator's zone (America/Sao_Paulo by default),
both relative ("há 5 minutos") and absolute ("30/11/2026 19:42:29"), through Babel's pt-BR data.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import phonenumbers
from babel import Locale
from babel.dates import TIMEDELTA_UNITS, format_datetime, format_timedelta

from zapgate.contracts.health import DegradedReason, InstanceState
from zapgate.contracts.sending import SendStatus, SendSummary
from zapgate.contracts.webhooks import WebhookCount, WebhookDisposition, WebhookErrorCode

LOCALE = Locale.parse("pt_BR")
_ABSOLUTE = "dd/MM/yyyy HH:mm:ss"
# The same numeric pattern through strftime: no locale data needed, 20x cheaper than Babel.
_ABSOLUTE_STRFTIME = "%d/%m/%Y %H:%M:%S"


class Shown(StrEnum):
    """What the operator sees as an instance's state; the value is the filter key in URLs."""

    CONNECTED = "conectado"
    INCOMPLETE = "incompleta"
    UNSTABLE = "instavel"
    DEGRADED = "degradado"
    DISCONNECTED = "desconectado"
    PAUSED = "pausado"
    UNKNOWN = "nao-verificado"


SHOWN_LABELS: dict[Shown, str] = {
    Shown.CONNECTED: "Conectado",
    Shown.INCOMPLETE: "Sessão incompleta",
    Shown.UNSTABLE: "Instável",
    Shown.DEGRADED: "Degradado",
    Shown.DISCONNECTED: "Desconectado",
    Shown.PAUSED: "Pausado",
    Shown.UNKNOWN: "Não verificado",
}

# A degraded reason's own label (other than SESSION_INCOMPLETE, which is a state of its own).
DEGRADED_LABELS: dict[str, str] = {
    DegradedReason.DELIVERY_STALLED: "Entregas paradas",
    DegradedReason.TIMEOUT_OR_GATEWAY: "Provedor sem resposta",
    DegradedReason.CREDENTIALS_REJECTED: "Credenciais recusadas",
    DegradedReason.PROVIDER_REJECTED: "Recusada pelo provedor",
}

REASON_TEXTS: dict[str, str] = {
    DegradedReason.SESSION_INCOMPLETE: (
        "A instância diz estar conectada, mas o número do WhatsApp não é conhecido: "
        "mensagens enviadas agora ficariam em “aguardando mensagem”. Envios bloqueados."
    ),
    DegradedReason.DELIVERY_STALLED: (
        "Mensagens recentes foram aceitas pelo provedor mas não chegaram aos aparelhos. "
        "Envios suspensos até uma entrega ser confirmada."
    ),
    DegradedReason.TIMEOUT_OR_GATEWAY: (
        "O provedor não respondeu à verificação a tempo (ou respondeu com erro de gateway)."
    ),
    DegradedReason.CREDENTIALS_REJECTED: (
        "O provedor recusou o identificador ou o token da instância; reiniciar não resolve. "
        "Cadastre o token correto."
    ),
    DegradedReason.PROVIDER_REJECTED: "O provedor respondeu à verificação com um erro próprio.",
}

_STATE_TEXTS: dict[Shown, str] = {
    Shown.CONNECTED: "Sessão conectada e completa: o número do WhatsApp é conhecido.",
    Shown.DISCONNECTED: (
        "A sessão caiu: o provedor parou de enviar webhooks. O zapgate tenta reiniciar "
        "respeitando o intervalo mínimo entre reinícios."
    ),
    Shown.PAUSED: "Pausada por um operador: não é verificada nem usada para envios.",
    Shown.UNKNOWN: "Ainda não verificada pelo zapgate.",
}


@dataclass(frozen=True, slots=True)
class InstanceFacts:
    """What the health (and sender) APIs say about one instance, in the console's terms."""

    instance_id: str
    display_name: str
    managed: bool
    paused: bool
    state: InstanceState
    reason: str | None = None
    phone: str | None = None
    since: datetime | None = None
    last_check_at: datetime | None = None
    last_proof_of_life_at: datetime | None = None
    last_restart_attempt_at: datetime | None = None
    restart_cooldown_until: datetime | None = None
    """From health's read API: no restart (by health or an operator) before this."""
    outage_started_at: datetime | None = None
    flaps: int = 0
    unstable: bool = False
    """Health's own verdict: the open episode's flaps reached its instability threshold."""
    """State changes inside the open outage episode (0 when the API does not carry episodes)."""
    stuck_messages: int | None = None
    """None: the sender's API gave no count."""


@dataclass(frozen=True, slots=True)
class Moment:
    """A time as shown: relative and absolute, both in pt-BR; empty when unknown."""

    relative: str = ""
    absolute: str = ""
    iso: str = ""

    @property
    def known(self) -> bool:
        return bool(self.iso)


@dataclass(frozen=True, slots=True)
class InstanceCard:
    """One instance as the pages show it."""

    instance_id: str
    display_name: str
    phone: str
    shown: Shown
    label: str
    reason: str
    reason_code: str
    since: Moment
    last_check: Moment
    last_proof_of_life: Moment
    last_restart: Moment
    cooldown_left: str
    outage_for: str
    stuck_messages: str
    paused: bool
    managed: bool
    can_restart_now: bool
    flags: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Viewpoint:
    """`now` and the zone the operator reads times in."""

    now: datetime
    zone: ZoneInfo


def shown_state(facts: InstanceFacts) -> Shown:  # noqa: PLR0911 - one answer per state
    """The one state an operator sees: paused first, then an unstable outage, then the truth."""
    if facts.paused:
        return Shown.PAUSED
    if facts.outage_started_at is not None and (facts.unstable or facts.flaps > 0):
        return Shown.UNSTABLE
    if facts.state is InstanceState.CONNECTED:
        return Shown.CONNECTED
    if facts.state is InstanceState.DISCONNECTED:
        return Shown.DISCONNECTED
    if facts.state is InstanceState.DEGRADED:
        if facts.reason == DegradedReason.SESSION_INCOMPLETE:
            return Shown.INCOMPLETE
        return Shown.DEGRADED
    return Shown.UNKNOWN


def label(facts: InstanceFacts, shown: Shown) -> str:
    """The state's words; a degraded instance is named by its reason ("Entregas paradas")."""
    if shown is Shown.DEGRADED:
        return DEGRADED_LABELS.get(facts.reason or "", SHOWN_LABELS[Shown.DEGRADED])
    return SHOWN_LABELS[shown]


def reason_text(facts: InstanceFacts, shown: Shown) -> str:
    """Why, in plain words (never a bare code)."""
    if shown is Shown.UNSTABLE:
        return (
            f"A sessão oscila: {facts.flaps} mudança(s) de estado desde o início da queda. "
            "Avisos e reinícios são contidos até ela se firmar."
        )
    if shown in {Shown.INCOMPLETE, Shown.DEGRADED} and facts.reason:
        return REASON_TEXTS.get(
            facts.reason, f"Instância degradada (motivo informado: {facts.reason})."
        )
    return _STATE_TEXTS.get(shown, "")


def moment(value: datetime | None, clock: Viewpoint) -> Moment:
    """`value` as "há 5 minutos" and "30/11/2026 19:42:29" in the operator's zone."""
    if value is None:
        return Moment()
    relative = _relative(_canonical_seconds((value - clock.now).total_seconds()))
    absolute = value.astimezone(clock.zone).strftime(_ABSOLUTE_STRFTIME)
    return Moment(relative=relative, absolute=absolute, iso=value.isoformat())


def duration(value: timedelta) -> str:
    """A positive duration in words ("4 minutos")."""
    return _duration(abs(_canonical_seconds(value.total_seconds())))


def _canonical_seconds(seconds: float) -> int:
    """The seconds Babel's wording depends on: its unit (the largest reaching 1, as Babel
    picks it with threshold 1) times the rounded count, with the sign. Equal wording, equal key:
    a page of 1,000 instances formats a few dozen distinct values, each once (lru_cache)."""
    size = abs(seconds)
    for _unit, per_unit in TIMEDELTA_UNITS:
        if size / per_unit >= 1:
            count = max(1, round(size / per_unit))
            return int(count * per_unit if seconds >= 0 else -count * per_unit)
    return 0


@functools.lru_cache(maxsize=4096)
def _relative(seconds: int) -> str:
    return format_timedelta(
        timedelta(seconds=seconds), add_direction=True, threshold=1, locale=LOCALE
    )


@functools.lru_cache(maxsize=4096)
def _duration(seconds: int) -> str:
    return format_timedelta(timedelta(seconds=seconds), threshold=1, locale=LOCALE)


def cooldown_left(restart_cooldown_until: datetime | None, now: datetime) -> timedelta:
    """How long until health may restart again (zero: now), from the time health's read API
    gives (`InstanceHealth.restart_cooldown_until`); the console keeps no copy of the setting."""
    if restart_cooldown_until is None:
        return timedelta(0)
    return max(restart_cooldown_until - now, timedelta(0))


def card(facts: InstanceFacts, clock: Viewpoint) -> InstanceCard:
    """Everything the instances page shows of one instance."""
    shown = shown_state(facts)
    left = cooldown_left(facts.restart_cooldown_until, clock.now)
    outage = ""
    if facts.outage_started_at is not None:
        outage = duration(max(clock.now - facts.outage_started_at, timedelta(0)))
    flags = []
    if not facts.managed:
        flags.append("não gerenciada")
    return InstanceCard(
        instance_id=facts.instance_id,
        display_name=facts.display_name,
        phone=facts.phone or "",
        shown=shown,
        label=label(facts, shown),
        reason=reason_text(facts, shown),
        reason_code=facts.reason or "",
        since=moment(facts.since, clock),
        last_check=moment(facts.last_check_at, clock),
        last_proof_of_life=moment(facts.last_proof_of_life_at, clock),
        last_restart=moment(facts.last_restart_attempt_at, clock),
        cooldown_left=duration(left) if left > timedelta(0) else "",
        outage_for=outage,
        stuck_messages="" if facts.stuck_messages is None else str(facts.stuck_messages),
        paused=facts.paused,
        managed=facts.managed,
        can_restart_now=left == timedelta(0),
        flags=tuple(flags),
    )


def parse_filter(value: str | None) -> Shown | None:
    """The `estado` query parameter: a known filter key, else no filter."""
    if not value:
        return None
    try:
        return Shown(value)
    except ValueError:
        return None


def count_by_state(cards: list[InstanceCard]) -> dict[Shown, int]:
    """How many instances each state has (every state listed, zeros included)."""
    counts = dict.fromkeys(Shown, 0)
    for item in cards:
        counts[item.shown] += 1
    return counts


ACTION_LABELS: dict[str, str] = {
    "login": "Entrou no console",
    "logout": "Saiu do console",
    "check_now": "Verificar agora",
    "pause": "Pausar",
    "resume": "Retomar",
    "restart": "Reiniciar",
    "register": "Cadastrar instância",
    "remove": "Remover instância",
    "qr_code": "Reconectar por QR code",
    "pairing_code": "Reconectar por código de pareamento",
    "retry_send": "Tentar novamente (envio)",
}


@dataclass(frozen=True, slots=True)
class AuditLine:
    """One audit row as shown: when (absolute, operator's zone), who, what, how it ended."""

    when: str
    operator: str
    what: str
    instance_id: str | None
    outcome: str
    result: str


def audit_line(  # noqa: PLR0913 - one argument per audit column
    *,
    at: datetime,
    operator: str,
    action: str,
    instance_id: str | None,
    outcome: str,
    detail: str | None,
    clock: Viewpoint,
) -> AuditLine:
    """An audit row in pt-BR words."""
    ok = outcome == "ok"
    result = "ok" if ok else "falhou" + (f" ({detail})" if detail else "")
    return AuditLine(
        when=format_datetime(at, _ABSOLUTE, tzinfo=clock.zone, locale=LOCALE),
        operator=operator,
        what=ACTION_LABELS.get(action, action),
        instance_id=instance_id,
        outcome="ok" if ok else "failed",
        result=result,
    )


SOURCE_LABELS: dict[str, str] = {
    "tick": "verificação periódica",
    "check_now": "verificação pedida",
    "webhook": "webhook do provedor",
    "proof_of_life": "prova de vida (webhook com o número)",
    "sender_preflight": "pré-verificação de um envio",
    "delivery_tracking": "acompanhamento de entregas",
    "operator": "operador",
}


def state_label(state: InstanceState, reason: str | None) -> str:
    """The words for a state as health stores it (the timeline has no pause or episodes)."""
    facts = InstanceFacts(
        instance_id="", display_name="", managed=True, paused=False, state=state, reason=reason
    )
    return label(facts, shown_state(facts))


@dataclass(frozen=True, slots=True)
class TimelineLine:
    """One state change as the instance page lists it."""

    when: Moment
    from_label: str
    to_label: str
    to_shown: str
    reason: str
    source: str


def timeline_line(  # noqa: PLR0913 - one argument per column of a transition
    *,
    observed_at: datetime,
    from_state: InstanceState,
    from_reason: str | None,
    to_state: InstanceState,
    reason: str | None,
    source: str,
    clock: Viewpoint,
) -> TimelineLine:
    facts = InstanceFacts(
        instance_id="", display_name="", managed=True, paused=False, state=to_state, reason=reason
    )
    shown = shown_state(facts)
    return TimelineLine(
        when=moment(observed_at, clock),
        from_label=state_label(from_state, from_reason),
        to_label=label(facts, shown),
        to_shown=shown.value,
        reason=REASON_TEXTS.get(reason, reason) if reason else "",
        source=SOURCE_LABELS.get(source, source),
    )


_QR_IMAGE_PREFIXES = ("data:image/png;base64,", "data:image/jpeg;base64,", "data:image/svg+xml")


def qr_image(value: str | None) -> str | None:
    """The provider's QR as an `<img src>`: only a data-URI image is shown, nothing else."""
    if value and value.startswith(_QR_IMAGE_PREFIXES):
        return value
    return None


def phone_digits(value: str) -> str | None:
    """A phone typed by a person ("(11) 98888-7777", "+55 11 98888-7777") as W-API wants it:
    digits with the country code (Brazil when none is given); None when it is not a valid
    number (libphonenumber's metadata through `phonenumbers`)."""
    try:
        parsed = phonenumbers.parse(value, "BR")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164).lstrip("+")


SEND_STATUS_LABELS: dict[str, str] = {
    "held": "Aguardando a instância",
    "sent": "Aceita pelo provedor",
    "delivered": "Entregue",
    "read": "Lida",
    "played": "Reproduzida",
    "failed": "Falhou",
    "uncertain": "Incerta",
}


@dataclass(frozen=True, slots=True)
class SendStep:
    """One step of a message's status timeline."""

    label: str
    when: Moment


@dataclass(frozen=True, slots=True)
class SendLine:
    """One send as the instance page lists it."""

    command_id: str
    phone: str
    kind: str
    status: str
    status_label: str
    steps: tuple[SendStep, ...]
    error: str
    error_code: str
    can_retry: bool
    retry_of: str


def send_line(send: SendSummary, clock: Viewpoint) -> SendLine:
    """A send with its status timeline in words (accepted, sent, delivered, read, failed)."""
    times = [
        ("Recebida pelo zapgate", send.created_at),
        ("Aguardando a instância", send.held_at),
        ("Aceita pelo provedor", send.sent_at),
        ("Entregue", send.delivered_at),
        ("Lida", send.read_at),
        ("Reproduzida", send.played_at),
        ("Falhou", send.failed_at),
    ]
    steps = tuple(SendStep(label, moment(at, clock)) for label, at in times if at is not None)
    return SendLine(
        command_id=send.command_id,
        phone=send.phone,
        kind=send.kind.value,
        status=send.status.value,
        status_label=SEND_STATUS_LABELS.get(send.status.value, send.status.value),
        steps=steps,
        error=send.error.message if send.error else "",
        error_code=send.error.code if send.error else "",
        can_retry=send.status is SendStatus.FAILED,
        retry_of=send.retry_of or "",
    )


# --- webhooks per kind (ingest's read API) ----------------------------------------------------

WEBHOOK_KIND_LABELS: dict[str, str] = {
    "message_received": "Mensagem recebida",
    "message_sent": "Mensagem enviada (confirmação do provedor)",
    "message_changed": "Mensagem alterada (edição, exclusão, reação)",
    "message_status": "Status de mensagem (entregue, lida...)",
    "instance_connected": "Instância conectada",
    "instance_disconnected": "Instância desconectada",
    "chat_presence": "Presença no chat (digitando...)",
    "unrouted": "Evento desconhecido",
    "quarantined": "Corpo ilegível",
}

WEBHOOK_DISPOSITION_LABELS: dict[str, str] = {
    WebhookDisposition.ROUTED: "Encaminhado",
    WebhookDisposition.UNROUTED: "Guardado sem tipo",
    WebhookDisposition.QUARANTINED: "Em quarentena",
}

QUARANTINE_CODE_TEXTS: dict[str, str] = {
    WebhookErrorCode.WEBHOOK_NOT_JSON: "não é JSON",
    WebhookErrorCode.WEBHOOK_NOT_OBJECT: "JSON que não é um objeto",
    WebhookErrorCode.WEBHOOK_TOO_DEEP: "JSON aninhado demais",
    WebhookErrorCode.WEBHOOK_TOO_LARGE: "maior que o limite",
    WebhookErrorCode.WEBHOOK_UNREADABLE: "não interpretável",
    "ARCHIVE_REJECTED": "recusado pelo banco de dados",
    "ARCHIVE_UNREADABLE": "mensagem ilegível no barramento",
}


@dataclass(frozen=True, slots=True)
class WebhookLine:
    """One row of the webhooks panel: the kind and what ingest did, in words."""

    kind: str
    kind_label: str
    disposition: str
    disposition_label: str
    count: int
    last: Moment


def webhook_line(count: WebhookCount, clock: Viewpoint) -> WebhookLine:
    """A (kind, disposition) count in pt-BR; a quarantine row says why ("não é JSON")."""
    disposition = WEBHOOK_DISPOSITION_LABELS.get(count.disposition, str(count.disposition))
    if count.code is not None:
        disposition += f" ({QUARANTINE_CODE_TEXTS.get(count.code, count.code)})"
    return WebhookLine(
        kind=count.kind,
        kind_label=WEBHOOK_KIND_LABELS.get(count.kind, count.kind),
        disposition=count.disposition.value,
        disposition_label=disposition,
        count=count.count,
        last=moment(count.last_received_at, clock),
    )
