"""Who may do what on the bus: zapgate's NATS users and permissions, declared once.

Every user is an nkey (Ed25519, the NATS project's own key format): the server configuration
holds only public keys (`U...`), the seed (`SU...`) stays with the process that connects, so the
configuration file is no secret. All users live in one account (`ZG`, JetStream enabled);
there is no anonymous user, so a connection without a known key is refused
(`Authorization Violation`).

The roles (`ROLES`, plus one `caller_role(name)` per other system) say which subjects a user
publishes, requests, serves and listens to, which durable consumers it reads, and which streams
it may look at. `Role.permissions()` turns that into nats-server `permissions`:

- JetStream publishes and requests need the user's own inbox: every user gets a private
  inbox prefix `_INBOX_<user>` (connect with `inbox_prefix=role.inbox_prefix`) and may
  subscribe only there, so nobody sees another user's replies, PubAcks or fetched messages.
- `$JS.API.>` is open only for the user's own streams and consumers: `STREAM.INFO` of the
  streams it verifies, `CONSUMER.INFO/CREATE/MSG.NEXT` and `$JS.ACK` of its own durables.
  Only the `admin` role creates, updates, purges or deletes streams (the one-shot
  provisioning step).
- Services answer requests through `allow_responses` (one reply per request, to whatever
  inbox asked), never through a publish right on other users' inboxes.

Facts these rules rest on were checked against nats-server 2.15.1 and nats-py 2.16 (see
/work/shared/RELIABILITY.md "NATS auth and pinned consumers"); `tests/test_nats_auth_real.py`
checks them again over a real server.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import nkeys

from zapgate.contracts import subjects
from zapgate.runtime import topology
from zapgate.runtime.streams import DEAD_LETTER_SUBJECT_PREFIX

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

ACCOUNT: Final = "ZG"
JS_API: Final = "$JS.API"
DEAD_LETTER_SUBJECTS: Final = DEAD_LETTER_SUBJECT_PREFIX
CALLER_PREFIX: Final = "caller"


@dataclass(frozen=True, slots=True)
class Durable:
    """A durable pull consumer a role reads: `<prefix>-<name>` on `stream` (prefix: the user)."""

    stream: str
    name: str
    filter_subject: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Role:
    """What one NATS user may do, in the words of the system (see the module docstring).

    - `publishes`: subjects it publishes (JetStream publishes included; PubAcks come to its
      inbox); `requests`: request-reply subjects it calls.
    - `serves`: request subjects it answers (subscribe, queue groups allowed, and one reply
      per request through `allow_responses`).
    - `listens`: core subscriptions (live events).
    - `consumers`: durables it reads; `ephemeral_on`: streams on which it may create an
      ephemeral (ordered) consumer; `verifies`: streams whose `STREAM.INFO` it may read;
      `reads_last`: streams it may read single messages of (`STREAM.MSG.GET`, `DIRECT.GET`).
    - `manages_streams`: the whole JetStream API (admin only).
    """

    name: str
    description: str
    publishes: tuple[str, ...] = ()
    requests: tuple[str, ...] = ()
    serves: tuple[str, ...] = ()
    listens: tuple[str, ...] = ()
    consumers: tuple[Durable, ...] = ()
    ephemeral_on: tuple[str, ...] = ()
    verifies: tuple[str, ...] = ()
    reads_last: tuple[str, ...] = ()
    manages_streams: bool = False
    extra_publish: tuple[str, ...] = field(default=(), repr=False)

    @property
    def inbox_prefix(self) -> str:
        """The user's private reply prefix: pass it to `nats.connect(inbox_prefix=...)`."""
        return f"_INBOX_{self.name}"

    def durable_name(self, consumer: Durable, prefix: str | None = None) -> str:
        return f"{prefix or self.name}-{consumer.name}"

    def permissions(self, consumer_prefix: str | None = None) -> dict[str, Any]:
        """nats-server `permissions` of this role (durables named `<consumer_prefix>-<name>`)."""
        publish: list[str] = [*self.publishes, *self.requests, *self.extra_publish]
        if self.manages_streams:
            publish += [f"{JS_API}.>", "zg.schedule.>"]
        for stream in self.verifies:
            publish.append(f"{JS_API}.STREAM.INFO.{stream}")
        for stream in self.reads_last:
            publish += [f"{JS_API}.STREAM.MSG.GET.{stream}", f"{JS_API}.DIRECT.GET.{stream}.>"]
        for stream in self.ephemeral_on:
            # nats-py creates an ephemeral consumer without a name in the subject; an ordered
            # consumer answers the server's flow control.
            publish += [f"{JS_API}.CONSUMER.CREATE.{stream}", f"$JS.FC.{stream}.>"]
        for consumer in self.consumers:
            publish += _consumer_subjects(consumer, self.durable_name(consumer, consumer_prefix))
        permissions: dict[str, Any] = {
            "publish": {"allow": _unique(publish)},
            "subscribe": {
                "allow": _unique([*self.serves, *self.listens, f"{self.inbox_prefix}.>"])
            },
        }
        if self.serves:
            permissions["allow_responses"] = True
        return permissions


