"""A W-API simulator: the provider's HTTP API and webhooks, driven by tests.

`SimulatorServer().start()` serves it on a free port; `.simulator` is the handle;
`payloads` builds realistic webhook bodies without any server.
"""

from zapgate.wapi.simulator.handle import Simulator
from zapgate.wapi.simulator.models import (
    CallRecord,
    DeliveryMode,
    Fault,
    FaultKind,
    InstancePatch,
    InstanceSpec,
    RestartMode,
    WebhookRecord,
)
from zapgate.wapi.simulator.receiver import WebhookReceiver
from zapgate.wapi.simulator.server import BackgroundServer, SimulatorServer

__all__ = [
    "BackgroundServer",
    "CallRecord",
    "DeliveryMode",
    "Fault",
    "FaultKind",
    "InstancePatch",
    "InstanceSpec",
    "RestartMode",
    "Simulator",
    "SimulatorServer",
    "WebhookReceiver",
    "WebhookRecord",
]
