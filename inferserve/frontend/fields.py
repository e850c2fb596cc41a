"""The field readers every wire family's parser is built from, with one
wording and one status per kind of body error (docs/api.md#errors):

- a body that is not JSON where JSON is required: 415;
- malformed JSON: 400 ``invalid_json``;
- JSON that is not an object, a missing field, a field of the wrong type or
  value, a field the route does not take: 422 (TEI's status for a body
  that is not its shape), naming the field;
- an empty text or list: ``empty_status`` (400, TEI's; the rerank and
  predict routes keep their 422);
- more inputs than ``--max-inputs``: 413.

No aiohttp, no torch: parsers run on the event loop or, for large bodies,
on a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ..common.config import ServerConfig
from ..ipc import Call
from .errors import RequestError
from .schemas import MAX_TOKEN_ID, SCHEMAS, validate

BODY = "the body"  # ``where`` of the body itself (not a field)

# Content types whose body is taken verbatim as one text input. curl -d sends
# application/x-www-form-urlencoded; the classic Starlette example read the
# raw body whatever the type, so an absent type is text as well.
TEXT_CONTENT_TYPES = frozenset(
    {"", "text/plain", "application/x-www-form-urlencoded", "application/octet-stream"}
)


def named(where: str) -> str:
    """A field's name as messages write it (TEI's: in backticks)."""
    return where if where == BODY else f"`{where}`"


def invalid(where: str, should: str) -> RequestError:
    """422: a field (or the body) of the wrong type or value."""
    return RequestError(422, "invalid_request", f"{named(where)} must be {should}")


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def require_json(content_type: str) -> None:
    if not is_json(content_type):
        raise RequestError(415, "unsupported_media_type", "send application/json")


def utf8(body: bytes) -> str:
    """A raw text body as text; 400 if it is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, "invalid_encoding", f"the body is not valid UTF-8 (byte {exc.start})") from exc


def json_object(body: bytes, example: str) -> dict[str, Any]:
    """The body's JSON object: 400 for malformed JSON, 422 for other JSON."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "invalid_json", f"malformed JSON: {exc.msg}") from exc
    if not isinstance(document, dict):
        raise RequestError(422, "invalid_request", f"expected a JSON object like {example}")
    return document


def json_request(body: bytes, content_type: str, example: str) -> dict[str, Any]:
    """``json_object`` of a body that must be sent as JSON (415 otherwise)."""
    require_json(content_type)
    return json_object(body, example)


def known_fields(schema: str) -> tuple[str, ...]:
    """The top-level fields schema ``schema`` documents."""
    return tuple(SCHEMAS[schema].get("properties", {}))


def only_known(document: dict[str, Any], known: Iterable[str], where: str = BODY) -> None:
    """422 naming the first field not in ``known`` (a misspelt option is an
    error, not silently its default)."""
    known = tuple(known)
    for name in document:
        if name not in known:
            inside = "" if where == BODY else f" in {named(where)}"
            takes = ", ".join(f"`{k}`" for k in known)
            raise RequestError(422, "unknown_field", f"unknown field `{name}`{inside}; expected one of {takes}")


def checked(document: dict[str, Any], schema: str, status: int = 422) -> None:
    """The schema's last word on a parsed body: no unknown field, then its shape."""
    only_known(document, known_fields(schema))
    validate(document, schema, status)


def required(document: dict[str, Any], name: str) -> Any:
    if document.get(name) is None:
        raise RequestError(422, "missing_field", f"missing field `{name}`")
    return document[name]


def empty(where: str, status: int = 400) -> RequestError:
    return RequestError(status, "empty_input", f"{named(where)} cannot be empty")


def text(value: Any, where: str, empty_status: int = 400, blank: bool = False) -> str:
    """A non-empty string (``blank``: whitespace alone counts as empty too)."""
    if not isinstance(value, str):
        raise invalid(where, "a string")
    if not (value.strip() if blank else value):
        raise empty(where, empty_status)
    return value


def items(raw: Any, where: str, max_inputs: int, should: str = "a list", empty_status: int = 400) -> list[Any]:
    """A batch: a non-empty list of at most ``max_inputs`` items."""
    if not isinstance(raw, list):
        raise invalid(where, should)
    if not raw:
        raise empty(where, empty_status)
    if len(raw) > max_inputs:
        raise RequestError(413, "too_many_inputs", f"{named(where)} has {len(raw)} items; the limit is {max_inputs}")
    return raw


def each(raw: list[Any], where: str, read: Callable[[Any, str], Any]) -> tuple[Any, ...]:
    """``read`` of every item, each named by its index."""
    return tuple(read(value, f"{where}[{index}]") for index, value in enumerate(raw))


def is_integer(value: Any) -> bool:
    """A JSON integer (Python's bool is an int; JSON's true is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def token_ids(value: Any, where: str, max_id: int = MAX_TOKEN_ID) -> list[int]:
    if not isinstance(value, list) or not all(is_integer(v) for v in value):
        raise invalid(where, "a list of token ids")
    if not value:
        raise empty(where)
    if not all(0 <= v <= max_id for v in value):
        raise invalid(where, f"a list of token ids from 0 to {max_id}")
    return value


def boolean(document: dict[str, Any], name: str, default: bool) -> bool:
    value = document.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, "true or false")
    return value


def optional_text(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(name, "a string")
    return value


def positive_integer(document: dict[str, Any], name: str) -> int | None:
    value = document.get(name)
    if value is not None and (not is_integer(value) or value < 1):
        raise invalid(name, "a positive integer")
    return value


def truncation(document: dict[str, Any]) -> tuple[bool | None, str]:
    """TEI's ``truncate`` (None: as --no-truncate says) and
    ``truncation_direction`` ("left" or "right"; Left/Right in any case)."""
    truncate = document.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise invalid("truncate", "true, false or null")
    direction = document.get("truncation_direction")
    if direction is None:
        return truncate, "right"
    if not isinstance(direction, str) or direction.lower() not in ("left", "right"):
        raise invalid("truncation_direction", "Left or Right")
    return truncate, direction.lower()


# Turns a body (its content type, the server's config and the name of the
# route's request schema) into a Call, or raises RequestError.
Parser = Callable[[bytes, str, ServerConfig, str], Call]
