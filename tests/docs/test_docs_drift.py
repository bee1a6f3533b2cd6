"""The generated docs match the code: AsyncAPI per service and the configuration reference."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote

import pytest
from faststream import FastStream
from faststream.specification import AsyncAPI
from pydantic import SecretStr

from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import DegradedReason
from zapgate.contracts.webhooks import WebhookErrorCode, WebhookKind
from zapgate.health.app import create_app as create_health_app
from zapgate.health.app import health_handlers
from zapgate.health.settings import HealthSettings
from zapgate.runtime.topology import consumers_of
from zapgate.sender.app import create_app as create_sender_app
from zapgate.sender.settings import SenderSettings

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[2] / "docs"
UNUSED_DB = SecretStr("postgresql+psycopg://docs:docs@127.0.0.1:1/docs")


def _docgen() -> ModuleType:
    name = "zapgate_docgen"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DOCS / "tools" / "docgen.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _subscribed(app: FastStream) -> set[str]:
    """The subjects the app's FastStream subscribers read, from FastStream's public AsyncAPI."""
    assert app.broker is not None
    spec = json.loads(AsyncAPI(app.broker, schema_version="3.0.0").to_specification().to_json())
    return {
        spec["channels"][unquote(operation["channel"]["$ref"].rsplit("/", 1)[-1])]["address"]
        for operation in spec["operations"].values()
        if operation["action"] == "receive"
    }


def _receives(service: str) -> set[str]:
    return {
        re.sub(r"\{[a-z_]+\}", "*", channel.address)
        for channel in _docgen().channels(service)
        if channel.action == "receive"
    }


def test_committed_docs_match_what_the_code_generates() -> None:
    """Regenerating configuration.md and every AsyncAPI file changes nothing (run docs:gen)."""
    generated: dict[str, str] = _docgen().render_all()
    drifted = [
        path
        for path, text in generated.items()
        if not (DOCS / path).is_file() or (DOCS / path).read_text(encoding="utf-8") != text
    ]
    assert not drifted, f"run ./taskw docs:gen; drifted: {drifted}"
    committed = {f"asyncapi/{p.name}" for p in (DOCS / "asyncapi").iterdir()}
    assert committed == {p for p in generated if p.startswith("asyncapi/")}, "stale files"


def test_health_documents_exactly_the_subjects_its_app_reads() -> None:
    """The health app's verbs (FastStream subscribers) and pull consumers (the runtime's, one
    per topology spec, each handled by the operation the spec names) are exactly its declared
    receive channels."""
    settings = HealthSettings(environment="dev", database_url=UNUSED_DB)
    app = create_health_app(settings, configure_logs=False, serve_probe=False)
    consumers = health_handlers(app).consumers(settings)
    pulled = {subject for consumer in consumers for subject in consumer.spec.filter_subjects}
    assert _subscribed(app) | pulled == _receives("health")
    assert {c.spec.name for c in consumers} == {s.name for s in consumers_of("health")}
    assert all(c.handler.__name__ == c.spec.operation for c in consumers)


def test_sender_documents_every_subject_its_app_subscribes_to() -> None:
    """The sender's FastStream API subscribers appear among its declared receive channels."""
    app = create_sender_app(
        SenderSettings(environment="dev", database_url=UNUSED_DB), configure_logs=False
    )
    subscribed = _subscribed(app)
    assert subscribed
    assert subscribed <= _receives("sender")


def test_ingest_documents_a_channel_for_every_webhook_kind() -> None:
    """Each WebhookKind has its own published channel in ingest's document."""
    addresses = {c.address for c in _docgen().channels("ingest") if c.action == "send"}
    for kind in WebhookKind:
        assert f"zg.webhook.{kind.value}" in addresses


@pytest.mark.parametrize("service", ["ingest", "health", "sender"])
def test_every_reference_in_the_asyncapi_document_resolves(service: str) -> None:
    """All `$ref`s point at something inside the document; it is AsyncAPI 3.0."""
    doc = json.loads((DOCS / "asyncapi" / f"{service}.json").read_text(encoding="utf-8"))
    assert doc["asyncapi"] == "3.0.0"
    assert doc["operations"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(doc):
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert part in target, f"{service}: unresolved {ref}"
            target = target[part]


@pytest.mark.parametrize("service", ["ingest", "health", "sender"])
def test_html_rendering_lists_every_operation(service: str) -> None:
    """The HTML page names each operation of the document and is self-contained."""
    doc = json.loads((DOCS / "asyncapi" / f"{service}.json").read_text(encoding="utf-8"))
    page = (DOCS / "asyncapi" / f"{service}.html").read_text(encoding="utf-8")
    for operation in doc["operations"]:
        assert f"<code>{operation}</code>" in page
    assert "<script" not in page
    assert "http" not in page.split("<body>")[0]  # no external stylesheet or font


def test_configuration_reference_lists_every_setting_with_its_variable() -> None:
    """Each field of each settings class appears with its environment variable name."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for settings in _docgen().SETTINGS.values():
        prefix = settings.model_config["env_prefix"]
        for name in settings.model_fields:
            assert f"| `{name}` | `{(prefix + name).upper()}` |" in text


def test_runbook_explains_every_failure_code() -> None:
    """Every ErrorCode, degraded reason and webhook error code has a heading in the runbook."""
    text = (DOCS / "runbook.md").read_text(encoding="utf-8")
    codes = {*ErrorCode, *DegradedReason, *WebhookErrorCode}
    missing = sorted(code.value for code in codes if f"`{code.value}`" not in text)
    assert not missing, f"runbook lacks {missing}"
