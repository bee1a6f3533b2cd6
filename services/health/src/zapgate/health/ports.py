"""The slices of outside systems health depends on, as Protocols.

`WapiClient` satisfies `SessionProvider` structurally; tests hand in fakes.
"""

from __future__ import annotations

from typing import Protocol

from zapgate.wapi.credentials import InstanceCredentials
from zapgate.wapi.failures import ProviderFailure
from zapgate.wapi.results import Acknowledged, DeviceInfo, InstanceDetails, InstanceStatus


class SessionProvider(Protocol):
    """The W-API calls health makes (a subset of `zapgate.wapi.port.WapiPort`)."""

    async def status_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceStatus | ProviderFailure: ...

    async def fetch_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceDetails | ProviderFailure: ...

    async def device(self, credentials: InstanceCredentials) -> DeviceInfo | ProviderFailure: ...

    async def restart(self, credentials: InstanceCredentials) -> Acknowledged | ProviderFailure: ...
