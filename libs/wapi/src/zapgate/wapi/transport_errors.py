"""Map aiohttp exceptions to provider failures by one question: could the provider have acted?

- Nothing left this process, or the connection never opened (connect refused or timed out,
  no free connection within the pool timeout, TLS handshake refused, a request we could not
  even build): `ProviderUnavailable`. The provider certainly did not act, so a retry cannot
  duplicate anything.
- The request was (possibly partly) written and then the exchange broke (the server closing
  without an answer, a reset, a read timeout, the total timeout): `ProviderTimeout`, outcome
  unknown. Even a server that closes a pooled keep-alive connection "without sending a
  response" lands here: most of the time it closed before reading the request, but not always,
  and calling a send "not accepted" when it went out would cause a duplicate WhatsApp message,
  while calling it uncertain only costs a reconciliation. Idempotent reads are retried once on
  a fresh connection instead (see `is_broken_exchange`).
- The provider answered but the answer broke off or could not be parsed as HTTP:
  `ProviderBadResponse` (uncertain).

aiohttp's own exception classes are used, not httpx-aiohttp's translation to httpx classes:
that translation maps every `ClientConnectionError` (server disconnected, connection reset)
to `httpx.ConnectTimeout`, which would call an uncertain send "certainly not sent".
"""

from __future__ import annotations

import aiohttp

from zapgate.wapi.failures import (
    ProviderBadResponse,
    ProviderFailure,
    ProviderTimeout,
    ProviderUnavailable,
)

# Configuration errors: nothing was sent, and the same call fails again the same way.
_NEVER_SENT_PERMANENT: tuple[type[BaseException], ...] = (
    aiohttp.InvalidURL,
    aiohttp.ClientConnectorCertificateError,
    ValueError,  # a header or URL aiohttp refuses to build (e.g. a newline in a token)
)
_NEVER_SENT: tuple[type[BaseException], ...] = (
    # Raised while waiting for a free connection or opening one (aiohttp's `connect` timeout
    # covers both): the request was never written.
    aiohttp.ConnectionTimeoutError,
    # Refused, unreachable, DNS, proxy refused, TLS handshake failed: no connection.
    aiohttp.ClientConnectorError,
    aiohttp.ClientHttpProxyError,
)
_ANSWER_BROKE: tuple[type[BaseException], ...] = (
    aiohttp.ClientPayloadError,  # status line and headers came, the body broke off
    aiohttp.ClientResponseError,  # the answer was not valid HTTP
)
# The exchange broke on an open connection before an answer: for a reused connection this is
# usually the server's keep-alive timeout closing it just as the request left.
_BROKEN_EXCHANGE: tuple[type[BaseException], ...] = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ClientPayloadError,
)


def failure_from_exception(operation: str, exc: BaseException) -> ProviderFailure:
    """The typed failure for an exception raised while calling the provider."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, _NEVER_SENT_PERMANENT):
        return ProviderUnavailable(operation=operation, detail=detail, retryable=False)
    if isinstance(exc, _NEVER_SENT):
        return ProviderUnavailable(operation=operation, detail=detail)
    if isinstance(exc, _ANSWER_BROKE):
        return ProviderBadResponse(operation=operation, detail=detail)
    # ServerDisconnectedError, ClientOSError (reset), SocketTimeoutError (read), the total
    # timeout (a bare TimeoutError) and anything new: the provider may have acted.
    return ProviderTimeout(operation=operation, detail=detail)


def is_broken_exchange(exc: BaseException) -> bool:
    """True when a connection broke before a full answer (worth one retry of a read).

    Timeouts are not: the provider is slow, and asking again at once only doubles the wait.
    Connect failures are not either: that attempt already was a fresh connection.
    """
    return isinstance(exc, _BROKEN_EXCHANGE) and not isinstance(exc, _NEVER_SENT)
