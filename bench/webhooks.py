"""Realistic W-API webhook bodies for the load generator, from the simulator's payload builders."""

from __future__ import annotations

import json
import random

from zapgate.wapi.simulator import payloads

INSTANCES = 50


def webhook_bodies(count: int, rng: random.Random) -> list[bytes]:
    """A realistic mix: received texts and images, delivery receipts, sent-from-phone echoes."""
    bodies: list[bytes] = []
    for _ in range(count):
        n = rng.randrange(INSTANCES)
        instance_id, phone = f"BENCH{n:03d}", f"5511900{n:06d}"
        chat = f"552198{rng.randrange(10**7):07d}@s.whatsapp.net"
        pick = rng.random()
        body: payloads.Payload
        if pick < 0.55:  # noqa: PLR2004 - the share of each kind in the mix
            text = payloads.text_content("Olá, tudo bem? Gostaria de saber o status do pedido.")
            body = payloads.received(
                instance_id=instance_id,
                connected_phone=phone,
                chat_id=chat,
                sender_id=chat.split("@", maxsplit=1)[0],
                content=text,
            )
        elif pick < 0.65:  # noqa: PLR2004
            body = payloads.received(
                instance_id=instance_id,
                connected_phone=phone,
                chat_id=chat,
                sender_id=chat.split("@", maxsplit=1)[0],
                content=payloads.image_content(caption="comprovante"),
            )
        elif pick < 0.9:  # noqa: PLR2004
            body = payloads.message_status(
                instance_id=instance_id,
                message_id=payloads.new_message_id(),
                status=rng.choice(["DELIVERY", "READ"]),
                chat_id=chat,
            )
        else:
            body = payloads.delivery(
                instance_id=instance_id,
                connected_phone=phone,
                chat_id=chat,
                content=payloads.text_content("Seu pedido saiu para entrega."),
                message_id=payloads.new_message_id(),
            )
        bodies.append(json.dumps(body).encode())
    return bodies
