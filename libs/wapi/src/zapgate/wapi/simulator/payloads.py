"""Webhook payloads shaped like W-API's (WAPI.md), as pure functions.

Flat camelCase JSON, `moment` in Unix seconds, `connectedPhone` only when the session knows
its phone. Usable without a server: other packages' tests build realistic bodies here.
"""

from __future__ import annotations

import secrets
import time
from typing import TypeAlias

from pydantic import JsonValue

Payload: TypeAlias = dict[str, JsonValue]

PHONE_REQUIRED_MESSAGE = "O número de telefone ou ID do grupo é obrigatório."


def now_seconds() -> int:
    return int(time.time())


def new_message_id() -> str:
    """An id shaped like WhatsApp's (`3EB0` + upper hex)."""
    return "3EB0" + secrets.token_hex(8).upper()


# --- message contents (the `msgContent` object) ---------------------------------------------


def text_content(text: str) -> Payload:
    return {"conversation": text}


def extended_text_content(
    text: str,
    *,
    quoted_message_id: str | None = None,
    quoted_text: str | None = None,
    stanza_key: str = "stanzaID",
) -> Payload:
    """Extended text; with `quoted_message_id`, a quoted reply (`stanzaID`, as in production)."""
    message: Payload = {"text": text}
    if quoted_message_id is not None:
        context: Payload = {stanza_key: quoted_message_id}
        if quoted_text is not None:
            context["quotedMessage"] = {"conversation": quoted_text}
        message["contextInfo"] = context
    return {"extendedTextMessage": message}


def image_content(
    *,
    url: str = "https://mmg.whatsapp.net/o1/v/t62.7118-24/encrypted.enc",
    caption: str | None = None,
    mimetype: str = "image/jpeg",
    file_length: int = 48213,
) -> Payload:
    image: Payload = {
        "url": url,
        "mimetype": mimetype,
        "fileLength": str(file_length),  # a string in production payloads
        "mediaKey": "bWVkaWEta2V5LXNpbXVsYWRh",
    }
    if caption is not None:
        image["caption"] = caption
    return {"imageMessage": image}


def media_content(  # noqa: PLR0913 - mirrors the provider's media fields
    kind: str,
    *,
    url: str,
    mimetype: str,
    caption: str | None = None,
    file_name: str | None = None,
    file_length: int = 10240,
) -> Payload:
    """`audioMessage` / `videoMessage` / `documentMessage` / `stickerMessage` by `kind`."""
    media: Payload = {"url": url, "mimetype": mimetype, "fileLength": str(file_length)}
    if caption is not None:
        media["caption"] = caption
    if file_name is not None:
        media["fileName"] = file_name
    return {f"{kind}Message": media}


def reaction_content(target_message_id: str, emoji: str, *, chat_id: str) -> Payload:
    return {
        "reactionMessage": {
            "key": {"id": target_message_id, "remoteJid": chat_id, "fromMe": True},
            "text": emoji,
        }
    }


def edit_content(target_message_id: str, new_text: str, *, chat_id: str) -> Payload:
    return {
        "protocolMessage": {
            "key": {"id": target_message_id, "remoteJid": chat_id, "fromMe": False},
            "type": "MESSAGE_EDIT",
            "editedMessage": {"conversation": new_text},
        }
    }


def content_for_send(operation: str, body: Payload) -> Payload:
    """The `msgContent` the provider echoes in `webhookDelivery` for an API send."""

    def text(key: str) -> str | None:
        value = body.get(key)
        return value if isinstance(value, str) else None

    caption = text("caption")
    if operation == "send-text":
        quoted = text("messageId")
        if quoted is None:
            return text_content(text("message") or "")
        return extended_text_content(text("message") or "", quoted_message_id=quoted)
    if operation == "send-image":
        return image_content(url=text("image") or "", caption=caption)
    kinds = {"send-audio": "audio", "send-video": "video", "send-document": "document"}
    mimetypes = {"audio": "audio/ogg; codecs=opus", "video": "video/mp4"}
    kind = kinds.get(operation, "unknown")
    return media_content(
        kind,
        url=text(kind) or "",
        mimetype=mimetypes.get(kind, f"application/{text('extension') or 'octet-stream'}"),
        caption=caption,
        file_name=text("fileName"),
    )


