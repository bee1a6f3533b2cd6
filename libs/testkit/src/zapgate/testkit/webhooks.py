"""One example body for every webhook shape in shared/WAPI.md.

Used by the tests and the benchmark; each function returns a fresh dict, so callers may change
it. Field names and nesting follow the payloads captured in production (grade A) where known.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

INSTANCE = "ABC123-DEF456-GHI789"
PHONE = "5511999990000"
LID = "123456789012345@lid"
MOMENT = 1_760_000_000


def _message(
    event: str, message_id: str, content: dict[str, Any], **extra: object
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": event,
        "instanceId": INSTANCE,
        "connectedPhone": PHONE,
        "connectedLid": LID,
        "isGroup": False,
        "messageId": message_id,
        "fromMe": event == "webhookDelivery",
        "chat": {"id": "5511988887777", "profilePicture": ""},
        "sender": {"id": "5511988887777", "pushName": "Maria", "senderLid": "98765@lid"},
        "moment": MOMENT,
        "msgContent": content,
    }
    body.update(extra)
    return body


def received_text(message_id: str = "3EB0TEXT0001") -> dict[str, Any]:
    return _message("webhookReceived", message_id, {"conversation": "Olá!"})


def received_extended_text(message_id: str = "3EB0EXT0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {"extendedTextMessage": {"text": "veja https://example.com", "previewType": 0}},
    )


def received_image(message_id: str = "3EB0IMG0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {
            "imageMessage": {
                "url": "https://mmg.whatsapp.net/v/t62/abc.enc",
                "mimetype": "image/jpeg",
                "caption": "foto",
                "fileLength": "52341",
                "mediaKey": "bWVkaWFrZXk=",
                "height": 1280,
                "width": 720,
            }
        },
    )


def received_audio(message_id: str = "3EB0AUD0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {
            "audioMessage": {
                "url": "https://mmg.whatsapp.net/v/t62/aud.enc",
                "mimetype": "audio/ogg; codecs=opus",
                "fileLength": "8123",
                "seconds": 7,
                "ptt": True,
            }
        },
    )


def received_video(message_id: str = "3EB0VID0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {
            "videoMessage": {
                "url": "https://mmg.whatsapp.net/v/t62/vid.enc",
                "mimetype": "video/mp4",
                "fileLength": "1048576",
                "seconds": 12,
                "caption": "vídeo",
            }
        },
    )


def received_document(message_id: str = "3EB0DOC0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {
            "documentMessage": {
                "url": "https://mmg.whatsapp.net/v/t62/doc.enc",
                "mimetype": "application/pdf",
                "fileName": "boleto.pdf",
                "fileLength": "20480",
            }
        },
    )


def received_sticker(message_id: str = "3EB0STK0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {"stickerMessage": {"url": "https://mmg.whatsapp.net/s.enc", "mimetype": "image/webp"}},
    )


def received_quoted_reply(
    message_id: str = "3EB0QUO0001", *, quoted: str = "3EB0ORIGINAL", spelling: str = "stanzaID"
) -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {
            "extendedTextMessage": {
                "text": "respondendo",
                "contextInfo": {spelling: quoted, "participant": "5511988887777@s.whatsapp.net"},
            }
        },
    )


def received_button_reply(message_id: str = "3EB0BTN0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {
            "buttonsResponseMessage": {
                "selectedButtonId": "confirm",
                "selectedDisplayText": "Confirmar",
                "contextInfo": {"stanzaId": "3EB0BUTTONS"},
            }
        },
    )


def received_in_group(message_id: str = "3EB0GRP0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {"conversation": "oi grupo"},
        isGroup=True,
        chat={"id": "120363025246125486@g.us"},
    )


def received_from_lid(message_id: str = "3EB0LID0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {"conversation": "oi"},
        chat={"id": "98765432101234@lid"},
        sender={"id": "98765432101234@lid", "pushName": "Ana", "senderLid": "98765432101234@lid"},
    )


def received_story(message_id: str = "3EB0STO0001") -> dict[str, Any]:
    return _message(
        "webhookReceived", message_id, {"conversation": "story"}, chat={"id": "status@broadcast"}
    )


def received_newsletter(message_id: str = "3EB0NEW0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {"conversation": "canal"},
        chat={"id": "120363111111111111@newsletter"},
    )


def edited(message_id: str = "3EB0EDT0001", *, target: str = "3EB0TEXT0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {
            "protocolMessage": {
                "key": {"id": target, "fromMe": False},
                "type": "MESSAGE_EDIT",
                "editedMessage": {"conversation": "Olá, corrigido"},
            }
        },
    )


def deleted(message_id: str = "3EB0DEL0001", *, target: str = "3EB0TEXT0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {"protocolMessage": {"key": {"id": target}, "type": "REVOKE"}},
    )


def reaction(message_id: str = "3EB0REA0001", *, target: str = "3EB0TEXT0001") -> dict[str, Any]:
    return _message(
        "webhookReceived",
        message_id,
        {"reactionMessage": {"key": {"id": target}, "text": "👍", "senderTimestampMs": 1}},
    )


def delivery(message_id: str = "3EB0SNT0001", *, from_api: bool = True) -> dict[str, Any]:
    return _message("webhookDelivery", message_id, {"conversation": "enviado"}, fromApi=from_api)


def status(message_id: str = "3EB0SNT0001", word: str = "DELIVERY") -> dict[str, Any]:
    return {
        "event": "webhookStatus",
        "instanceId": INSTANCE,
        "connectedPhone": PHONE,
        "messageId": message_id,
        "status": word,
        "chat": {"id": "98765432101234@lid"},
        "fromMe": True,
        "moment": MOMENT,
    }


def connected(*, phone: str | None = PHONE) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": "webhookConnected",
        "instanceId": INSTANCE,
        "connected": True,
        "moment": MOMENT,
    }
    if phone is not None:
        body["connectedPhone"] = phone
    return body


def disconnected() -> dict[str, Any]:
    return {
        "event": "webhookDisconnected",
        "instanceId": INSTANCE,
        "disconnected": True,
        "moment": MOMENT,
    }


def presence(word: str = "COMPOSING") -> dict[str, Any]:
    return {
        "instanceId": INSTANCE,
        "connectedPhone": PHONE,
        "connectedLid": LID,
        "chat": {"id": "5511988887777"},
        "status": word,
        "moment": MOMENT,
    }


def unknown_event() -> dict[str, Any]:
    return {"event": "webhookSomethingNew", "instanceId": INSTANCE, "foo": 1, "moment": MOMENT}


def without_instance() -> dict[str, Any]:
    return {"event": "webhookReceived", "messageId": "X", "moment": MOMENT}


def every_shape() -> dict[str, dict[str, Any]]:
    """Name -> body, one per shape, each with a distinct dedupe key."""
    return {
        "received_text": received_text(),
        "received_extended_text": received_extended_text(),
        "received_image": received_image(),
        "received_audio": received_audio(),
        "received_video": received_video(),
        "received_document": received_document(),
        "received_sticker": received_sticker(),
        "received_quoted_stanzaID": received_quoted_reply("3EB0QUO0001"),
        "received_quoted_stanzaId": received_quoted_reply("3EB0QUO0002", spelling="stanzaId"),
        "received_button_reply": received_button_reply(),
        "received_in_group": received_in_group(),
        "received_from_lid": received_from_lid(),
        "received_story": received_story(),
        "received_newsletter": received_newsletter(),
        "edited": edited(),
        "deleted": deleted(),
        "reaction": reaction(),
        "delivery_from_api": delivery("3EB0SNT0001", from_api=True),
        "delivery_from_phone": delivery("3EB0SNT0002", from_api=False),
        "status_server": status(word="SERVER"),
        "status_delivery": status(word="DELIVERY"),
        "status_read": status(word="READ"),
        "status_played": status(word="PLAYED"),
        "status_error": status(word="ERROR"),
        "status_unknown": status(word="WEIRD_NEW"),
        "connected_with_phone": connected(),
        "connected_without_phone": {**connected(phone=None), "moment": MOMENT + 1},
        "disconnected": disconnected(),
        "presence": presence(),
        "unknown_event": unknown_event(),
        "without_instance": without_instance(),
    }


# --- failing inputs from public bug reports (shared/cases, ingest issue a-i) ----------------

_CASES = Path(__file__).parent / "cases"
MEDIA_BASE64_CHARS = 1_536_000


def case(name: str, now: int = MOMENT) -> bytes:
    """The body of `cases/<name>.json` with `{NOW}` and `{NOW_MS}` filled in (exact bytes)."""
    text = (_CASES / f"{name}.json").read_text(encoding="utf-8")
    return text.replace("{NOW_MS}", str(now * 1000)).replace("{NOW}", str(now)).encode()


def media_base64_body(now: int = MOMENT, *, base64_chars: int = MEDIA_BASE64_CHARS) -> bytes:
    """The 1.5 MB received image with inline base64 media and a caption (case d), built here
    rather than committed: the same fields, `base64_chars` of base64 media."""
    noise = random.Random(7).randbytes(base64_chars * 3 // 4)  # noqa: S311 - test data, not a secret
    media = base64.b64encode(noise).decode()
    body = {
        "event": "webhookReceived",
        "instanceId": "demo",
        "connectedPhone": "5511900000001",
        "isGroup": False,
        "messageId": "3EB0BR03000000000000A3",
        "fromMe": False,
        "chat": {"id": "5511900000003"},
        "sender": {"id": "5511900000003", "pushName": "Cliente Foto"},
        "moment": now,
        "msgContent": {
            "imageMessage": {
                "url": "https://mmg.whatsapp.net/v/t62.7118-24/fake.enc",
                "mimetype": "image/jpeg",
                "caption": "comprovante do pagamento",
                "fileLength": "1152000",
                "mediaKey": "ZmFrZS1tZWRpYS1rZXk=",
                "base64": media,
            }
        },
    }
    return json.dumps(body).encode()
