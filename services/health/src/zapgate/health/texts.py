"""Notification texts for people, in Brazilian Portuguese."""

from __future__ import annotations

from datetime import datetime

from zapgate.contracts.health import DegradedReason, InstanceState, NotificationKind

_REASONS: dict[str, str] = {
    DegradedReason.SESSION_INCOMPLETE.value: (
        "a sessão diz estar conectada, mas o número do WhatsApp não é conhecido"
    ),
    DegradedReason.TIMEOUT_OR_GATEWAY.value: (
        "o W-API não respondeu ou respondeu com erro de gateway"
    ),
    DegradedReason.DELIVERY_STALLED.value: "as mensagens enviadas não estão sendo entregues",
    DegradedReason.CREDENTIALS_REJECTED.value: (
        "o W-API recusou o ID ou o token da instância; confira as credenciais"
    ),
    DegradedReason.PROVIDER_REJECTED.value: "o W-API respondeu à verificação com um erro",
}


def describe(state: InstanceState, reason: str | None) -> str:
    if state is InstanceState.DISCONNECTED:
        return "a sessão do WhatsApp está desconectada; uma reconexão será tentada"
    if state is InstanceState.DEGRADED:
        return _REASONS.get(reason or "", f"instância com problema ({reason or 'sem motivo'})")
    if state is InstanceState.CONNECTED:
        return "a sessão está conectada e completa"
    return "o estado da instância ainda não é conhecido"


def _when(moment: datetime) -> str:
    return moment.strftime("%d/%m/%Y %H:%M:%S UTC")


def notification_text(  # noqa: PLR0913 - every field of the notification it words
    kind: NotificationKind,
    *,
    display_name: str,
    instance_id: str,
    state: InstanceState,
    reason: str | None,
    since: datetime,
    flaps: int = 0,
) -> str:
    who = f"Instância {display_name} ({instance_id})"
    if kind is NotificationKind.OUTAGE:
        return f"{who} fora do ar desde {_when(since)}: {describe(state, reason)}."
    if kind is NotificationKind.UNSTABLE:
        return (
            f"{who} instável: a sessão caiu e voltou {flaps} vezes desde {_when(since)}. "
            "Avisaremos uma única vez quando ela ficar estável."
        )
    quedas = f" A sessão caiu e voltou {flaps} vezes nesse período." if flaps else ""
    return f"{who} voltou a funcionar. Estava com problema desde {_when(since)}.{quedas}"