# --- whole webhook bodies --------------------------------------------------------------------


def received(  # noqa: PLR0913 - mirrors the provider's flat payload field by field
    *,
    instance_id: str,
    connected_phone: str | None,
    chat_id: str,
    sender_id: str,
    content: Payload,
    message_id: str | None = None,
    moment: int | None = None,
    push_name: str = "Cliente",
    sender_lid: str | None = None,
    connected_lid: str | None = None,
    from_me: bool = False,
    from_api: bool | None = None,
    event: str = "webhookReceived",
) -> Payload:
    """`webhookReceived` (or, with `event`, the same shape for `webhookDelivery`)."""
    body: Payload = {"event": event, "instanceId": instance_id}
    if connected_phone is not None:
        body["connectedPhone"] = connected_phone
    if connected_lid is not None:
        body["connectedLid"] = connected_lid
    sender: Payload = {"id": sender_id, "pushName": push_name}
    if sender_lid is not None:
        sender["senderLid"] = sender_lid
    body.update(
        {
            "isGroup": chat_id.endswith("@g.us"),
            "messageId": message_id or new_message_id(),
            "fromMe": from_me,
            "chat": {"id": chat_id},
            "sender": sender,
            "moment": now_seconds() if moment is None else moment,
            "msgContent": content,
        }
    )
    if from_api is not None:
        body["fromApi"] = from_api
    return body


def delivery(  # noqa: PLR0913 - mirrors the provider's flat payload field by field
    *,
    instance_id: str,
    connected_phone: str | None,
    chat_id: str,
    content: Payload,
    message_id: str,
    moment: int | None = None,
    from_api: bool = True,
    connected_lid: str | None = None,
) -> Payload:
    """`webhookDelivery`: a message sent *from* this number; not a delivery receipt."""
    return received(
        instance_id=instance_id,
        connected_phone=connected_phone,
        connected_lid=connected_lid,
        chat_id=chat_id,
        sender_id=connected_phone or instance_id,
        content=content,
        message_id=message_id,
        moment=moment,
        push_name="",
        from_me=True,
        from_api=from_api,
        event="webhookDelivery",
    )


def message_status(  # noqa: PLR0913 - mirrors the provider's flat payload
    *,
    instance_id: str,
    message_id: str,
    status: str,
    chat_id: str,
    moment: int | None = None,
    from_me: bool = True,
) -> Payload:
    """`webhookStatus`: SERVER / DELIVERY / READ / PLAYED / ERROR / PENDING of one message."""
    return {
        "event": "webhookStatus",
        "instanceId": instance_id,
        "messageId": message_id,
        "status": status,
        "chat": {"id": chat_id},
        "fromMe": from_me,
        "moment": now_seconds() if moment is None else moment,
    }


def connected(
    *, instance_id: str, connected_phone: str | None, moment: int | None = None
) -> Payload:
    """`webhookConnected` (grade B/C): `connectedPhone` only when the phone is known."""
    body: Payload = {
        "event": "webhookConnected",
        "instanceId": instance_id,
        "connected": True,
        "moment": now_seconds() if moment is None else moment,
    }
    if connected_phone is not None:
        body["connectedPhone"] = connected_phone
    return body


def disconnected(*, instance_id: str, moment: int | None = None) -> Payload:
    """`webhookDisconnected`: exactly these four fields, nothing else (grade A)."""
    return {
        "event": "webhookDisconnected",
        "instanceId": instance_id,
        "disconnected": True,
        "moment": now_seconds() if moment is None else moment,
    }


def presence(  # noqa: PLR0913 - mirrors the provider's flat payload field by field
    *,
    instance_id: str,
    connected_phone: str | None,
    connected_lid: str | None,
    chat_id: str,
    status: str,
    moment: int | None = None,
) -> Payload:
    """The event-less shape (likely chat presence): exactly these six keys (grade A)."""
    return {
        "instanceId": instance_id,
        "connectedPhone": connected_phone,
        "connectedLid": connected_lid,
        "chat": {"id": chat_id},
        "status": status,
        "moment": now_seconds() if moment is None else moment,
    }
