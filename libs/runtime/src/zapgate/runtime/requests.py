"""Request-reply over NATS: decode the request with pydantic, call the use case, always reply.

Every request gets an answer (a timeout tells the caller nothing): a request that does not decode
gets `ok=False` with `INVALID_COMMAND`, its pt-BR `message` and a pt-BR explanation per field; a
use case may raise `RequestRefused(problem)` (or an exception mapped in `refusals`) for a coded
refusal; anything else becomes `INTERNAL` with the exception's type name (never its text, which
may hold input). Each request ends in one canonical `api_request` log line. The caller's side
is `ask`: encode, request, decode the typed reply, `NoAnswer` when nobody answers in time.

Reply models follow the contracts' shape: `ok: bool`, `error: Problem | None`, plus the payload.

```python
handler = request_handler(GetSendOutcome, SendOutcomeReply, lambda req: get_outcome(req, deps))
@broker.subscriber(subjects.API_SENDER_OUTCOME, queue="sender-api")       # FastStream
async def on_get_send_outcome(msg: NatsMessage) -> SendOutcomeReply:
    return await handler(msg.body)
# or, without FastStream, on a supervised connection (re-subscribes after a replacement):
await RequestServer(connection, subjects.API_SENDER_OUTCOME, "sender-api", handler).start()
```
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog
from nats.errors import NoRespondersError
from pydantic import BaseModel, ValidationError

from zapgate.contracts.errors import ErrorCode, Problem

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from zapgate.runtime.connection import NatsConnection

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)
_log = structlog.get_logger("zapgate.runtime.requests")
_MAX_FIELDS = 20

# pt-BR explanations of pydantic's error types, for people who read the refusal.
_FIELD_MESSAGES_PT_BR: dict[str, str] = {
    "missing": "campo obrigatório ausente",
    "extra_forbidden": "campo não permitido",
    "json_invalid": "o corpo não é um JSON válido",
    "json_type": "o corpo não é um JSON válido",
    "model_type": "deve ser um objeto JSON",
    "model_attributes_type": "deve ser um objeto JSON",
    "dict_type": "deve ser um objeto JSON",
    "list_type": "deve ser uma lista",
    "string_type": "deve ser um texto",
    "string_too_short": "texto curto demais",
    "string_too_long": "texto longo demais",
    "string_pattern_mismatch": "formato não aceito",
    "int_type": "deve ser um número inteiro",
    "int_parsing": "deve ser um número inteiro",
    "int_from_float": "deve ser um número inteiro",
    "float_type": "deve ser um número",
    "float_parsing": "deve ser um número",
    "bool_type": "deve ser verdadeiro ou falso",
    "bool_parsing": "deve ser verdadeiro ou falso",
    "greater_than": "valor pequeno demais",
    "greater_than_equal": "valor pequeno demais",
    "less_than": "valor grande demais",
    "less_than_equal": "valor grande demais",
    "too_short": "poucos itens",
    "too_long": "itens demais",
    "enum": "valor não permitido",
    "literal_error": "valor não permitido",
    "uuid_type": "deve ser um UUID",
    "uuid_parsing": "deve ser um UUID",
    "datetime_type": "deve ser data e hora ISO 8601 com fuso horário",
    "datetime_parsing": "deve ser data e hora ISO 8601 com fuso horário",
    "datetime_from_date_parsing": "deve ser data e hora ISO 8601 com fuso horário",
    "timezone_aware": "a data e hora precisa de fuso horário",
    "url_parsing": "deve ser uma URL",
    "url_type": "deve ser uma URL",
    "value_error": "valor inválido",
}
_DEFAULT_FIELD_MESSAGE = "valor inválido"
BODY_FIELD = "(corpo)"


class RequestRefused(Exception):  # noqa: N818 - a coded refusal, the reply carries the problem
    """Raised by a use case to answer `ok=False` with `problem` (a stable code, pt-BR text)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.code)
        self.problem = problem


def invalid_request(error: ValidationError) -> Problem:
    """`INVALID_COMMAND` with a pt-BR explanation per dotted field path (`(corpo)` for the body
    itself) and pydantic's own summary (English, input values left out) as `detail`."""
    fields: dict[str, str] = {}
    for item in error.errors(include_url=False, include_input=False)[:_MAX_FIELDS]:
        path = ".".join(str(part) for part in item["loc"]) or BODY_FIELD
        fields.setdefault(path, _FIELD_MESSAGES_PT_BR.get(item["type"], _DEFAULT_FIELD_MESSAGE))
    detail = "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or BODY_FIELD}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)[:_MAX_FIELDS]
    )
    problem = Problem.of(ErrorCode.INVALID_COMMAND, detail=detail[:1000])
    return problem.model_copy(update={"fields": fields})


def decode_request(model: type[Req], data: bytes) -> Req | Problem:
    """`model` from JSON `data`, or the `INVALID_COMMAND` problem saying why not."""
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        return invalid_request(error)


