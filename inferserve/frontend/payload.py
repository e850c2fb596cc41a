"""Parse and validate request bodies into the ``Call`` the worker receives
(no aiohttp, no torch; large bodies are parsed on a thread).

Two shapes are accepted on ``POST /``:
- a raw text body (``curl -d "test [MASK]"``: form-encoded or text/plain),
  which is one input with no parameters;
- JSON ``{"inputs": str | object | [str | object], "parameters": {...}}``,
  the Hugging Face inference API convention.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from ..common.config import ServerConfig
from ..ipc import Call, EmbedOptions, RequestKind
from .errors import PayloadError
from .schemas import validate

# Content types whose body is taken verbatim as one text input. curl -d sends
# application/x-www-form-urlencoded; the classic Starlette example read the
# raw body whatever the type, so an absent type is text as well.
TEXT_CONTENT_TYPES = frozenset(
    {"", "text/plain", "application/x-www-form-urlencoded", "application/octet-stream"}
)


# Turns a body (with its content type) into a Call, or raises PayloadError.
Parser = Callable[[bytes, str, ServerConfig], Call]


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def parse_pipeline(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /``: a raw text body or the HF inference API's JSON."""
    if is_json(content_type):
        return _parse_json(body, config.max_inputs)
    if content_type in TEXT_CONTENT_TYPES:
        text = _decode_text(body)
        validate(text, "TextBody", 400)
        return Call(RequestKind.PIPELINE, (text,), single=True)
    raise PayloadError(
        415,
        "unsupported_media_type",
        f"unsupported content type {content_type!r}: send application/json or a raw text body",
    )


def utf8(body: bytes) -> str:
    """A raw text body as text; 400 if it is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(400, "invalid_encoding", f"body is not valid UTF-8 (byte {exc.start})") from exc


def _decode_text(body: bytes) -> str:
    text = utf8(body)
    if not text.strip():
        raise PayloadError(400, "empty_input", "the request body is empty")
    return text


def json_object(body: bytes, example: str, not_an_object: int = 400) -> dict[str, Any]:
    """The body's JSON object; 400 for malformed JSON, ``not_an_object`` (TEI
    and Cohere say 422) for JSON that is not an object."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(400, "invalid_json", f"malformed JSON: {exc.msg}") from exc
    if not isinstance(document, dict):
        raise PayloadError(not_an_object, "invalid_request", f"expected a JSON object like {example}")
    return document


def json_request(body: bytes, content_type: str, example: str, not_an_object: int = 400) -> dict[str, Any]:
    """``json_object`` of a body that must be sent as JSON (415 otherwise)."""
    require_json(content_type)
    return json_object(body, example, not_an_object)


def _parse_json(body: bytes, max_inputs: int) -> Call:
    document = json_object(body, '{"inputs": ...}')
    if "inputs" not in document:
        raise PayloadError(400, "missing_inputs", 'the JSON object has no "inputs" field')
    parameters = document.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise PayloadError(400, "invalid_parameters", '"parameters" must be a JSON object')
    inputs, single = _inputs(document["inputs"], "inputs", max_inputs, _check_input)
    stream = document.get("stream", False)
    if not isinstance(stream, bool):
        raise PayloadError(400, "invalid_request", '"stream" must be true or false')
    if stream and not (single and isinstance(inputs[0], str)):
        raise PayloadError(400, "invalid_request", 'streaming takes one string in "inputs"')
    kind = RequestKind.STREAM if stream else RequestKind.PIPELINE
    validate(document, "PipelineRequest", 400)  # the document's word (schemas.py): last, after the messages above
    return Call(kind, inputs, parameters, single)


def _inputs(raw: Any, field: str, max_inputs: int, check: Any) -> tuple[tuple[Any, ...], bool]:
    """(inputs, single): one input, or a non-empty list of at most max_inputs."""
    if isinstance(raw, list):
        if not raw:
            raise PayloadError(400, "empty_input", f'"{field}" is an empty list')
        if len(raw) > max_inputs:
            raise PayloadError(413, "too_many_inputs", f'"{field}" has {len(raw)} items; the limit is {max_inputs}')
        for index, value in enumerate(raw):
            check(value, f"{field}[{index}]")
        return tuple(raw), False
    check(raw, field)
    return (raw,), True


def require_json(content_type: str) -> None:
    if not is_json(content_type):
        raise PayloadError(415, "unsupported_media_type", "send application/json")


def parse_openai_embeddings(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /v1/embeddings``: OpenAI's request (input: str, [str], [int] or [[int]])."""
    require_json(content_type)
    document = json_object(body, '{"input": ..., "model": ...}')
    if "input" not in document:
        raise PayloadError(400, "missing_inputs", 'the JSON object has no "input" field')
    raw = document["input"]
    if isinstance(raw, list) and raw and all(is_integer(t) for t in raw):
        raw = [raw]  # one input given as token ids
    inputs, _ = _inputs(raw, "input", config.max_inputs, _check_text_or_tokens)
    encoding_format = document.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise PayloadError(400, "invalid_parameters", '"encoding_format" must be "float" or "base64"')
    dimensions = document.get("dimensions")
    if dimensions is not None and (not is_integer(dimensions) or dimensions < 1):
        raise PayloadError(400, "invalid_parameters", '"dimensions" must be a positive integer')
    model = document.get("model")
    if model is not None and not isinstance(model, str):
        raise PayloadError(400, "invalid_parameters", '"model" must be a string')
    options = EmbedOptions(
        dimensions=dimensions,
        response="openai",
        encoding_format=encoding_format,
        model_name=model or config.served_model_name,
    )
    validate(document, "OpenAICompatRequest", 400)
    return Call(RequestKind.EMBED, inputs, embed=options)


def is_integer(value: Any) -> bool:
    """A JSON integer (Python's bool is an int; JSON's true is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(400, "invalid_input" if not isinstance(value, str) else "empty_input",
                           f"{where} must be a non-empty string")


def _check_text_or_tokens(value: Any, where: str) -> None:
    if isinstance(value, list):
        if not value or not all(is_integer(t) for t in value):
            raise PayloadError(400, "invalid_input", f"{where} must be a string or a non-empty list of token ids")
        return
    _check_text(value, where)


def _check_input(value: Any, where: str) -> None:
    if isinstance(value, str):
        if not value.strip():
            raise PayloadError(400, "empty_input", f"{where} is an empty string")
        return
    if isinstance(value, dict) and value and all(
        isinstance(v, str) and v.strip() for v in value.values()
    ):
        return  # e.g. {"question": ..., "context": ...} or {"text", "text_pair"}
    raise PayloadError(
        400, "invalid_input", f"{where} must be a non-empty string (or an object of strings)"
    )
