"""Pure decisions of the sender: preflight, live-check verdicts, status progression, stalls.

No I/O here: the use cases load what these functions need, call them, and carry out the answer.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import phonenumbers
from phonenumbers import PhoneMetadata

from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import InstanceState
from zapgate.contracts.sending import SendStatus
from zapgate.contracts.webhooks import DeliveryStatus

# pt-BR text for a degraded reason health may add later and we do not know yet.
_UNKNOWN_DEGRADED_MESSAGE = "Instância degradada ({reason}). A mensagem não foi enviada."


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceView:
    """What the preflight reads from health's `instances` row.

    `version`: an opaque fingerprint of the row it was read from (token, paused, state, reason,
    phone), which a claim can re-check against the row at the time of the claim; None when the
    directory cannot tell (in-memory fakes).
    """

    instance_id: str
    token: str
    paused: bool
    state: InstanceState | str
    reason: str | None
    phone: str | None
    last_check_at: datetime | None
    version: str | None = None

    @property
    def session_health(self) -> str:
        """`state` or `state/reason`, as stored on the command and logged."""
        return f"{self.state}/{self.reason}" if self.reason else str(self.state)


class Verdict(StrEnum):
    SEND = "send"
    BLOCK = "block"
    HOLD = "hold"
    LIVE_CHECK = "live_check"


@dataclass(frozen=True, slots=True, kw_only=True)
class Preflight:
    """The preflight's answer. `problem` is set for BLOCK and HOLD (why it cannot go now)."""

    verdict: Verdict
    session_health: str | None
    problem: Problem | None = None
    request_reconnect: bool = False


def degraded_problem(reason: str | None) -> Problem:
    """The failure for a degraded instance: its reason is the code."""
    if reason is not None and reason in ErrorCode.__members__:
        return Problem.of(ErrorCode(reason))
    shown = reason or "motivo desconhecido"
    return Problem(
        code=reason or "DEGRADED",
        message=_UNKNOWN_DEGRADED_MESSAGE.format(reason=shown),
    )


