"""Field errors in Brazilian Portuguese, keyed by pydantic's stable error types.

The `code` of a field error is pydantic's own type (`missing`, `string_pattern_mismatch`, ...):
stable across versions and documented by pydantic. Only the human message is ours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from zapgate.api.models import FieldError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

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
    "json_invalid": "JSON inválido: {error}.",
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
        return template.format(**{key: str(value) for key, value in context.items()})
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
