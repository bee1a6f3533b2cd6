"""Stable machine codes and the human messages that go with them.

Codes never change meaning; messages are for people (operators read Brazilian Portuguese).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from zapgate.contracts.envelope import Contract


class ErrorCode(StrEnum):
    """Every failure zapgate reports, by its stable machine code."""

    SESSION_INCOMPLETE = "SESSION_INCOMPLETE"
    TIMEOUT_OR_GATEWAY = "TIMEOUT_OR_GATEWAY"
    DELIVERY_STALLED = "DELIVERY_STALLED"
    INSTANCE_DISCONNECTED = "INSTANCE_DISCONNECTED"
    INSTANCE_UNKNOWN = "INSTANCE_UNKNOWN"
    INSTANCE_NOT_CHECKED = "INSTANCE_NOT_CHECKED"
    INSTANCE_PAUSED = "INSTANCE_PAUSED"
    INSTANCE_EXISTS = "INSTANCE_EXISTS"
    PROVIDER_REJECTED = "PROVIDER_REJECTED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_UNCERTAIN = "PROVIDER_UNCERTAIN"
    EXPIRED = "EXPIRED"
    INVALID_COMMAND = "INVALID_COMMAND"
    PHONE_COUNTRY_CODE_MISSING = "PHONE_COUNTRY_CODE_MISSING"
    PHONE_INVALID = "PHONE_INVALID"
    NOT_FOUND = "NOT_FOUND"
    NOT_RETRYABLE = "NOT_RETRYABLE"
    CANCELLED = "CANCELLED"
    NOT_CANCELLABLE = "NOT_CANCELLABLE"
    INTERNAL = "INTERNAL"


MESSAGES_PT_BR: dict[ErrorCode, str] = {
    ErrorCode.SESSION_INCOMPLETE: (
        "Sessão incompleta: a instância diz estar conectada, mas o número do WhatsApp não é "
        "conhecido. A mensagem não foi enviada."
    ),
    ErrorCode.TIMEOUT_OR_GATEWAY: (
        "O provedor não respondeu ou respondeu com erro de gateway. A mensagem não foi enviada."
    ),
    ErrorCode.DELIVERY_STALLED: (
        "Mensagens recentes desta instância não estão sendo entregues. Envios suspensos até "
        "que uma entrega seja confirmada."
    ),
    ErrorCode.INSTANCE_DISCONNECTED: "Sessão desconectada. Tentativa de reconexão em andamento.",
    ErrorCode.INSTANCE_UNKNOWN: "Instância desconhecida: ela não está cadastrada no zapgate.",
    ErrorCode.INSTANCE_NOT_CHECKED: (
        "A instância ainda não foi verificada. Aguarde a primeira verificação de saúde."
    ),
    ErrorCode.INSTANCE_PAUSED: "Instância pausada por um operador. Nenhum envio é feito.",
    ErrorCode.INSTANCE_EXISTS: "Já existe uma instância cadastrada com este identificador.",
    ErrorCode.PROVIDER_REJECTED: "O provedor recusou a mensagem.",
    ErrorCode.PROVIDER_UNAVAILABLE: (
        "O provedor está indisponível. A mensagem não foi aceita; tente novamente mais tarde."
    ),
    ErrorCode.PROVIDER_UNCERTAIN: (
        "O provedor não respondeu a tempo depois de receber o pedido: não se sabe se a "
        "mensagem foi enviada. Verifique antes de reenviar."
    ),
    ErrorCode.EXPIRED: "O prazo de espera terminou antes de a instância se recuperar.",
    ErrorCode.INVALID_COMMAND: "Comando inválido.",
    ErrorCode.PHONE_COUNTRY_CODE_MISSING: (
        "O número não começa com um código de país. Envie-o com o código do país (ex.: 55 para "
        "o Brasil). A mensagem não foi enviada."
    ),
    ErrorCode.PHONE_INVALID: (
        "O número não tem um formato possível para o país indicado. A mensagem não foi enviada."
    ),
    ErrorCode.NOT_FOUND: "Registro não encontrado.",
    ErrorCode.NOT_RETRYABLE: "Somente mensagens com falha podem ser reenviadas.",
    ErrorCode.CANCELLED: "Envio cancelado a pedido enquanto aguardava a recuperação da instância.",
    ErrorCode.NOT_CANCELLABLE: (
        "Somente mensagens em espera podem ser canceladas; esta já foi decidida."
    ),
    ErrorCode.INTERNAL: "Erro interno do zapgate.",
}


class Problem(Contract):
    """A failure as callers see it: a stable `code` and a human `message`."""

    code: str = Field(description="Stable machine code, usually an ErrorCode value.")
    message: str = Field(description="Human explanation in Brazilian Portuguese.")
    detail: str | None = Field(
        default=None, description="Technical detail, e.g. the provider's own message."
    )
    fields: dict[str, str] | None = Field(
        default=None,
        description="For refused input: pt-BR explanation per dotted field path, e.g. `phone`.",
    )

    @classmethod
    def of(cls, code: ErrorCode, detail: str | None = None) -> Problem:
        return cls(code=code.value, message=MESSAGES_PT_BR[code], detail=detail)
