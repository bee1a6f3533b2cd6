"""Stack settings, the printed endpoints and the demo report, in memory."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from zapgate.localstack.cli import demo_main, report
from zapgate.localstack.demo import ScenarioResult
from zapgate.localstack.stack import (
    Endpoints,
    RealWapiConfig,
    StackConfig,
    StackError,
    read_webhook_secret,
)

pytestmark = pytest.mark.unit


def test_stack_settings_read_ports_and_iso_durations_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ZAPGATE_UP_* set ports and paces; defaults stay clear of the system's 4222 and 5432."""
    assert (StackConfig().nats_port, StackConfig().postgres_port) == (14222, 15432)
    monkeypatch.setenv("ZAPGATE_UP_NATS_PORT", "24222")
    monkeypatch.setenv("ZAPGATE_UP_TICK_INTERVAL", "PT2S")
    config = StackConfig()
    assert config.nats_port == 24222
    assert config.tick_interval == timedelta(seconds=2)


def test_real_wapi_is_configured_only_with_both_instance_id_and_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An instance id alone does not switch the stack away from the simulator."""
    monkeypatch.setenv("ZAPGATE_WAPI_INSTANCE_ID", "inst-1")
    assert not RealWapiConfig().configured
    monkeypatch.setenv("ZAPGATE_WAPI_TOKEN", "zz-real-token")
    real = RealWapiConfig()
    assert real.configured
    assert "zz-real-token" not in repr(real)


def test_the_webhook_secret_is_made_once_and_then_reused(tmp_path: Path) -> None:
    """The path secret is created on first start and read back, never regenerated."""
    config = StackConfig(data_dir=tmp_path)
    with pytest.raises(StackError, match="is the stack running"):
        read_webhook_secret(config)
    first = read_webhook_secret(config, create=True)
    assert len(first) >= 24
    assert read_webhook_secret(config) == first
    fixed = StackConfig(data_dir=tmp_path, webhook_secret=SecretStr("s3cr3t-value"))
    assert read_webhook_secret(fixed) == "s3cr3t-value"


def test_the_printed_endpoints_never_show_the_webhook_secret(tmp_path: Path) -> None:
    """describe() masks the path secret of ingest's local and public webhook URLs."""
    endpoints = Endpoints(
        nats_url="nats://127.0.0.1:14222",
        database_url="postgresql+psycopg://postgres@127.0.0.1:15432/zapgate",
        sim_url=None,
        wapi_base_url="https://api.w-api.app/v1",
        ingest_webhook_url="http://127.0.0.1:18080/webhooks/very-secret",
        public_webhook_url="https://tunnel.example/webhooks/very-secret",
        probes={"ingest probes": "http://127.0.0.1:18081"},
        instance_id="inst-1",
        logs_dir=tmp_path,
    )
    text = endpoints.describe()
    assert "very-secret" not in text
    assert "https://tunnel.example/webhooks/***" in text
    assert "(real)" in text


def test_the_report_counts_passes_and_fails_with_the_exit_code() -> None:
    """One failed scenario makes the exit code 1 and is marked FAIL with what was observed."""
    good = ScenarioResult("good", "works", ["it worked"], passed=True)
    bad = ScenarioResult("bad", "works", ["it broke"], passed=False)
    out = io.StringIO()
    assert report([good, bad], out) == 1
    text = out.getvalue()
    assert "[PASS] good" in text
    assert "[FAIL] bad\n  expected: works\n  observed: it broke" in text
    assert "1 of 2 scenarios passed" in text
    assert report([good], io.StringIO()) == 0


def test_the_demo_refuses_to_run_against_real_wapi(monkeypatch: pytest.MonkeyPatch) -> None:
    """With real W-API credentials set, zapgate-demo exits 2 without touching anything."""
    monkeypatch.setenv("ZAPGATE_WAPI_INSTANCE_ID", "inst-1")
    monkeypatch.setenv("ZAPGATE_WAPI_TOKEN", "tok")
    out = io.StringIO()
    assert demo_main([], out=out) == 2
    assert "simulator" in out.getvalue()
