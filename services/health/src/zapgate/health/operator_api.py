"""Health's use cases for operators (the console): restart now, QR code, pairing code,
history of state changes.

Over narrow ports (`OperatorStore`, `ReconnectProvider` in ports.py); `handlers.py` answers them
as request-reply verbs (same queue group as the other API verbs). The token never leaves health:
the console asks, health calls the provider with the credentials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import (
    GetInstanceHistory,
    GetQrCode,
    InstanceHistoryReply,
    PairingCodeReply,
    QrCodeReply,
    RequestPairingCode,
    RestartInstance,
    RestartReply,
)
from zapgate.wapi.results import Acknowledged, PairingCode, QrCode

if TYPE_CHECKING:
    from datetime import timedelta

    from zapgate.health.ports import OperatorStore, ReconnectProvider
    from zapgate.runtime.clock import Clock
    from zapgate.wapi.failures import ProviderFailure

_log = structlog.get_logger("zapgate.health.operator_api")


def problem_of(failure: ProviderFailure) -> Problem:
    """A provider failure as callers see it (the provider's own words stay in `detail`)."""
    return Problem(code=failure.code, message=failure.message, detail=failure.detail[:500])


class OperatorApi:
    """The use cases behind the four verbs."""

    def __init__(
        self,
        *,
        store: OperatorStore,
        provider: ReconnectProvider,
        clock: Clock,
        cooldown: timedelta,
    ) -> None:
        self._store = store
        self._provider = provider
        self._clock = clock
        self._cooldown = cooldown

    async def restart(self, command: RestartInstance) -> RestartReply:
        """Restart now unless paused, unmanaged or inside the cooldown (compare-and-set)."""
        now = self._clock.now()
        found = await self._store.health(command.instance_id)
        if not found:
            return RestartReply(ok=False, error=Problem.of(ErrorCode.INSTANCE_UNKNOWN))
        if found[0].paused:
            return RestartReply(ok=False, error=Problem.of(ErrorCode.INSTANCE_PAUSED))
        target = await self._store.try_claim_restart(
            command.instance_id, now=now, cooldown=self._cooldown
        )
        if target is None:
            last = found[0].last_restart_attempt_at
            until = last + self._cooldown if last is not None else None
            _log.info(
                "operator_restart_refused",
                instance_id=command.instance_id,
                requested_by=command.requested_by,
                why="cooldown" if until is not None else "not managed",
            )
            return RestartReply(ok=True, restarted=False, cooldown_until=until)
        result = await self._provider.restart(target.credentials())
        failure = None if isinstance(result, Acknowledged) else result
        _log.info(
            "operator_restart",
            instance_id=command.instance_id,
            requested_by=command.requested_by,
            outcome="accepted" if failure is None else "failed",
            code=None if failure is None else failure.code,
        )
        return RestartReply(
            ok=True,
            restarted=True,
            accepted_by_provider=failure is None,
            cooldown_until=now + self._cooldown,
            error=None if failure is None else problem_of(failure),
        )

    async def qr_code(self, query: GetQrCode) -> QrCodeReply:
        target = await self._store.target(query.instance_id)
        if target is None:
            return QrCodeReply(ok=False, error=Problem.of(ErrorCode.INSTANCE_UNKNOWN))
        result = await self._provider.qr_code(target.credentials())
        if not isinstance(result, QrCode):
            _log.warning("qr_code_failed", instance_id=query.instance_id, code=result.code)
            return QrCodeReply(ok=False, error=problem_of(result))
        _log.info("qr_code", instance_id=query.instance_id, connected=result.connected)
        return QrCodeReply(ok=True, connected=result.connected, image=result.qrcode)

    async def pairing_code(self, command: RequestPairingCode) -> PairingCodeReply:
        target = await self._store.target(command.instance_id)
        if target is None:
            return PairingCodeReply(ok=False, error=Problem.of(ErrorCode.INSTANCE_UNKNOWN))
        result = await self._provider.pairing_code(target.credentials(), command.phone)
        if not isinstance(result, PairingCode):
            _log.warning("pairing_code_failed", instance_id=command.instance_id, code=result.code)
            return PairingCodeReply(ok=False, error=problem_of(result))
        _log.info("pairing_code", instance_id=command.instance_id)
        return PairingCodeReply(ok=True, code=result.code)

    async def history(self, query: GetInstanceHistory) -> InstanceHistoryReply:
        if not await self._store.health(query.instance_id):
            return InstanceHistoryReply(ok=False, error=Problem.of(ErrorCode.INSTANCE_UNKNOWN))
        transitions = await self._store.history(query.instance_id, limit=query.limit)
        return InstanceHistoryReply(ok=True, transitions=transitions)
