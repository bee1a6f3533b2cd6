"""Typed provider failures: what went wrong, whether the provider may have acted, what to do.

Every failure has a stable machine `code`, a human `message` in Brazilian Portuguese (for
ProviderRejected: the provider's own message, verbatim), a short technical `detail`, and two
flags the caller decides on:

- `uncertain`: the provider may have carried the call out (e.g. a send may have gone out).
  Such a send must be recorded as uncertain and reconciled, never blindly resent.
- `retryable`: repeating the same call later is safe and may succeed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias, TypeGuard


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderUnavailable:
    """The provider certainly did not act: nothing was sent, or a gateway/5xx refused it."""

    code: Literal["PROVIDER_UNAVAILABLE"] = field(default="PROVIDER_UNAVAILABLE", init=False)
    message: str = field(
        default="O W-API está indisponível no momento; a chamada não foi aceita.", init=False
    )
    operation: str
    detail: str
    status_code: int | None = None
    retryable: bool = True
    uncertain: bool = field(default=False, init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderTimeout:
    """The request left but no answer came in time: the outcome is unknown."""

    code: Literal["PROVIDER_TIMEOUT"] = field(default="PROVIDER_TIMEOUT", init=False)
    message: str = field(
        default="O W-API não respondeu a tempo; não sabemos se a chamada foi executada.",
        init=False,
    )
    operation: str
    detail: str
    status_code: int | None = None
    retryable: bool = field(default=False, init=False)
    uncertain: bool = field(default=True, init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderRejected:
    """The provider refused the call (4xx, or 2xx with `error: true`); `message` is verbatim."""

    code: Literal["PROVIDER_REJECTED"] = field(default="PROVIDER_REJECTED", init=False)
    message: str
    operation: str
    detail: str
    status_code: int
    retryable: bool = False
    uncertain: bool = field(default=False, init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderUnauthorized:
    """401/403: the instance id or token is wrong; retrying the same credentials is useless."""

    code: Literal["PROVIDER_UNAUTHORIZED"] = field(default="PROVIDER_UNAUTHORIZED", init=False)
    message: str = field(
        default="O W-API recusou as credenciais da instância (ID ou token inválido).",
        init=False,
    )
    operation: str
    detail: str
    status_code: int
    retryable: bool = field(default=False, init=False)
    uncertain: bool = field(default=False, init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderBadResponse:
    """The provider answered, but not in a shape we can trust (e.g. a send without messageId).

    Uncertain: a 2xx may mean it acted, so a send that ends here is not a success and not a
    certain failure either.
    """

    code: Literal["PROVIDER_BAD_RESPONSE"] = field(default="PROVIDER_BAD_RESPONSE", init=False)
    message: str = field(
        default="O W-API respondeu em um formato inesperado; o resultado é incerto.", init=False
    )
    operation: str
    detail: str
    status_code: int | None = None
    retryable: bool = field(default=False, init=False)
    uncertain: bool = field(default=True, init=False)


ProviderFailure: TypeAlias = (
    ProviderUnavailable
    | ProviderTimeout
    | ProviderRejected
    | ProviderUnauthorized
    | ProviderBadResponse
)

PROVIDER_FAILURE_TYPES: tuple[type[ProviderFailure], ...] = (
    ProviderUnavailable,
    ProviderTimeout,
    ProviderRejected,
    ProviderUnauthorized,
    ProviderBadResponse,
)


def is_failure(value: object) -> TypeGuard[ProviderFailure]:
    """True when `value` is one of the provider failure types."""
    return isinstance(value, PROVIDER_FAILURE_TYPES)
