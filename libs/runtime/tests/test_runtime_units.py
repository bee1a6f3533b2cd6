"""Pure parts of zapgate.runtime: settings, clock, redaction, durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from zapgate.runtime.clock import ManualClock, SystemClock
from zapgate.runtime.connection import InvalidPublishError, check_publish
from zapgate.runtime.logging import REDACTED, redact, redact_processor
from zapgate.runtime.nats_auth import new_user_seed
from zapgate.runtime.settings import Duration, PositiveDuration, ServiceSettings, iso_duration
from zapgate.runtime.streams import ConsumerSpec, StreamSpec, go_duration
from zapgate.runtime.topology import (
    ALL_CONSUMERS,
    SEND_PARTITIONS,
    SENDER_COMMAND_PARTITIONS,
    queue_of,
)

pytestmark = pytest.mark.unit

STRONG = "Xq8-jT2v9LmP4wRz7KcN1bYh6DsF3gUe"  # 32 random characters: a prod-grade secret


class _IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZAPGATE_TESTSVC_")


@pytest.mark.parametrize("secret", ["changeme", "CHANGE_ME", "change-me", "dev-secret-123"])
def test_placeholder_secrets_are_refused_outside_dev(secret: str) -> None:
    """In prod a placeholder database URL fails validation with a coded message."""
    with pytest.raises(ValidationError, match="SECRET_PLACEHOLDER"):
        _IngestSettings(environment="prod", database_url=secret)  # type: ignore[arg-type]


def test_placeholder_secrets_are_accepted_in_dev() -> None:
    """Dev keeps working with the placeholder a developer copied from the example env."""
    settings = _IngestSettings(environment="dev", database_url="changeme")  # type: ignore[arg-type]
    assert settings.database_url.get_secret_value() == "changeme"


def test_service_settings_read_their_own_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """A subclass reads `ZAPGATE_<SVC>_*` variables."""
    monkeypatch.setenv("ZAPGATE_TESTSVC_DATABASE_URL", f"postgresql://u:{STRONG}@db/x")
    monkeypatch.setenv("ZAPGATE_TESTSVC_ENVIRONMENT", "prod")
    monkeypatch.setenv("ZAPGATE_TESTSVC_NATS_SEED", new_user_seed())
    monkeypatch.setenv("ZAPGATE_TESTSVC_PROBE_PORT", "9100")
    settings = _IngestSettings()
    assert settings.environment == "prod"
    assert settings.probe_port == 9100
    assert settings.log_json is None


def test_manual_clock_moves_only_when_advanced() -> None:
    """advance() moves both wall and monotonic time; nothing else does."""
    clock = ManualClock(datetime(2025, 5, 1, tzinfo=UTC))
    before = clock.now()
    clock.advance(timedelta(minutes=5))
    assert clock.now() - before == timedelta(minutes=5)
    assert clock.monotonic() == 300.0
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_system_clock_gives_aware_utc() -> None:
    """now() is timezone-aware UTC."""
    assert SystemClock().now().tzinfo is UTC


def test_redact_masks_sensitive_keys_at_any_depth() -> None:
    """Tokens, secrets, passwords and authorization headers never reach a log line."""
    event = {
        "event": "call",
        "Authorization": "Bearer abc",
        "body": {"instance_token": "t", "items": [{"password": "p", "ok": 1}]},
        "user": "ana",
    }
    out = redact_processor(None, "info", dict(event))
    assert out["Authorization"] == REDACTED
    assert out["body"] == {"instance_token": REDACTED, "items": [{"password": REDACTED, "ok": 1}]}
    assert out["user"] == "ana"
    assert redact("plain") == "plain"


@pytest.mark.parametrize(
    ("every", "expected"),
    [
        (timedelta(seconds=1), "1s"),
        (timedelta(minutes=5), "300s"),
        (timedelta(seconds=1.5), "1500ms"),
    ],
)
def test_go_duration_formats_what_every_accepts(every: timedelta, expected: str) -> None:
    """Intervals become Go ParseDuration strings."""
    assert go_duration(every) == expected


def test_stream_spec_api_body_uses_nanoseconds() -> None:
    """Durations go to the JetStream API in nanoseconds, schedules only when asked for."""
    body = StreamSpec("S", ("s.>",), max_age=timedelta(hours=1)).to_api()
    assert body["max_age"] == 3_600_000_000_000
    assert body["duplicate_window"] == 120_000_000_000
    assert "allow_msg_schedules" not in body


def test_a_placeholder_database_password_is_refused_outside_dev() -> None:
    """`postgresql://u:changeme@db/x` is a placeholder even though the URL as a whole is not."""
    url = "postgresql+psycopg://zapgate:changeme-postgres-password@db:5432/zapgate"
    with pytest.raises(ValidationError, match="database_url password"):
        ServiceSettings.model_validate({"environment": "prod", "database_url": url})
    assert ServiceSettings.model_validate({"environment": "dev", "database_url": url})
    real = f"postgresql+psycopg://zapgate:{STRONG}@db:5432/zapgate"
    seed = new_user_seed()
    assert ServiceSettings.model_validate(
        {"environment": "prod", "database_url": real, "nats_seed": seed}
    )


@pytest.mark.parametrize(
    ("subject", "code"),
    [
        ("", "subject_empty"),
        ("zg." + "a" * 3841, "subject_too_long"),
        ("zg.a b", "subject_invalid_byte"),
        ("zg.a\tb", "subject_invalid_byte"),
        ("zg.a\r\nPUB x 1", "subject_invalid_byte"),
        ("zg.a\x00", "subject_invalid_byte"),
        ("zg.a\x7f", "subject_invalid_byte"),
        ("zg..a", "subject_empty_token"),
        (".zg", "subject_empty_token"),
        ("zg.", "subject_empty_token"),
        ("zg.*", "subject_wildcard"),
        ("zg.>", "subject_wildcard"),
    ],
)
def test_subjects_the_server_would_close_the_connection_for_are_refused(
    subject: str, code: str
) -> None:
    """Each kind of bad publish subject is refused with its stable code before the socket."""
    with pytest.raises(InvalidPublishError) as caught:
        check_publish(subject)
    assert caught.value.code == code


def test_a_subject_up_to_the_limit_and_with_utf8_passes_and_the_limit_counts_bytes() -> None:
    """The limit is in UTF-8 bytes of the control line, not characters."""
    check_publish("zg." + "a" * 3837)
    check_publish("zg.instância.ação")
    with pytest.raises(InvalidPublishError):
        check_publish("zg." + "ç" * 1920)
    with pytest.raises(InvalidPublishError):
        check_publish("zg.ab", max_control_line=260)


@pytest.mark.parametrize("headers", [{"X": "a\nb"}, {"X\r": "a"}, {"": "a"}])
def test_headers_that_break_the_framing_are_refused(headers: dict[str, str]) -> None:
    """CR or LF in a header name or value, or an empty name, is refused."""
    with pytest.raises(InvalidPublishError, match="header_invalid"):
        check_publish("zg.a", headers)


def test_consumer_spec_names_its_durable_and_dead_letter_subject_and_backs_off() -> None:
    """Durable `<prefix>-<name>`, dead letters on `zg.deadletter.<service>.<name>`, nak delays
    doubling per failure up to the cap."""
    spec = ConsumerSpec(
        service="sender",
        name="commands",
        stream="S",
        filter_subjects=("zg.send.command.*",),
        retry_delay=timedelta(seconds=1),
        max_retry_delay=timedelta(seconds=5),
    )
    assert spec.durable == "sender-commands"
    assert spec.with_prefix("t1").durable == "t1-commands"
    assert spec.dead_letter_subject == "zg.deadletter.sender.commands"
    assert [spec.retry_delay_after(n).total_seconds() for n in (1, 2, 3, 4, 99)] == [
        1,
        2,
        4,
        5,
        5,
    ]
    config = spec.config()
    assert (config.filter_subject, config.filter_subjects, config.max_deliver) == (
        "zg.send.command.*",
        None,
        -1,
    )
    several = ConsumerSpec(service="a", name="b", stream="S", filter_subjects=("x.a", "x.b"))
    assert several.config().filter_subjects == ["x.a", "x.b"]
    for bad in (
        {"filter_subjects": ()},
        {"max_failures": 0},
        {"name": "a.b"},
        {"heartbeat": timedelta(0)},
        {"heartbeat": timedelta(seconds=30)},  # the default ack_wait: would never beat in time
    ):
        options: dict[str, object] = {
            "service": "a",
            "name": "b",
            "stream": "S",
            "filter_subjects": ("x",),
            **bad,
        }
        with pytest.raises(ValueError, match=r"\w"):
            ConsumerSpec(**options)  # type: ignore[arg-type]


def test_every_declared_heartbeat_is_below_its_ack_wait_and_each_service_has_one_api_queue() -> (
    None
):
    """The topology's heartbeats beat well inside their ack waits; each service answering
    request-reply verbs does so in one queue group (the one its app subscribes with)."""
    beating = [spec for spec in ALL_CONSUMERS if spec.heartbeat is not None]
    partitions = {spec.durable for spec in SENDER_COMMAND_PARTITIONS}
    assert len(partitions) == SEND_PARTITIONS
    assert {spec.durable for spec in beating} >= {*partitions, "health-tick"}
    for spec in beating:
        assert spec.heartbeat is not None
        assert spec.heartbeat <= spec.ack_wait / 2, spec.durable
    assert (queue_of("health"), queue_of("sender"), queue_of("ingest")) == (
        "health-api",
        "sender-api",
        "ingest-api",
    )
    with pytest.raises(ValueError, match="queue groups"):
        queue_of("console")


class _DurationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZAPGATE_DURTEST_")
    environment: Literal["dev", "test", "prod"] = "dev"
    ack_wait: PositiveDuration = timedelta(seconds=30)
    grace: Duration = timedelta(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT30S", timedelta(seconds=30)),
        ("pt5m", timedelta(minutes=5)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT1.5S", timedelta(seconds=1.5)),
        ("P2W", timedelta(weeks=2)),
    ],
)
def test_durations_in_the_environment_are_iso_8601(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: timedelta
) -> None:
    """An ISO 8601 duration in the env becomes a timedelta, and renders back the same way."""
    monkeypatch.setenv("ZAPGATE_DURTEST_ACK_WAIT", text)
    settings = _DurationSettings(database_url="postgresql://u@h/db")  # type: ignore[arg-type]
    assert settings.ack_wait == expected
    assert (
        _DurationSettings.model_validate(
            {
                "database_url": "postgresql://u@h/db",
                "ack_wait": iso_duration(expected),
            }
        ).ack_wait
        == expected
    )


@pytest.mark.parametrize(
    "text", ["300", "00:05:00", "5m", "P", "PT", "P1Y", "P1M", "PT0S", "-PT1S"]
)
def test_other_duration_forms_and_non_positive_ones_are_refused(text: str) -> None:
    """Seconds as a bare number, clock forms, units ISO does not have, years/months (variable
    length) and zero or negative values for a positive duration are refused clearly."""
    with pytest.raises(ValidationError, match=r"ISO 8601|greater than"):
        _DurationSettings(database_url="postgresql://u@h/db", ack_wait=text)  # type: ignore[arg-type]


def test_iso_duration_renders_what_the_environment_takes() -> None:
    """timedelta -> ISO 8601 for docs and generated configuration."""
    assert [
        iso_duration(timedelta(minutes=5)),
        iso_duration(timedelta(seconds=1.5)),
        iso_duration(timedelta(days=1, hours=2)),
    ] == ["PT5M", "PT1.5S", "P1DT2H"]
