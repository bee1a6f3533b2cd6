"""Reading `msgContent`: unwrap wrappers, tell changes from new messages, type the content.

Pure and tolerant: what it does not know keeps its type name and text. Shapes follow the
WhatsApp protobuf names that W-API passes through (WAPI.md; Baileys' `WAProto` names the same
fields): wrappers are `{"<x>Message": {"message": {...}}}`, a vote points at its poll through
`pollCreationMessageKey.id`, an edit or delete at its target through `protocolMessage.key.id`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from zapgate.contracts.bounds import MAX_JSON_INT, MIN_JSON_INT, bounded_optional_id
from zapgate.contracts.webhooks import (
    ContactCard,
    Location,
    Media,
    MessageChangeKind,
    MessageContent,
    Poll,
    PollOption,
    PollVote,
)

Payload: TypeAlias = dict[str, Any]

_META_KEYS: Final = frozenset({"messageContextInfo", "contextInfo"})
_MAX_WRAPPERS: Final = 8
_PROTOCOL_EDIT: Final = frozenset({"MESSAGE_EDIT", "14"})
_PROTOCOL_REVOKE: Final = frozenset({"REVOKE", "0"})
_KEY_DISTRIBUTION: Final = "senderKeyDistributionMessage"
_STUB_CIPHERTEXT: Final = frozenset({"2", "CIPHERTEXT"})
_MEDIA_KEYS: Final = (
    "imageMessage",
    "videoMessage",
    "audioMessage",
    "documentMessage",
    "stickerMessage",
    "ptvMessage",
)
_LOCATION_KEYS: Final = ("locationMessage", "liveLocationMessage")
_INT_DIGITS: Final = 19  # int64
_TEXT_KEYS: Final = ("text", "caption", "conversation", "title", "description", "name")


@dataclass(frozen=True, slots=True)
class Change:
    """A webhook that changes an existing message instead of bringing a new one."""

    kind: MessageChangeKind
    target_message_id: str | None
    new_text: str | None = None
    reaction: str | None = None
    poll_vote: PollVote | None = None
    content: MessageContent | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """`msgContent` read: the typed content, or the change it makes."""

    content: MessageContent
    change: Change | None


def read_message(msg_content: Payload, *, stub_type: object = None) -> Reading:
    """Unwrap, then read a change (edit, delete, reaction, poll vote) or a typed content."""
    inner, wrappers = unwrap(msg_content)
    content = typed_content(inner, wrappers, stub_type=stub_type)
    return Reading(content, _change(inner))


def content_fingerprint(msg_content: Payload) -> str:
    """Hash of the content's canonical JSON (keys sorted, no whitespace): the same message
    re-serialised by the provider has the same fingerprint; different content does not."""
    canonical = json.dumps(msg_content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def unwrap(content: Payload) -> tuple[Payload, list[str]]:
    """The innermost message and the wrappers around it, outermost first."""
    wrappers: list[str] = []
    for _ in range(_MAX_WRAPPERS):
        keys = [key for key in content if key not in _META_KEYS]
        if len(keys) != 1 or "Message" not in keys[0]:
            break
        message = as_dict(as_dict(content[keys[0]]).get("message"))
        if not message:
            break
        wrappers.append(keys[0])
        content = message
    return content, wrappers


def typed_content(
    content: Payload, wrappers: list[str] | None = None, *, stub_type: object = None
) -> MessageContent:
    """The typed content of an unwrapped message."""
    common: dict[str, Any] = {"wrappers": wrappers or []}
    view_once = any(wrapper.startswith("viewOnce") for wrapper in common["wrappers"])
    if "conversation" in content:
        return MessageContent(type="conversation", text=text(content["conversation"]), **common)
    extended = as_dict(content.get("extendedTextMessage"))
    if extended:
        return MessageContent(
            type="extendedTextMessage",
            text=text(extended.get("text")),
            quoted_message_id=_quoted(extended),
            **common,
        )
    for key in _MEDIA_KEYS:
        media = as_dict(content.get(key))
        if media:
            return MessageContent(
                type=key,
                caption=text(media.get("caption")),
                media=_media(media),
                quoted_message_id=_quoted(media),
                view_once=view_once or media.get("viewOnce") is True,
                **common,
            )
    for reader in (_location, _contacts, _poll, _reply):
        found = reader(content, common)
        if found is not None:
            return found
    return _other(content, common, stub_type=stub_type)


def _media(media: Payload) -> Media:
    return Media(
        mimetype=text(media.get("mimetype")),
        url=text(media.get("url")),
        file_length=integer(media.get("fileLength")),
        file_name=text(media.get("fileName")),
        seconds=integer(media.get("seconds")),
        media_key=text(media.get("mediaKey")),
    )


def _location(content: Payload, common: dict[str, Any]) -> MessageContent | None:
    for key in _LOCATION_KEYS:
        place = as_dict(content.get(key))
        if place:
            location = Location(
                latitude=number(place.get("degreesLatitude")),
                longitude=number(place.get("degreesLongitude")),
                name=text(place.get("name")),
                address=text(place.get("address")),
                url=text(place.get("url")),
                live=key == "liveLocationMessage",
            )
            caption = text(place.get("caption")) or text(place.get("comment"))
            return MessageContent(
                type=key,
                text=caption,
                location=location,
                quoted_message_id=_quoted(place),
                **common,
            )
    return None


def _contacts(content: Payload, common: dict[str, Any]) -> MessageContent | None:
    single = as_dict(content.get("contactMessage"))
    if single:
        card = _card(single)
        return MessageContent(
            type="contactMessage", text=card.display_name, contacts=[card], **common
        )
    many = as_dict(content.get("contactsArrayMessage"))
    if many:
        cards = [_card(as_dict(item)) for item in as_list(many.get("contacts"))]
        return MessageContent(
            type="contactsArrayMessage",
            text=text(many.get("displayName")),
            contacts=cards,
            **common,
        )
    return None


def _card(contact: Payload) -> ContactCard:
    return ContactCard(
        display_name=text(contact.get("displayName")), vcard=text(contact.get("vcard"))
    )


def _poll(content: Payload, common: dict[str, Any]) -> MessageContent | None:
    for key, value in content.items():
        if key.startswith("pollCreationMessage"):
            poll = as_dict(value)
            names = (text(as_dict(item).get("optionName")) for item in as_list(poll.get("options")))
            options = [PollOption(name=name) for name in names if name is not None]
            return MessageContent(
                type=key,
                text=text(poll.get("name")),
                poll=Poll(
                    name=text(poll.get("name")),
                    options=options,
                    selectable_count=integer(poll.get("selectableOptionsCount")),
                ),
                quoted_message_id=_quoted(poll),
                **common,
            )
    return None


def _reply(content: Payload, common: dict[str, Any]) -> MessageContent | None:
    buttons = as_dict(content.get("buttonsResponseMessage"))
    if buttons:
        return MessageContent(
            type="buttonsResponseMessage",
            text=text(buttons.get("selectedDisplayText")),
            button_id=text(buttons.get("selectedButtonId")),
            quoted_message_id=_quoted(buttons),
            **common,
        )
    template = as_dict(content.get("templateButtonReplyMessage"))
    if template:
        return MessageContent(
            type="templateButtonReplyMessage",
            text=text(template.get("selectedDisplayText")),
            button_id=text(template.get("selectedId")),
            quoted_message_id=_quoted(template),
            **common,
        )
    listed = as_dict(content.get("listResponseMessage"))
    if listed:
        return MessageContent(
            type="listResponseMessage",
            text=text(listed.get("title")),
            button_id=text(as_dict(listed.get("singleSelectReply")).get("selectedRowId")),
            quoted_message_id=_quoted(listed),
            **common,
        )
    interactive = as_dict(content.get("interactiveResponseMessage"))
    if interactive:
        flow = as_dict(interactive.get("nativeFlowResponseMessage"))
        return MessageContent(
            type="interactiveResponseMessage",
            text=text(as_dict(interactive.get("body")).get("text")),
            button_id=_flow_id(text(flow.get("paramsJson"))),
            quoted_message_id=_quoted(interactive),
            **common,
        )
    return None


def _flow_id(params: str | None) -> str | None:
    if params is None:
        return None
    try:
        value = json.loads(params)
    except (ValueError, RecursionError):
        return None
    return text(as_dict(value).get("id"))


def _other(content: Payload, common: dict[str, Any], *, stub_type: object) -> MessageContent:
    keys = [key for key in content if key not in _META_KEYS]
    placeholder = keys == [_KEY_DISTRIBUTION] or (
        not keys and str(stub_type).upper() in _STUB_CIPHERTEXT
    )
    if not keys:
        return MessageContent(type="unknown", placeholder=placeholder, **common)
    key = str(keys[0]) if keys[0] != _KEY_DISTRIBUTION or len(keys) == 1 else str(keys[1])
    value = content[key]
    found = text(value) if isinstance(value, str) else None
    part = as_dict(value)
    for name in _TEXT_KEYS:
        found = found or text(part.get(name))
    return MessageContent(
        type=key, text=found, quoted_message_id=_quoted(part), placeholder=placeholder, **common
    )


# --- changes to existing messages ------------------------------------------------------------


def _change(content: Payload) -> Change | None:
    protocol = as_dict(content.get("protocolMessage"))
    if protocol:
        target = ident(as_dict(protocol.get("key")).get("id"))
        protocol_type = str(protocol.get("type", "")).upper()
        edited = as_dict(protocol.get("editedMessage"))
        if protocol_type in _PROTOCOL_EDIT or edited:
            inner, wrappers = unwrap(edited)
            new = typed_content(inner, wrappers) if inner else None
            new_text = new.text or new.caption if new is not None else None
            return Change(MessageChangeKind.EDIT, target, new_text=new_text, content=new)
        if protocol_type in _PROTOCOL_REVOKE:
            return Change(MessageChangeKind.DELETE, target)
        return Change(MessageChangeKind.OTHER, target)
    reaction = as_dict(content.get("reactionMessage"))
    if reaction:
        target = ident(as_dict(reaction.get("key")).get("id"))
        emoji = reaction.get("text")
        return Change(
            MessageChangeKind.REACTION, target, reaction=emoji if isinstance(emoji, str) else None
        )
    update = as_dict(content.get("pollUpdateMessage"))
    if update:
        target = ident(as_dict(update.get("pollCreationMessageKey")).get("id"))
        vote = as_dict(update.get("vote"))
        selected = as_list(vote.get("selectedOptions") or update.get("selectedOptions"))
        names = [name for name in (text(item) for item in selected) if name is not None]
        poll_vote = PollVote(
            poll_message_id=target,
            selected_options=names or None,
            encrypted_payload=text(vote.get("encPayload")),
            encrypted_iv=text(vote.get("encIv")),
        )
        return Change(MessageChangeKind.POLL_VOTE, target, poll_vote=poll_vote)
    return None


def _quoted(part: Payload) -> str | None:
    context = as_dict(part.get("contextInfo"))
    # Production payloads spell it stanzaID; other integrations stanzaId.
    return ident(context.get("stanzaID")) or ident(context.get("stanzaId"))


# --- tolerant scalars ------------------------------------------------------------------------


def as_dict(value: object) -> Payload:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def text(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def ident(value: object) -> str | None:
    """An id from the payload, bounded (`bounds.bounded_id`): a key, a log field."""
    return bounded_optional_id(value)


def integer(value: object) -> int | None:
    """An integer within int64, from a number or a string of digits; None otherwise."""
    result: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= _INT_DIGITS:
        result = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    if result is None or not MIN_JSON_INT <= result <= MAX_JSON_INT:
        return None
    return result


def number(value: object) -> float | None:
    """A finite float from a number or numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    try:
        result = float(value) if isinstance(value, int | float | str) else None
    except (ValueError, OverflowError):
        return None
    return result if result is not None and math.isfinite(result) else None
