"""The shared stream topology is accepted by a real nats-server, on every start."""

from __future__ import annotations

import nats
import pytest

from zapgate.contracts import subjects
from zapgate.runtime.streams import ensure_consumer, ensure_streams
from zapgate.runtime.topology import ALL_CONSUMERS, ALL_STREAMS

pytestmark = pytest.mark.real


async def test_every_stream_is_created_and_ensuring_again_changes_nothing(nats_url: str) -> None:
    """Services may start in any order: ensuring the topology twice is harmless."""
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc, ALL_STREAMS)
        await ensure_streams(nc, ALL_STREAMS)
        js = nc.jetstream()
        names = {info.config.name for info in await js.streams_info()}
        assert names == {spec.name for spec in ALL_STREAMS}
        for subject, stream in [
            (subjects.webhook_subject("message_status"), subjects.STREAM_WEBHOOKS),
            (subjects.state_changed_subject("I-1"), subjects.STREAM_HEALTH),
            (subjects.HEALTH_TICK, subjects.STREAM_TICKS),
            (subjects.send_command_subject("I-1"), subjects.STREAM_SEND),
            (subjects.send_outcome_subject("c-1"), subjects.STREAM_SEND),
        ]:
            ack = await js.publish(subject, b"{}", stream=stream)
            assert ack.stream == stream
    finally:
        await nc.close()


async def test_every_consumer_spec_is_accepted_and_ensuring_again_changes_nothing(
    nats_url: str,
) -> None:
    """Each declared durable is created as declared (explicit acks, unlimited MaxDeliver)."""
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc, ALL_STREAMS)
        durable = [spec for spec in ALL_CONSUMERS if not spec.ordered]
        for spec in durable:
            await ensure_consumer(nc, spec)
            await ensure_consumer(nc, spec)
        js = nc.jetstream()
        for spec in durable:
            info = await js.consumer_info(spec.stream, spec.durable)
            assert info.config.filter_subject == spec.filter_subjects[0]
            assert info.config.ack_wait == spec.ack_wait.total_seconds()
            assert info.config.max_deliver == -1
        durables = [spec.durable for spec in durable]
        assert len(set(durables)) == len(durables)
        assert {spec.dead_letter_subject for spec in ALL_CONSUMERS} == {
            f"zg.deadletter.{spec.service}.{spec.name}" for spec in ALL_CONSUMERS
        }
    finally:
        await nc.close()
