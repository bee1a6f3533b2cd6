"""Every failure as an `ErrorBody`: refusals, invalid requests, HTTP errors and crashes.

Field errors are in Brazilian Portuguese, keyed by pydantic's stable error types: the `code` of
a field error is pydantic's own type (`missing`, `string_pattern_mismatch`, ...), stable across
versions and documented by pydantic. Only the human message is ours. `EXCEPTION_HANDLERS` are
the app's answers to what a route raises (`app.create_app` installs them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import structlog
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from zapgate.api.domain import API_MESSAGES_PT_BR, ApiErrorCode
from zapgate.api.models import ErrorBody, FieldError
from zapgate.api.service import Refusal, RefusalKind

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from fastapi import Request
    from starlette.responses import Response

_log = structlog.get_logger("zapgate.api")

_GENERIC: Final = "Valor inválido."
_BY_TYPE: Final[dict[str, str]] = {
    "missing": "Campo obrigatório.",
    "extra_forbidden": "Campo desconhecido: remova-o ou confira o nome.",
    "string_type": "Deve ser um texto.",
    "string_too_short": "Deve ter pelo menos {min_length} caractere(s).",
    "string_too_long": "Deve ter no máximo {max_length} caracteres.",
    "string_pattern_mismatch": "Formato inválido.",
    "too_short": "Curto demais: o mínimo é {min_length}.",
    "too_long": "Longo demais: o máximo é {max_length}.",
    "int_type": "Deve ser um número inteiro.",
    "int_parsing": "Deve ser um número inteiro.",
    "int_from_float": "Deve ser um número inteiro, sem casas decimais.",
    "float_type": "Deve ser um número.",
    "float_parsing": "Deve ser um número.",
    "bool_type": "Deve ser verdadeiro ou falso.",
    "bool_parsing": "Deve ser verdadeiro ou falso.",
    "greater_than": "Deve ser maior que {gt}.",
    "greater_than_equal": "Deve ser maior ou igual a {ge}.",
    "less_than": "Deve ser menor que {lt}.",
    "less_than_equal": "Deve ser menor ou igual a {le}.",
    "finite_number": "Deve ser um número finito.",
    "enum": "Valor não permitido; use um destes: {expected}.",
    "literal_error": "Valor não permitido; use um destes: {expected}.",
    "model_type": "Deve ser um objeto JSON.",
    "model_attributes_type": "Deve ser um objeto JSON.",
    "dict_type": "Deve ser um objeto JSON.",
    "list_type": "Deve ser uma lista.",
    # ctx `error` is Python's json message in English ("Expecting value"): not shown.
    "json_invalid": "O corpo não é um JSON válido; confira aspas, vírgulas e chaves.",
    "json_type": "JSON inválido.",
    "value_error": "Valor inválido.",
    "none_required": "Deve ser nulo.",
}
# Pattern errors say what the pattern means for the fields people get wrong most.
_PATTERN_BY_FIELD: Final[dict[str, str]] = {
    "phone": (
        "Telefone inválido: use o número com DDI e DDD (ex.: 5511988887777 ou "
        "+55 11 98888-7777), um grupo '...@g.us' ou um id '...@lid'."
    ),
    "image": "Use uma URL http(s) ou um data: URI.",
    "audio": "Use uma URL http(s) ou um data: URI.",
    "video": "Use uma URL http(s) ou um data: URI.",
    "document": "Use uma URL http(s) ou um data: URI.",
    "extension": "Extensão inválida: de 1 a 10 letras ou dígitos, sem ponto (ex.: pdf).",
    "Idempotency-Key": (
        "Idempotency-Key inválida: de 1 a 200 caracteres ASCII visíveis, sem espaços."
    ),
    "instance_id": "Identificador inválido: letras, dígitos, '_' ou '-'.",
    "command_id": "Identificador inválido: letras, dígitos, '_', '-' ou ':'.",
}
_LOCATIONS: Final = {"body", "query", "header", "path", "cookie"}


def message_pt_br(error: Mapping[str, Any], field: str) -> str:
    """The pt-BR message of one pydantic error (its `type` and `ctx`)."""
    kind = str(error.get("type", ""))
    if kind == "string_pattern_mismatch" and field.rsplit(".", 1)[-1] in _PATTERN_BY_FIELD:
        return _PATTERN_BY_FIELD[field.rsplit(".", 1)[-1]]
    template = _BY_TYPE.get(kind)
    if template is None:
        return _GENERIC
    context = error.get("ctx") or {}
    try:
        # pydantic lists choices in English (`'a', 'b' or 'c'`).
        values = {key: str(value) for key, value in context.items()}
        if "expected" in values:
            values["expected"] = values["expected"].replace(" or ", " ou ")
        return template.format(**values)
    except (KeyError, IndexError):
        return template.split(";")[0].split("{")[0].strip() or _GENERIC


def field_errors(errors: Sequence[Mapping[str, Any]]) -> list[FieldError]:
    """FastAPI's validation errors as FieldErrors: location, dotted field, code, pt-BR message."""
    found: list[FieldError] = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        location = loc[0] if loc and loc[0] in _LOCATIONS else "body"
        path = loc[1:] if loc and loc[0] in _LOCATIONS else loc
        # A discriminated or tagged union adds the model's name to the path; callers never
        # wrote it, so it is dropped.
        if location == "body":
            path = [part for part in path if not part[:1].isupper()]
        if error.get("type") == "json_invalid":
            path = []  # its second part is a character offset in the body, not a field
        field = ".".join(path) or location
        found.append(
            FieldError(
                location=location,
                field=field,
                code=str(error.get("type", "value_error")),
                message=message_pt_br(error, field),
            )
        )
    return found


