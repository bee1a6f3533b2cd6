"""The OpenAPI document: committed, current, with examples, and honoured by the live API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from zapgate.api.openapi import document, render

from .conftest import bearer, register

if TYPE_CHECKING:
    from nats.aio.client import Client

    from zapgate.api.lifecycle import RunningApi
    from zapgate.wapi.simulator.handle import Simulator

    from .conftest import Keys

COMMITTED = Path(__file__).parents[1] / "openapi.json"
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = spec["components"]["schemas"][name]
    return node


@pytest.mark.unit
def test_committed_openapi_matches_what_the_code_generates() -> None:
    """Regenerating the document changes nothing (run `./taskw api:openapi`)."""
    assert COMMITTED.read_text(encoding="utf-8") == render()


@pytest.mark.unit
def test_every_operation_has_an_example_of_its_answer_and_of_its_body() -> None:
    """Each endpoint's success answer and request body (when any) carry an example."""
    spec = document()
    missing = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            code, success = next(
                (k, v) for k, v in operation["responses"].items() if k.startswith("2")
            )
            content = success.get("content", {}).get("application/json")
            if content is None:
                answer = code == "204"  # nothing to show: the answer has no body
            else:
                answer = "example" in content or "examples" in _resolve(spec, content["schema"])
            body = operation.get("requestBody")
            body_ok = body is None or "examples" in _resolve(
                spec, body["content"]["application/json"]["schema"]
            )
            if not (answer and body_ok):
                missing.append(f"{method.upper()} {path}")
    assert not missing, missing
    assert len(spec["paths"]) == 11


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.usefixtures("services")
async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    api: RunningApi, keys: Keys, nc: Client, wapi_simulator: Simulator
) -> None:
    """Generated valid and invalid requests against every operation of the live API."""
    wapi_simulator.add_instance("inst-s", "tok-api-test", phone="5511999990000")
    await register(nc, "inst-s")
    token = await keys.make("*")
    schema = schemathesis.openapi.from_dict(json.loads(COMMITTED.read_text(encoding="utf-8")))
    base_url = f"http://127.0.0.1:{api.port}"
    loop = asyncio.get_running_loop()
    calls: list[int] = []

    def exercise() -> None:
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]  # our document is valid
            overrides: dict[str, Any] = {}
            if operation.path.endswith("/messages/{kind}") or "/messages/" in operation.path:
                # Waiting is exercised by the flow tests; here every send answers at once.
                overrides = {"query": {"wait": 0}} if operation.method == "post" else {}
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode, **overrides)

                @settings(
                    max_examples=15,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def call(case: schemathesis.Case[Any]) -> None:
                    case.call_and_validate(
                        base_url=base_url, headers=bearer(token), checks=CHECKS, timeout=30
                    )
                    calls.append(1)

                call()

    await asyncio.to_thread(exercise)
    del loop
    assert len(calls) > 100
