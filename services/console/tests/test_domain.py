"""The pure decisions: which state and words an operator sees for an instance's facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from zapgate.console import domain
from zapgate.console.domain import InstanceFacts, Shown, Viewpoint
from zapgate.contracts.health import InstanceState

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
VIEW = Viewpoint(now=NOW, zone=ZoneInfo("America/Sao_Paulo"))


def facts(**changes: object) -> InstanceFacts:
    values: dict[str, object] = {
        "instance_id": "demo",
        "display_name": "Demo",
        "managed": True,
        "paused": False,
        "state": InstanceState.CONNECTED,
    }
    values.update(changes)
    return InstanceFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "shown", "label"),
    [
        ({}, Shown.CONNECTED, "Conectado"),
        (
            {"state": InstanceState.DEGRADED, "reason": "SESSION_INCOMPLETE"},
            Shown.INCOMPLETE,
            "Sessão incompleta",
        ),
        (
            {"state": InstanceState.DEGRADED, "reason": "DELIVERY_STALLED"},
            Shown.DEGRADED,
            "Entregas paradas",
        ),
        (
            {"state": InstanceState.DEGRADED, "reason": "TIMEOUT_OR_GATEWAY"},
            Shown.DEGRADED,
            "Provedor sem resposta",
        ),
        ({"state": InstanceState.DEGRADED, "reason": "SOMETHING_NEW"}, Shown.DEGRADED, "Degradado"),
        ({"state": InstanceState.DISCONNECTED}, Shown.DISCONNECTED, "Desconectado"),
        ({"state": InstanceState.UNKNOWN}, Shown.UNKNOWN, "Não verificado"),
        ({"paused": True, "state": InstanceState.DISCONNECTED}, Shown.PAUSED, "Pausado"),
        (
            {"state": InstanceState.DISCONNECTED, "outage_started_at": NOW, "flaps": 3},
            Shown.UNSTABLE,
            "Instável",
        ),
    ],
)
def test_each_state_has_its_pt_br_label(
    changes: dict[str, object], shown: Shown, label: str
) -> None:
    """Every state (and degraded reason) reads as the words the issue names."""
    card = domain.card(facts(**changes), VIEW)
    assert card.shown is shown
    assert card.label == label
    assert card.reason, "every state explains itself in words"


def test_an_unknown_degraded_reason_is_still_shown_in_words() -> None:
    """A reason health adds later is named, never dropped."""
    card = domain.card(facts(state=InstanceState.DEGRADED, reason="NEW_REASON"), VIEW)
    assert "NEW_REASON" in card.reason


def test_times_are_shown_in_sao_paulo_relative_and_absolute() -> None:
    """22:00 UTC is 19:00 in São Paulo; five minutes ago reads "há 5 minutos"."""
    card = domain.card(facts(since=NOW - timedelta(minutes=5)), VIEW)
    assert card.since.relative == "há 5 minutos"
    assert card.since.absolute == "30/11/2026 18:55:00"


def test_cooldown_left_counts_down_to_the_time_health_gives() -> None:
    """Health says no restart before 20 minutes from now: 20 minutes left, no restart now."""
    card = domain.card(
        facts(
            state=InstanceState.DISCONNECTED,
            last_restart_attempt_at=NOW - timedelta(minutes=10),
            restart_cooldown_until=NOW + timedelta(minutes=20),
            outage_started_at=NOW - timedelta(minutes=12),
        ),
        VIEW,
    )
    assert card.cooldown_left == "20 minutos"
    assert not card.can_restart_now
    assert card.outage_for == "12 minutos"


def test_the_cooldown_is_over_once_its_time_has_passed() -> None:
    """A cooldown that ended, or none at all, leaves nothing to wait for."""
    assert domain.cooldown_left(NOW - timedelta(minutes=30), NOW) == timedelta(0)
    assert domain.cooldown_left(None, NOW) == timedelta(0)
    assert domain.cooldown_left(NOW + timedelta(seconds=90), NOW) == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("conectado", Shown.CONNECTED), ("incompleta", Shown.INCOMPLETE), ("", None), ("x", None)],
)
def test_the_state_filter_accepts_only_known_keys(value: str, expected: Shown | None) -> None:
    """An unknown filter shows everything rather than failing."""
    assert domain.parse_filter(value) is expected