def refusal(reply: type[Rep], problem: Problem) -> Rep:
    """The `ok=False` reply of type `reply` carrying `problem`."""
    return reply.model_validate({"ok": False, "error": problem})


def request_handler(
    request: type[Req],
    reply: type[Rep],
    call: Callable[[Req], Awaitable[Rep]],
    *,
    refusals: Mapping[type[Exception], ErrorCode] | None = None,
    name: str | None = None,
) -> Callable[[bytes], Awaitable[Rep]]:
    """A `bytes -> reply` function that decodes, calls and never raises (see module doc).

    `refusals` maps exceptions of the use case to the code they are answered with (e.g.
    `{NotRegisteredError: ErrorCode.INSTANCE_UNKNOWN}`); `name` names the verb in the log line
    (default: the request model's name).
    """
    mapped = dict(refusals or {})
    verb = name or request.__name__

    async def handle(data: bytes) -> Rep:
        started = time.perf_counter()
        answer = await _answer(data, request, reply, call, mapped)
        error: Problem | None = getattr(answer, "error", None)
        fields: dict[str, Any] = {
            "verb": verb,
            "ok": error is None,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if error is not None:
            fields["code"] = error.code
            _log.warning("api_request", **fields)
        else:
            _log.info("api_request", **fields)
        return answer

    return handle


async def _answer(
    data: bytes,
    request: type[Req],
    reply: type[Rep],
    call: Callable[[Req], Awaitable[Rep]],
    refusals: Mapping[type[Exception], ErrorCode],
) -> Rep:
    decoded = decode_request(request, data)
    if isinstance(decoded, Problem):
        return refusal(reply, decoded)
    try:
        return await call(decoded)
    except RequestRefused as refused:
        return refusal(reply, refused.problem)
    except Exception as error:  # noqa: BLE001 - every request gets a coded answer, never silence
        for kind, code in refusals.items():
            if isinstance(error, kind):
                return refusal(reply, Problem.of(code))
        _log.exception("api_request_failed", request=request.__name__)
        return refusal(reply, Problem.of(ErrorCode.INTERNAL, detail=type(error).__name__))


class RequestServer(Generic[Rep]):
    """Answers requests on `subject` (queue group `queue`: one replica answers each) over a
    supervised connection, subscribing again whenever the connection gets a new client."""

    def __init__(
        self,
        connection: NatsConnection,
        subject: str,
        queue: str,
        handler: Callable[[bytes], Awaitable[Rep]],
    ) -> None:
        self._connection = connection
        self._subject = subject
        self._queue = queue
        self._handler = handler
        self._subscription: Subscription | None = None
        self._client: Client | None = None
        self._stopped = False

    async def start(self) -> None:
        """Subscribe now if connected, and after every new client from here on."""
        self._stopped = False
        self._connection.on_connect(self._subscribe)
        if self._connection.connected.is_set():
            await self._subscribe(self._connection.require())

    async def stop(self) -> None:
        """Unsubscribe; requests in flight still get their reply."""
        self._stopped = True
        if self._subscription is not None and self._client is not None:
            if not self._client.is_closed:
                await self._subscription.unsubscribe()
            self._subscription = None

    async def _subscribe(self, client: Client) -> None:
        # nats-py re-subscribes by itself after a reconnect; only a new client needs this.
        if self._stopped or client is self._client:
            return
        self._client = client
        self._subscription = await client.subscribe(
            self._subject, queue=self._queue, cb=self._on_request
        )

    async def _on_request(self, message: Msg) -> None:
        answer = await self._handler(message.data)
        if message.reply:
            await message.respond(answer.model_dump_json().encode())


class NoAnswer(Exception):  # noqa: N818 - a fact about the request, as in the field's terms
    """Nobody answered a request: no service subscribes to `subject`, or none answered within
    `timeout` seconds (`no_responders` tells which)."""

    def __init__(self, subject: str, timeout: float, *, no_responders: bool) -> None:
        self.subject = subject
        self.timeout = timeout
        self.no_responders = no_responders
        super().__init__(
            f"no service answers {subject}"
            if no_responders
            else f"{subject} did not answer in {timeout}s"
        )


async def ask(
    nc: Client, subject: str, request: BaseModel, reply: type[Rep], *, timeout: float
) -> Rep:
    """Send `request` (JSON) to the request-reply verb `subject` and decode the answer as `reply`.

    `timeout` is in seconds. Raises `NoAnswer` when nobody answers in time, and pydantic's
    `ValidationError` when the answer is not a `reply`.
    """
    try:
        message = await nc.request(subject, request.model_dump_json().encode(), timeout=timeout)
    except NoRespondersError as error:
        raise NoAnswer(subject, timeout, no_responders=True) from error
    except TimeoutError as error:  # nats-py's own TimeoutError is one too
        raise NoAnswer(subject, timeout, no_responders=False) from error
    return reply.model_validate_json(message.data)