def preflight(instance: InstanceView | None, *, can_hold: bool) -> Preflight:
    """Decide from health's view whether to send, check live, block, or hold.

    `can_hold`: the command still has hold time left. Holding applies to states that may
    recover by themselves (degraded, disconnected, not checked yet); an unknown instance and
    an operator's pause fail at once, since nothing will change them without a person.
    """
    if instance is None:
        return Preflight(
            verdict=Verdict.BLOCK,
            session_health=None,
            problem=Problem.of(ErrorCode.INSTANCE_UNKNOWN),
        )
    health = instance.session_health
    if instance.paused:
        return Preflight(
            verdict=Verdict.BLOCK,
            session_health=f"paused/{health}",
            problem=Problem.of(ErrorCode.INSTANCE_PAUSED),
        )
    state = instance.state
    if state == InstanceState.CONNECTED and instance.phone:
        return Preflight(verdict=Verdict.SEND, session_health=health)
    if state == InstanceState.DISCONNECTED:
        return Preflight(verdict=Verdict.LIVE_CHECK, session_health=health)
    if state == InstanceState.CONNECTED:
        # Connected without a phone is an incomplete session, whatever health stored.
        problem = Problem.of(ErrorCode.SESSION_INCOMPLETE)
    elif state == InstanceState.DEGRADED:
        problem = degraded_problem(instance.reason)
    else:
        problem = Problem.of(ErrorCode.INSTANCE_NOT_CHECKED)
    return Preflight(
        verdict=Verdict.HOLD if can_hold else Verdict.BLOCK,
        session_health=health,
        problem=problem,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSession:
    """What the live check saw: `reachable=False` when the provider gave no usable answer."""

    reachable: bool
    connected: bool | None = None
    phone: str | None = None

    @property
    def complete(self) -> bool:
        return self.reachable and self.connected is True and bool(self.phone)


def after_live_check(session: LiveSession, *, can_hold: bool, health: str | None) -> Preflight:
    """A `disconnected` instance after its live check: send when complete, else fail or hold.

    A session that is connected but has no phone is incomplete, not disconnected: saying
    "reconnecting" there would be untrue, so it gets SESSION_INCOMPLETE and no reconnect.
    """
    if session.complete:
        return Preflight(verdict=Verdict.SEND, session_health=f"{health} -> live connected")
    if session.reachable and session.connected is True:
        problem = Problem.of(ErrorCode.SESSION_INCOMPLETE, "live check: connected, no phone")
        reconnect = False
    else:
        detail = "live check: not connected" if session.reachable else "live check: no answer"
        problem = Problem.of(ErrorCode.INSTANCE_DISCONNECTED, detail)
        reconnect = True
    return Preflight(
        verdict=Verdict.HOLD if can_hold else Verdict.BLOCK,
        session_health=health,
        problem=problem,
        request_reconnect=reconnect,
    )


# --- delivery progression ----------------------------------------------------------------------

_RANK: dict[SendStatus, int] = {
    SendStatus.SENT: 1,
    SendStatus.DELIVERED: 2,
    SendStatus.READ: 3,
    SendStatus.PLAYED: 4,
}
_FROM_PROVIDER: dict[DeliveryStatus, SendStatus] = {
    DeliveryStatus.DELIVERED: SendStatus.DELIVERED,
    DeliveryStatus.READ: SendStatus.READ,
    DeliveryStatus.PLAYED: SendStatus.PLAYED,
    DeliveryStatus.FAILED: SendStatus.FAILED,
}


def next_status(current: SendStatus, reported: DeliveryStatus | None) -> SendStatus | None:
    """The status a receipt moves a message to, or None when it changes nothing.

    Forward only (sent < delivered < read < played); ERROR fails a message not yet delivered.
    PENDING, SERVER and unknown words say nothing new about a message already accepted.
    """
    if reported is None or current not in _RANK:
        return None
    target = _FROM_PROVIDER.get(reported)
    if target is None:
        return None
    if target is SendStatus.FAILED:
        # A receipt already proved delivery: a late ERROR cannot undo that.
        return SendStatus.FAILED if current is SendStatus.SENT else None
    return target if _RANK[target] > _RANK[current] else None


def is_delivery_proof(status: SendStatus) -> bool:
    return status in (SendStatus.DELIVERED, SendStatus.READ, SendStatus.PLAYED)


# --- stuck and stalled --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StuckMessage:
    command_id: str
    sent_at: datetime


def is_stalled(
    stuck: list[StuckMessage], last_delivery_at: datetime | None, *, threshold: int
) -> bool:
    """Several messages stuck and no receipt for the instance since the oldest of them was sent."""
    if len(stuck) < threshold:
        return False
    oldest = min(message.sent_at for message in stuck)
    return last_delivery_at is None or last_delivery_at < oldest


def backoff_delay(attempt: int, base: timedelta, cap: timedelta) -> timedelta:
    """Exponential backoff after failed attempt number `attempt` (1-based)."""
    grown: timedelta = base * (2 ** (attempt - 1))
    return min(grown, cap)


# --- early receipts -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EarlyReceipt:
    """A receipt whose provider message id matched no send yet (its answer may still come)."""

    message_id: str
    status: DeliveryStatus
    status_raw: str
    instance_id: str | None
    received_at: datetime


def worth_keeping(status: DeliveryStatus | None) -> bool:
    """Only receipts that can move a `sent` message are kept for a later answer."""
    return status in (
        DeliveryStatus.DELIVERED,
        DeliveryStatus.READ,
        DeliveryStatus.PLAYED,
        DeliveryStatus.FAILED,
    )


# --- phone numbers ------------------------------------------------------------------------------

# WhatsApp ids of Mexican mobiles keep the "1" after 52 that the numbering plan dropped in 2019
# (5215512345678): the plan's lengths alone would refuse a number a WhatsApp account has.
_MEXICO = 52
_MEXICO_MOBILE_PREFIX = "1"


@dataclass(frozen=True, slots=True)
class PhoneRefused:
    """Why a phone cannot be sent to: a stable code and a pt-BR explanation."""

    code: ErrorCode
    message: str


def _plausible_international(digits: str) -> bool:
    """`digits` start with an assigned country code and the rest has a possible shape.

    Possibility only (lengths and the region's general number pattern from `phonenumbers`),
    never validity: validity refuses real WhatsApp numbers, e.g. Brazilian mobiles written
    without the ninth digit (558488887777) that accounts created before 2016 still carry.
    """
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return False
    national = phonenumbers.national_significant_number(number)
    if (
        number.country_code == _MEXICO
        and national.startswith(_MEXICO_MOBILE_PREFIX)
        and len(national) == 11  # noqa: PLR2004 - "1" + a 10-digit Mexican number
    ):
        national = national[1:]
        number = phonenumbers.PhoneNumber(country_code=_MEXICO, national_number=int(national))
    country_code = number.country_code
    if country_code is None or not phonenumbers.is_possible_number(number):
        return False
    for region in phonenumbers.region_codes_for_country_code(country_code):
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
        general = metadata.general_desc if metadata is not None else None
        pattern = general.national_number_pattern if general is not None else None
        if pattern and re.fullmatch(pattern, national):
            return True
    return False


def _national(digits: str, default_country: str) -> str | None:
    """`digits` read as a national number of `default_country`, with its country code."""
    try:
        number = phonenumbers.parse(digits, default_country)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return f"{number.country_code}{phonenumbers.national_significant_number(number)}"


# A pure function of its two strings, and `phonenumbers`' parse + possibility checks were 2 %
# of the sender's CPU per send: answers are kept for the most recent destinations (a business
# writes to the same customers again and again). Both answer types are immutable.
@functools.lru_cache(maxsize=16_384)
def resolve_phone(phone: str, default_country: str | None) -> str | PhoneRefused:
    """The id W-API gets for a command's (already normalised) `phone`, or why it is refused.

    Shapes in (see `zapgate.contracts.sending.Phone`): `+<digits>` (the caller said it carries a
    country code; JIDs arrive like this too), bare `<digits>`, `...@g.us` and `...@lid` ids
    (passed on as they are). Out: digits with country code and no `+`.

    Bare digits with a default country (ISO 3166 code, e.g. `BR`) are read as a number of that
    country, as a phone dials them: its country code is kept when present (`5584988887777`,
    `558488887777`) and added when not (`84988887777` -> `5584988887777`); a foreign number
    needs `+`. Without a default, bare digits must start with a country code; a number that
    cannot (`11988887777`: no country code starts a possible number there) is refused with
    `PHONE_COUNTRY_CODE_MISSING` rather than sent somewhere else.
    """
    if phone.endswith(("@g.us", "@lid")):
        return phone
    explicit = phone.startswith("+")
    digits = phone.removeprefix("+")
    if not explicit and default_country is not None:
        national = _national(digits, default_country)
        if national is not None:
            return national
    if _plausible_international(digits):
        return digits
    if explicit:
        return PhoneRefused(
            ErrorCode.PHONE_INVALID,
            f"O número +{digits} não tem o tamanho de um número do país indicado.",
        )
    return PhoneRefused(
        ErrorCode.PHONE_COUNTRY_CODE_MISSING,
        f"O número {digits} não começa com um código de país válido. Envie com o código do "
        "país (ex.: 55 para o Brasil) ou configure um país padrão.",
    )


# --- refused fields --------------------------------------------------------------------------

_FIELD_HINTS: dict[str, str] = {
    "phone": (
        "use dígitos com o código do país (ex.: 5584988887777), com ou sem +, ou um id "
        "...@s.whatsapp.net, ...@g.us ou ...@lid"
    ),
    "command_id": "use de 1 a 128 caracteres entre letras, dígitos, _, - e :",
    "instance_id": "use de 1 a 100 caracteres entre letras, dígitos, _ e -",
}


def with_field_hints(problem: Problem) -> Problem:
    """`problem` (the runtime's `invalid_request`, pt-BR text per field) with how to write the
    fields a sender's caller gets wrong most (phone, ids) added to their explanation."""
    if not problem.fields:
        return problem
    fields = {
        path: f"{text}: {_FIELD_HINTS[path]}" if path in _FIELD_HINTS else text
        for path, text in problem.fields.items()
    }
    return problem.model_copy(update={"fields": fields})