_STATUS: dict[RefusalKind, int] = {
    RefusalKind.UNAUTHORIZED: 401,
    RefusalKind.FORBIDDEN: 403,
    RefusalKind.NOT_FOUND: 404,
    RefusalKind.CONFLICT: 409,
    RefusalKind.UNPROCESSABLE: 422,
    RefusalKind.RATE_LIMITED: 429,
    RefusalKind.UNAVAILABLE: 503,
}
_UNREADABLE_BODY = FieldError(
    location="body",
    field="body",
    code="json_invalid",
    message="O corpo não é um JSON legível (UTF-8).",
)


def _error(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _api_error(code: ApiErrorCode, detail: str | None = None) -> ErrorBody:
    return ErrorBody(code=code.value, message=API_MESSAGES_PT_BR[code], detail=detail)


async def _on_refusal(_request: Request, exc: Exception) -> Response:
    refusal = exc if isinstance(exc, Refusal) else None
    if refusal is None:
        raise exc
    headers = None
    if refusal.retry_after is not None:
        headers = {"Retry-After": str(max(1, round(refusal.retry_after)))}
    problem = refusal.problem
    body = ErrorBody(code=problem.code, message=problem.message, detail=problem.detail)
    return _error(_STATUS[refusal.kind], body, headers)


async def _on_invalid(_request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    body = _api_error(ApiErrorCode.INVALID_REQUEST)
    return _error(422, body.model_copy(update={"errors": field_errors(errors)}))


async def _on_http(_request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 400:  # noqa: PLR2004 - FastAPI's "error parsing the body" (bytes, not JSON)
        body = _api_error(ApiErrorCode.INVALID_REQUEST)
        return _error(422, body.model_copy(update={"errors": [_UNREADABLE_BODY]}))
    code = {404: ApiErrorCode.NOT_FOUND, 405: ApiErrorCode.METHOD_NOT_ALLOWED}.get(
        status,
        ApiErrorCode.INVALID_REQUEST if status < 500 else ApiErrorCode.INTERNAL,  # noqa: PLR2004
    )
    headers = getattr(exc, "headers", None)
    return _error(status, _api_error(code), headers)


async def _on_crash(_request: Request, exc: Exception) -> Response:
    _log.error("api_internal_error", error=repr(exc))
    return _error(500, _api_error(ApiErrorCode.INTERNAL))


EXCEPTION_HANDLERS: Final[
    dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]]
] = {
    Refusal: _on_refusal,
    RequestValidationError: _on_invalid,
    HTTPException: _on_http,
    Exception: _on_crash,
}