def _consumer_subjects(consumer: Durable, durable: str) -> list[str]:
    stream = consumer.stream
    api = f"{JS_API}.CONSUMER"
    return [
        f"{api}.INFO.{stream}.{durable}",
        f"{api}.MSG.NEXT.{stream}.{durable}",
        # nats-py creates a durable through any of these three forms (see RELIABILITY.md).
        f"{api}.CREATE.{stream}.{durable}",
        f"{api}.DURABLE.CREATE.{stream}.{durable}",
        f"{api}.CREATE.{stream}.{durable}.{consumer.filter_subject or '>'}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _durables_of(service: str) -> tuple[Durable, ...]:
    """The service's durables as the topology declares them (one source of truth)."""
    return tuple(
        Durable(
            spec.stream,
            spec.name,
            spec.filter_subjects[0] if len(spec.filter_subjects) == 1 else None,
        )
        for spec in topology.consumers_of(service)
        if not spec.ordered  # an ordered consumer is ephemeral: see `ephemeral_on`
    )


_ALL_STREAMS: Final = tuple(spec.name for spec in topology.ALL_STREAMS)
"""Services run `ensure_streams` over the whole topology, which only looks (STREAM.INFO) when
the admin already provisioned every stream as declared."""
_HEALTH_API_READ: Final = (subjects.API_HEALTH_GET, subjects.API_HEALTH_LIST)
_HEALTH_API_ALL: Final = "zg.api.health.instances.*"
_SENDER_API_ALL: Final = "zg.api.sender.*"
_INGEST_API_READ: Final = (subjects.API_INGEST_WEBHOOK_COUNTS,)

_BODIES_BUCKET: Final = "ZG_WEBHOOK_BODIES"
_BODIES_STREAM: Final = f"OBJ_{_BODIES_BUCKET}"

INGEST: Final = Role(
    name="ingest",
    description="Webhook gateway: publishes typed webhook events and proofs of life",
    publishes=(
        subjects.WEBHOOKS_ALL,
        subjects.PROOF_OF_LIFE_ALL,
        f"{DEAD_LETTER_SUBJECTS}.ingest.>",
    ),
    serves=_INGEST_API_READ,
    consumers=_durables_of("ingest"),
    # The archiver follows instance states with an ordered (ephemeral) consumer; the object
    # store reads a body's chunks with one.
    ephemeral_on=(subjects.STREAM_HEALTH, _BODIES_STREAM),
    verifies=(*_ALL_STREAMS, _BODIES_STREAM),
    reads_last=(_BODIES_STREAM,),
    # Ingest's own object store of large webhook bodies (adapters/bodies.py): it declares the
    # bucket itself (the one stream a service creates), writes chunks and metadata, and purges
    # the chunks of an overwritten body.
    extra_publish=(
        f"$O.{_BODIES_BUCKET}.>",
        f"{JS_API}.STREAM.CREATE.{_BODIES_STREAM}",
        f"{JS_API}.STREAM.PURGE.{_BODIES_STREAM}",
        # nats-py's object store reads chunks through a subscribe that looks the stream up.
        f"{JS_API}.STREAM.NAMES",
    ),
)

HEALTH: Final = Role(
    name="health",
    description="Owner of instance state: checks, restarts, notices; serves the health API",
    publishes=(
        subjects.STATE_CHANGED_ALL,
        subjects.NOTIFICATIONS_ALL,
        subjects.HEALTH_TICK_SCHEDULE,
        f"{DEAD_LETTER_SUBJECTS}.health.>",
    ),
    serves=(_HEALTH_API_ALL,),
    consumers=_durables_of("health"),
    verifies=_ALL_STREAMS,
    reads_last=(subjects.STREAM_TICKS,),
)

SENDER: Final = Role(
    name="sender",
    description="Preflight-gated sends: outcomes, delivery tracking, alerts; serves its API",
    publishes=(
        subjects.SEND_OUTCOMES_ALL,
        subjects.MESSAGE_STATUS_ALL,
        subjects.MESSAGE_ALERTS_ALL,
        subjects.SESSION_OBSERVED_ALL,
        subjects.RECONNECT_REQUESTED_ALL,
        subjects.DELIVERY_STALL_ALL,
        subjects.SENDER_TICK_SCHEDULE,
        f"{DEAD_LETTER_SUBJECTS}.sender.>",
    ),
    serves=(_SENDER_API_ALL,),
    consumers=_durables_of("sender"),
    verifies=_ALL_STREAMS,
    # ZG_SEND: an answer parked on its outcome subject is read back after a crash.
    reads_last=(subjects.STREAM_TICKS, subjects.STREAM_SEND),
)

API: Final = Role(
    name="api",
    description="HTTP API for other systems: sends, outcomes, retries, instance health",
    publishes=(
        subjects.SEND_COMMANDS_ALL,
        subjects.API_HOOKS_ALL,
        f"{DEAD_LETTER_SUBJECTS}.api.>",
    ),
    requests=(*_HEALTH_API_READ, _SENDER_API_ALL),
    # `?wait=` follows one command's outcome live (SenderClient.send subscribes to it).
    listens=(subjects.SEND_OUTCOMES_ALL,),
    consumers=_durables_of("api"),
    verifies=_ALL_STREAMS,
)

CONSOLE: Final = Role(
    name="console",
    description="Operator console: every health action (tokens in requests), sender API, "
    "ingest's webhook counts",
    requests=(_HEALTH_API_ALL, _SENDER_API_ALL, *_INGEST_API_READ),
    listens=(subjects.STATE_CHANGED_ALL, subjects.NOTIFICATIONS_ALL),
)

OPERATOR: Final = Role(
    name="operator",
    description="A person's tools: register, pause and remove instances; retry sends",
    requests=(_HEALTH_API_ALL, _SENDER_API_ALL, *_INGEST_API_READ),
    listens=(subjects.STATE_CHANGED_ALL, subjects.NOTIFICATIONS_ALL),
)

ADMIN: Final = Role(
    name="admin",
    description="One-shot provisioning: creates and changes streams and schedules",
    manages_streams=True,
)

CALLER: Final = Role(
    name=CALLER_PREFIX,
    description="Another system: sends, reads outcomes, receipts, alerts and instance health",
    publishes=(subjects.SEND_COMMANDS_ALL,),
    requests=(*_HEALTH_API_READ, subjects.API_SENDER_OUTCOME),
    listens=(
        subjects.SEND_OUTCOMES_ALL,
        subjects.MESSAGE_STATUS_ALL,
        subjects.MESSAGE_ALERTS_ALL,
        subjects.STATE_CHANGED_ALL,
    ),
    consumers=(
        Durable(subjects.STREAM_SEND, "outcomes", subjects.SEND_OUTCOMES_ALL),
        Durable(subjects.STREAM_SEND, "status", subjects.MESSAGE_STATUS_ALL),
        Durable(subjects.STREAM_HEALTH, "states", subjects.STATE_CHANGED_ALL),
    ),
)

ROLES: Final[Mapping[str, Role]] = {
    role.name: role for role in (INGEST, HEALTH, SENDER, API, CONSOLE, OPERATOR, ADMIN, CALLER)
}
"""Every role by user name; other systems get `caller_role(<name>)`."""


def caller_role(system: str) -> Role:
    """The caller role for one other system, as user `caller-<system>` (own inbox, durables)."""
    if not system or not all(char.isalnum() or char in "_-" for char in system):
        raise ValueError(f"{system!r} is not a system name ([A-Za-z0-9_-]+)")
    return replace(CALLER, name=f"{CALLER_PREFIX}-{system}")


def role_for(user: str) -> Role:
    """The role of `user`: a name of `ROLES`, or `caller-<system>`; `KeyError` otherwise."""
    if user in ROLES:
        return ROLES[user]
    if user.startswith(f"{CALLER_PREFIX}-"):
        return caller_role(user.removeprefix(f"{CALLER_PREFIX}-"))
    raise KeyError(f"no NATS role for user {user!r}")


# --- keys -----------------------------------------------------------------------------------


def new_user_seed() -> str:
    """A fresh nkey user seed (`SU...`, 58 characters): the secret a service connects with."""
    seed: bytes = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    """The public key (`U...`) of an nkey user seed; `ValueError` when it is not one."""
    try:
        pair = nkeys.from_seed(seed.strip().encode())
    except nkeys.NkeysError as exc:
        raise ValueError("not an nkey user seed") from exc
    key: bytes = pair.public_key
    if not key.startswith(b"U"):
        raise ValueError("not an nkey user seed")
    return key.decode()


# --- server configuration -------------------------------------------------------------------


def server_config(
    keys: Mapping[str, Iterable[str]],
    *,
    consumer_prefixes: Mapping[str, str] | None = None,
    extra_users: Iterable[Mapping[str, Any]] = (),
) -> str:
    """The nats-server `accounts` block for `keys` (user name -> its public keys).

    Several keys for one user are how credentials rotate without downtime: the old and the new
    key both connect until the old one is removed. `consumer_prefixes` renames a user's
    durables (`<prefix>-<name>`, default the user name). `extra_users` are added as given
    (the test harness user of libs/devservers; never in production). Include the result from
    the main configuration (`include "auth.conf"`); the server rereads it on `--signal reload`.
    """
    prefixes = consumer_prefixes or {}
    users: list[dict[str, Any]] = []
    for user, user_keys in sorted(keys.items()):
        role = role_for(user)
        permissions = role.permissions(prefixes.get(user))
        for key in dict.fromkeys(user_keys):
            if not (key.startswith("U") and len(key) == 56):  # noqa: PLR2004 - nkey length
                raise ValueError(f"{user}: {key[:8]!r}... is not an nkey user public key")
            users.append({"nkey": key, "permissions": permissions})
    account = {"jetstream": "enabled", "users": [*users, *map(dict, extra_users)]}
    header = "# Generated by zapgate-nats-auth from zapgate.runtime.nats_auth; do not edit.\n"
    return header + "accounts: " + json.dumps({ACCOUNT: account}, indent=2) + "\n"


def connect_options(user: str, seed: str) -> dict[str, Any]:
    """`nats.connect(**...)` arguments that log in as `user` with its nkey seed.

    Sets the user's private inbox prefix too: its permissions only allow replies there.
    """
    return {"nkeys_seed_str": seed, "inbox_prefix": role_for(user).inbox_prefix}
