"""Parse and validate inference request bodies (no aiohttp, no torch).

Two shapes are accepted on ``POST /``:
- a raw text body (``curl -d "test [MASK]"``: form-encoded or text/plain),
  which is one input with no parameters;
- JSON ``{"inputs": str | object | [str | object], "parameters": {...}}``,
  the Hugging Face inference API convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

# Content types whose body is taken verbatim as one text input. curl -d sends
# application/x-www-form-urlencoded; the classic Starlette example read the
# raw body whatever the type, so an absent type is text as well.
TEXT_CONTENT_TYPES = frozenset(
    {"", "text/plain", "application/x-www-form-urlencoded", "application/octet-stream"}
)


class PayloadError(Exception):
    """A client error in the request body: carries the HTTP status and kind."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class InferencePayload:
    inputs: tuple[Any, ...]
    parameters: dict[str, Any]
    single: bool  # one input sent: answer with one output, not a list


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def parse_inference_body(body: bytes, content_type: str, max_inputs: int) -> InferencePayload:
    if is_json(content_type):
        return _parse_json(body, max_inputs)
    if content_type in TEXT_CONTENT_TYPES:
        return InferencePayload(inputs=(_decode_text(body),), parameters={}, single=True)
    raise PayloadError(
        415,
        "unsupported_media_type",
        f"unsupported content type {content_type!r}: send application/json or a raw text body",
    )


def _decode_text(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(400, "invalid_encoding", f"body is not valid UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise PayloadError(400, "empty_input", "the request body is empty")
    return text


def _parse_json(body: bytes, max_inputs: int) -> InferencePayload:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(400, "invalid_json", f"malformed JSON: {exc.msg}") from exc
    if not isinstance(document, dict):
        raise PayloadError(400, "invalid_request", 'expected a JSON object like {"inputs": ...}')
    if "inputs" not in document:
        raise PayloadError(400, "missing_inputs", 'the JSON object has no "inputs" field')
    parameters = document.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise PayloadError(400, "invalid_parameters", '"parameters" must be a JSON object')
    raw_inputs = document["inputs"]
    if isinstance(raw_inputs, list):
        if not raw_inputs:
            raise PayloadError(400, "empty_input", '"inputs" is an empty list')
        if len(raw_inputs) > max_inputs:
            raise PayloadError(
                413, "too_many_inputs", f'"inputs" has {len(raw_inputs)} items; the limit is {max_inputs}'
            )
        for index, value in enumerate(raw_inputs):
            _check_input(value, f"inputs[{index}]")
        return InferencePayload(inputs=tuple(raw_inputs), parameters=parameters, single=False)
    _check_input(raw_inputs, "inputs")
    return InferencePayload(inputs=(raw_inputs,), parameters=parameters, single=True)


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
