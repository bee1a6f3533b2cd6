"""Where outbound webhooks may go: public addresses only (a guard against SSRF).

A subscription URL is chosen by a caller; without a guard the API would POST, from inside the
deployment, to its loopback, the private network, link-local addresses (cloud metadata at
169.254.169.254, fd00:ec2::254) or anything else not on the public Internet. The rule is one:
every address the host resolves to must be global (`ipaddress`' `is_global`, IPv4-mapped IPv6
unwrapped); loopback is allowed only by the dev opt-in `webhook_allow_loopback` (tests and the
simulator run on loopback; prod refuses the opt-in).

It is checked twice: when a subscription is created (a coded 422) and at every connection
(`GuardedTransport`): the POST connects to the very address that passed the check, so a name
that resolved to a public address at creation and to an internal one later (DNS rebinding)
is refused too. Redirects are never followed (httpx's default).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import httpcore
import httpx
import structlog

from zapgate.api.service import Refusal, RefusalKind
from zapgate.contracts.errors import Problem

if TYPE_CHECKING:
    from collections.abc import Iterable

_log = structlog.get_logger("zapgate.api")
DESTINATION_FORBIDDEN: Final = "WEBHOOK_DESTINATION_FORBIDDEN"
DESTINATION_UNRESOLVABLE: Final = "WEBHOOK_DESTINATION_UNRESOLVABLE"

_MESSAGES: Final = {
    DESTINATION_FORBIDDEN: (
        "A URL do webhook aponta para um endereço interno ({reason}: loopback, rede privada, "
        "link-local ou metadados de nuvem); use um endereço público."
    ),
    DESTINATION_UNRESOLVABLE: (
        "Não foi possível resolver o nome do host da URL do webhook; confira o endereço."
    ),
}


class DestinationRefused(httpcore.ConnectError):
    """An address outside the allowed destinations. `code` is stable, `message` pt-BR; the
    refused address is in `address` (for logs), never in the message."""

    def __init__(self, code: str, reason: str, address: str = "") -> None:
        self.code = code
        self.reason = reason
        self.address = address
        self.message = _MESSAGES[code].format(reason=reason)
        super().__init__(f"{code}: {reason}")


def refusal(address: str, *, allow_loopback: bool) -> str | None:
    """Why `address` (an IP literal, IPv6 zone allowed) may not be a destination, else None.

    Reasons: `loopback`, `link_local` (cloud metadata), `private`, `multicast`, `not_global`
    (unspecified, shared 100.64/10, documentation, reserved ranges).
    """
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0]
    )
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    checks = (
        (ip.is_link_local, "link_local"),
        (ip.is_private, "private"),
        (ip.is_multicast, "multicast"),
        (not ip.is_global, "not_global"),
    )
    return next((reason for failed, reason in checks if failed), None)


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself), in resolver order.
    `DestinationRefused(DESTINATION_UNRESOLVABLE)` when the name does not resolve."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise DestinationRefused(DESTINATION_UNRESOLVABLE, "unresolvable") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_addresses(addresses: Iterable[str], *, allow_loopback: bool) -> None:
    """`DestinationRefused(DESTINATION_FORBIDDEN)` when any address is refused (one internal
    address among public ones is enough: the client may pick any)."""
    for address in addresses:
        reason = refusal(address, allow_loopback=allow_loopback)
        if reason is not None:
            raise DestinationRefused(DESTINATION_FORBIDDEN, reason, address)


class DestinationGuard:
    """Checks a subscription URL when it is created."""

    def __init__(self, *, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback

    async def check(self, url: str) -> None:
        """Raise `DestinationRefused` unless every address of `url`'s host is allowed."""
        split = urlsplit(url)
        host = split.hostname or ""
        port = split.port or (443 if split.scheme == "https" else 80)
        if not host:
            raise DestinationRefused(DESTINATION_UNRESOLVABLE, "unresolvable")
        check_addresses(await resolve(host, port), allow_loopback=self.allow_loopback)


class CheckedDestinations:
    """`DestinationCheck` answering a refused URL with a coded 422 (pt-BR message)."""

    def __init__(self, guard: DestinationGuard) -> None:
        self._guard = guard

    async def check(self, url: str) -> None:
        try:
            await self._guard.check(url)
        except DestinationRefused as exc:
            _log.info("subscription_refused", code=exc.code, reason=exc.reason)
            raise Refusal(
                RefusalKind.UNPROCESSABLE,
                Problem(code=exc.code, message=exc.message, detail=exc.reason),
            ) from None


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks, then connects to the checked address (TLS still names the host)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, *, allow_loopback: bool) -> None:
        self._inner = inner
        self._allow_loopback = allow_loopback

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port)
        check_addresses(addresses, allow_loopback=self._allow_loopback)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"no address for {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        del path, timeout, socket_options
        raise DestinationRefused(DESTINATION_FORBIDDEN, "unix_socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx transport whose every connection goes through the destination check.

    No proxy from the environment (a proxy would make the checked address the proxy's).
    """

    def __init__(self, *, allow_loopback: bool, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(trust_env=False, limits=limits)
        # httpx builds its httpcore pool without a way to pass a network backend; this pool
        # is the same one (same TLS context, limits) with the guarded backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(httpcore.AnyIOBackend(), allow_loopback=allow_loopback),
        )


def refused_by_guard(exc: BaseException) -> DestinationRefused | None:
    """The `DestinationRefused` behind an httpx error, if that is what stopped the request."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DestinationRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
