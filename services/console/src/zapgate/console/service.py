"""The console's use cases over its ports: read instances, log operators in, act and audit.

Handlers call these and render what they return; tests call them with the fakes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import structlog

from zapgate.console import domain
from zapgate.console.domain import InstanceCard, InstanceFacts, Shown, Viewpoint
from zapgate.console.ports import (
    ApiRefusedError,
    ApiUnavailableError,
    AuditEntry,
    AuditLog,
    HealthApi,
    IngestApi,
    PasswordVerifier,
    SenderApi,
)
from zapgate.contracts.health import InstanceHealth
from zapgate.contracts.sending import SendStatus
from zapgate.runtime.clock import Clock

_log = structlog.get_logger("zapgate.console")

_SERVICE_NAMES = {"health": "saúde", "sender": "envio", "ingest": "recebimento de webhooks"}


@dataclass(frozen=True, slots=True)
class InstancesPage:
    """The instances page: the cards shown (after the filter) and the counts of every state."""

    cards: list[InstanceCard]
    counts: dict[Shown, int]
    total: int
    selected: Shown | None


@dataclass(frozen=True, slots=True)
class ActionResult:
    """How an operator's action ended, in pt-BR for the page."""

    ok: bool
    message: str
    card: InstanceCard | None = None


@dataclass(frozen=True, slots=True)
class SendsView:
    """The instance page's message lists; `unavailable` says why they are empty, if so."""

    recent: list[domain.SendLine]
    stuck: list[domain.SendLine]
    failed: list[domain.SendLine]
    unavailable: str = ""


@dataclass(frozen=True, slots=True)
class WebhooksView:
    """The instance page's "Webhooks por tipo (última hora)" panel; `unavailable` says why it
    is empty, if so."""

    lines: list[domain.WebhookLine]
    total: int
    unavailable: str = ""


@dataclass(frozen=True, slots=True)
class QrView:
    """What the QR block shows: the image to scan, or that the session is connected."""

    connected: bool
    image: str | None
    message: str


def facts_of(health: InstanceHealth, stuck: dict[str, int] | None = None) -> InstanceFacts:
    """The console's view of health's read model (fields health may add later are optional);
    `stuck` is the sender's count per instance (None: the sender did not answer)."""
    return InstanceFacts(
        stuck_messages=None if stuck is None else stuck.get(health.instance_id, 0),
        instance_id=health.instance_id,
        display_name=health.display_name,
        managed=health.managed,
        paused=health.paused,
        state=health.state,
        reason=health.reason,
        phone=health.phone,
        since=health.since,
        last_check_at=health.last_check_at,
        last_restart_attempt_at=health.last_restart_attempt_at,
        restart_cooldown_until=health.restart_cooldown_until,
        outage_started_at=health.outage_started_at,
        flaps=health.episode_flaps,
        unstable=health.unstable,
        last_proof_of_life_at=health.phone_observed_at,
    )


def unavailable_text(error: ApiUnavailableError) -> str:
    name = _SERVICE_NAMES.get(error.service, error.service)
    return f"O serviço de {name} não respondeu a tempo. Tente novamente em instantes."


