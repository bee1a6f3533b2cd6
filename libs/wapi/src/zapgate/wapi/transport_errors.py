"""Map httpx exceptions to provider failures by one question: could the provider have acted?

- Nothing left this process, or the connection never opened (connect error/timeout, pool
  timeout, proxy refusal, a request we could not even build): `ProviderUnavailable`. The
  provider certainly did not act, so a retry cannot duplicate anything.
- The request was (possibly partly) written and then the exchange broke (read/write timeout,
  read/write error, the server closing without an answer): `ProviderTimeout`, outcome unknown.
  Even a write timeout lands here: bytes already handed to the kernel may have reached the
  provider, and calling a send "not accepted" when it went out would cause a duplicate
  WhatsApp message, while calling it uncertain only costs a reconciliation.
- The provider answered but the body could not be decoded: `ProviderBadResponse` (uncertain).
"""

from __future__ import annotations

import httpx

from zapgate.wapi.failures import (
    ProviderBadResponse,
    ProviderFailure,
    ProviderTimeout,
    ProviderUnavailable,
)

_NEVER_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
)
# Configuration or programming errors: nothing was sent, and the same call fails again.
_NEVER_SENT_PERMANENT: tuple[type[Exception], ...] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.InvalidURL,
)


def failure_from_exception(
    operation: str, exc: httpx.HTTPError | httpx.InvalidURL
) -> ProviderFailure:
    """The typed failure for an exception raised while calling the provider."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, _NEVER_SENT):
        return ProviderUnavailable(operation=operation, detail=detail)
    if isinstance(exc, _NEVER_SENT_PERMANENT):
        return ProviderUnavailable(operation=operation, detail=detail, retryable=False)
    if isinstance(exc, httpx.DecodingError):
        return ProviderBadResponse(operation=operation, detail=detail)
    # ReadTimeout, WriteTimeout, ReadError, WriteError, RemoteProtocolError, CloseError and
    # anything new: the request may have been delivered, so the outcome is unknown.
    return ProviderTimeout(operation=operation, detail=detail)
