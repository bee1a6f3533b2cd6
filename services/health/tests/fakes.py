"""Hand-written fakes behind health's ports, recording what happened."""

from __future__ import annotations

from dataclasses import dataclass, field

from zapgate.wapi.credentials import InstanceCredentials
from zapgate.wapi.failures import ProviderFailure
from zapgate.wapi.results import Acknowledged, DeviceInfo, InstanceDetails, InstanceStatus


@dataclass
class FakeProvider:
    """Answers scripted per operation; records `(operation, instance_id)` calls."""

    status: InstanceStatus | ProviderFailure = field(
        default_factory=lambda: InstanceStatus(connected=True)
    )
    details: InstanceDetails | ProviderFailure = field(
        default_factory=lambda: InstanceDetails(connected=True, connected_phone="5511999990000")
    )
    device_info: DeviceInfo | ProviderFailure = field(
        default_factory=lambda: DeviceInfo(
            connected_phone=None, lid=None, name=None, platform=None, status=None, is_business=None
        )
    )
    calls: list[tuple[str, str]] = field(default_factory=list)

    def operations(self) -> list[str]:
        return [operation for operation, _ in self.calls]

    async def status_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceStatus | ProviderFailure:
        self.calls.append(("status-instance", credentials.instance_id))
        return self.status

    async def fetch_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceDetails | ProviderFailure:
        self.calls.append(("fetch-instance", credentials.instance_id))
        return self.details

    async def device(self, credentials: InstanceCredentials) -> DeviceInfo | ProviderFailure:
        self.calls.append(("device", credentials.instance_id))
        return self.device_info

    async def restart(self, credentials: InstanceCredentials) -> Acknowledged | ProviderFailure:
        self.calls.append(("restart", credentials.instance_id))
        return Acknowledged(message="ok")