class ConsoleService:
    """The use cases, wired once in `create_app`."""

    def __init__(  # noqa: PLR0913 - the composition root hands in each port by name
        self,
        *,
        health: HealthApi,
        sender: SenderApi,
        audit: AuditLog,
        passwords: PasswordVerifier,
        operators: dict[str, str],
        clock: Clock,
        zone: ZoneInfo,
        ingest: IngestApi,
    ) -> None:
        self.health = health
        self.sender = sender
        self.audit = audit
        self._passwords = passwords
        self._operators = operators
        self._clock = clock
        self._zone = zone
        self.ingest = ingest

    def viewpoint(self) -> Viewpoint:
        return Viewpoint(now=self._clock.now(), zone=self._zone)

    def card(self, health: InstanceHealth) -> InstanceCard:
        return domain.card(facts_of(health), self.viewpoint())

    # --- reading --------------------------------------------------------------------------

    async def instances(self, selected: Shown | None = None) -> InstancesPage:
        """Every instance's card (sorted by name), filtered by `selected` when given."""
        found, stuck = await asyncio.gather(self.health.health(), self._stuck_counts())
        view = self.viewpoint()
        cards = [
            domain.card(facts_of(item, stuck), view)
            for item in sorted(found, key=lambda h: (h.display_name.lower(), h.instance_id))
        ]
        shown = [c for c in cards if selected is None or c.shown is selected]
        return InstancesPage(
            cards=shown, counts=domain.count_by_state(cards), total=len(cards), selected=selected
        )

    async def instance_card(self, instance_id: str) -> InstanceCard | None:
        """One instance's card; None when health does not know it."""
        try:
            found, stuck = await asyncio.gather(
                self.health.health(instance_id), self._stuck_counts()
            )
        except ApiRefusedError:
            return None
        if not found:
            return None
        return domain.card(facts_of(found[0], stuck), self.viewpoint())

    async def _stuck_counts(self) -> dict[str, int] | None:
        try:
            return await self.sender.stuck_counts()
        except (ApiRefusedError, ApiUnavailableError) as error:
            _log.info("stuck_counts_unavailable", error=str(error))
            return None

    async def sends(self, instance_id: str, *, limit: int = 20) -> SendsView:
        """Recent sends with their status timelines, the stuck ones and the failed ones."""
        try:
            recent, stuck, failed = await asyncio.gather(
                self.sender.sends(instance_id, statuses=[], stuck=False, limit=limit),
                self.sender.sends(instance_id, statuses=[], stuck=True, limit=limit),
                self.sender.sends(
                    instance_id, statuses=[SendStatus.FAILED], stuck=False, limit=limit
                ),
            )
        except ApiUnavailableError as error:
            return SendsView([], [], [], unavailable=unavailable_text(error))
        except ApiRefusedError as refused:
            return SendsView([], [], [], unavailable=refused.problem.message)
        view = self.viewpoint()
        return SendsView(
            recent=[domain.send_line(s, view) for s in recent],
            stuck=[domain.send_line(s, view) for s in stuck],
            failed=[domain.send_line(s, view) for s in failed],
        )

    async def webhooks(self, instance_id: str) -> WebhooksView:
        """The instance's webhooks of the last hour per kind and disposition (ingest's API)."""
        try:
            reply = await self.ingest.webhook_counts(instance_id)
        except ApiUnavailableError as error:
            return WebhooksView([], 0, unavailable=unavailable_text(error))
        except ApiRefusedError as refused:
            return WebhooksView([], 0, unavailable=refused.problem.message)
        view = self.viewpoint()
        lines = [domain.webhook_line(count, view) for count in reply.counts]
        return WebhooksView(lines, sum(count.count for count in reply.counts))

    async def retry_send(self, operator: str, instance_id: str, command_id: str) -> ActionResult:
        """ "Tentar novamente": a new attempt of a failed send through the sender's API."""
        new_command_id = f"{command_id[:100]}:r{uuid.uuid4().hex[:10]}"

        async def run() -> ActionResult:
            outcome = await self.sender.retry(command_id, new_command_id)
            label = domain.SEND_STATUS_LABELS.get(outcome.status.value, outcome.status.value)
            if outcome.status is SendStatus.FAILED:
                reason = outcome.error.message if outcome.error else ""
                return ActionResult(ok=False, message=f"Nova tentativa falhou: {reason}")
            return ActionResult(ok=True, message=f"Nova tentativa ({new_command_id}): {label}.")

        return await self._act(operator, "retry_send", instance_id, run, detail=command_id)

    async def recent_actions(
        self, instance_id: str | None = None, *, limit: int = 20
    ) -> list[domain.AuditLine]:
        """The newest operator actions (on one instance, or all), in pt-BR words."""
        entries = await self.audit.recent(limit=limit, instance_id=instance_id)
        view = self.viewpoint()
        return [
            domain.audit_line(
                at=e.at,
                operator=e.operator,
                action=e.action,
                instance_id=e.instance_id,
                outcome=e.outcome,
                detail=e.detail,
                clock=view,
            )
            for e in entries
        ]

    # --- login ----------------------------------------------------------------------------

    async def authenticate(self, login: str, password: str) -> bool:
        """True when `login` is an operator and `password` matches its hash; audited."""
        stored = self._operators.get(login)
        # An unknown login is verified against nothing all the same: same time either way.
        ok = await self._passwords.verify(password, stored) and stored is not None
        await self._record(login or "?", "login", None, ok=ok, detail=None)
        _log.info("operator_login", operator=login, outcome="ok" if ok else "refused")
        return ok

    async def logout(self, operator: str) -> None:
        await self._record(operator, "logout", None, ok=True, detail=None)

    # --- actions --------------------------------------------------------------------------

    async def check_now(self, operator: str, instance_id: str) -> ActionResult:
        async def run() -> ActionResult:
            checked = await self.health.check_now(instance_id)
            card = self.card(checked[0]) if checked else None
            text = f"Verificada agora: {card.label}." if card else "Verificação pedida."
            return ActionResult(ok=True, message=text, card=card)

        return await self._act(operator, "check_now", instance_id, run)

    async def set_paused(self, operator: str, instance_id: str, *, paused: bool) -> ActionResult:
        async def run() -> ActionResult:
            await self.health.set_paused(instance_id, paused=paused)
            card = await self.instance_card(instance_id)
            text = "Instância pausada." if paused else "Instância retomada."
            return ActionResult(ok=True, message=text, card=card)

        return await self._act(operator, "pause" if paused else "resume", instance_id, run)

    async def register(
        self, operator: str, *, instance_id: str, display_name: str, token: str, managed: bool
    ) -> ActionResult:
        async def run() -> ActionResult:
            await self.health.register(
                instance_id=instance_id, display_name=display_name, token=token, managed=managed
            )
            return ActionResult(ok=True, message=f"Instância {instance_id} cadastrada.")

        return await self._act(operator, "register", instance_id, run)

    async def remove(self, operator: str, instance_id: str) -> ActionResult:
        async def run() -> ActionResult:
            await self.health.remove(instance_id)
            return ActionResult(ok=True, message=f"Instância {instance_id} removida.")

        return await self._act(operator, "remove", instance_id, run)

    async def restart(self, operator: str, instance_id: str) -> ActionResult:
        """Ask health to restart now; its cooldown decides (the answer says until when)."""

        async def run() -> ActionResult:
            reply = await self.health.restart(instance_id, requested_by=operator)
            view = self.viewpoint()
            until = domain.moment(reply.cooldown_until, view)
            card = await self.instance_card(instance_id)
            if not reply.restarted:
                wait = (
                    f" O próximo só é permitido {until.relative} ({until.absolute})."
                    if until.known
                    else ""
                )
                return ActionResult(
                    ok=False, message=f"Reinício não feito: reinício recente.{wait}", card=card
                )
            if reply.error is not None:
                return ActionResult(
                    ok=False,
                    message=f"O provedor recusou o reinício: {reply.error.message}",
                    card=card,
                )
            text = "Reinício pedido ao provedor."
            if until.known:
                text += f" Próximo reinício permitido {until.relative} ({until.absolute})."
            return ActionResult(ok=True, message=text, card=card)

        return await self._act(operator, "restart", instance_id, run)

    async def qr_code(self, operator: str, instance_id: str, *, audit: bool) -> QrView:
        """The provider's QR for the instance; when the session is already connected, health
        checks it at once so every page sees it come back."""
        try:
            reply = await self.health.qr_code(instance_id)
        except ApiRefusedError as refused:
            view = QrView(connected=False, image=None, message=refused.problem.message)
        else:
            if reply.connected:
                await self._check_quietly(instance_id)
                view = QrView(connected=True, image=None, message="Sessão conectada.")
            else:
                image = domain.qr_image(reply.image)
                text = "" if image else "O provedor não enviou uma imagem de QR code."
                view = QrView(connected=False, image=image, message=text)
        if audit:
            await self._record(
                operator,
                "qr_code",
                instance_id,
                ok=view.image is not None or view.connected,
                detail=None,
            )
        return view

    async def pairing_code(self, operator: str, instance_id: str, phone: str) -> ActionResult:
        digits = domain.phone_digits(phone)
        if digits is None:
            await self._record(
                operator, "pairing_code", instance_id, ok=False, detail="INVALID_PHONE"
            )
            return ActionResult(
                ok=False,
                message="Número inválido: informe o celular com DDD (e o código do país, se "
                "não for do Brasil).",
            )

        async def run() -> ActionResult:
            code = await self.health.pairing_code(instance_id, digits)
            return ActionResult(ok=True, message=code)

        return await self._act(operator, "pairing_code", instance_id, run)

    async def watch_session(self, instance_id: str) -> InstanceCard | None:
        """Check the session now (a reconnection in progress) and return its card."""
        await self._check_quietly(instance_id)
        return await self.instance_card(instance_id)

    async def timeline(self, instance_id: str, *, limit: int = 50) -> list[domain.TimelineLine]:
        """The instance's state changes, newest first, in words."""
        transitions = await self.health.history(instance_id, limit=limit)
        view = self.viewpoint()
        return [
            domain.timeline_line(
                observed_at=t.observed_at,
                from_state=t.from_state,
                from_reason=t.from_reason,
                to_state=t.to_state,
                reason=t.reason,
                source=t.source.value,
                clock=view,
            )
            for t in transitions
        ]

    async def _check_quietly(self, instance_id: str) -> None:
        try:
            await self.health.check_now(instance_id)
        except (ApiRefusedError, ApiUnavailableError) as error:
            _log.info("check_during_reconnection_failed", instance_id=instance_id, error=str(error))

    # --- plumbing -------------------------------------------------------------------------

    async def _act(
        self,
        operator: str,
        action: str,
        instance_id: str | None,
        run: Callable[[], Awaitable[ActionResult]],
        *,
        detail: str | None = None,
    ) -> ActionResult:
        try:
            result = await run()
        except ApiRefusedError as refused:
            result = ActionResult(ok=False, message=refused.problem.message)
            detail = " ".join(filter(None, [detail, refused.problem.code]))
        except ApiUnavailableError as error:
            result = ActionResult(ok=False, message=unavailable_text(error))
            detail = " ".join(filter(None, [detail, "UNAVAILABLE"]))
        await self._record(operator, action, instance_id, ok=result.ok, detail=detail)
        _log.info(
            "operator_action",
            operator=operator,
            action=action,
            instance_id=instance_id,
            outcome="ok" if result.ok else "failed",
            code=detail,
        )
        return result

    async def _record(
        self, operator: str, action: str, instance_id: str | None, *, ok: bool, detail: str | None
    ) -> None:
        entry = AuditEntry(
            at=self._clock.now(),
            operator=operator[:100],
            action=action,
            instance_id=instance_id,
            outcome="ok" if ok else "failed",
            detail=detail,
        )
        # Shielded: an operator closing the tab must not leave an action unrecorded.
        await asyncio.shield(self.audit.record(entry))
