"""Per-call credentials for one W-API instance."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr


class InstanceCredentials(BaseModel):
    """The id and bearer token of one W-API instance.

    Passed to every port call so one adapter (one connection pool) serves thousands of
    instances. The token is a `SecretStr`: `repr`, `str` and `model_dump` never show it.
    """

    model_config = ConfigDict(frozen=True)

    instance_id: str
    token: SecretStr
