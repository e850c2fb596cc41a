"""The Hugging Face Inference API's wire family: ``POST /`` on a pipeline
task (a sentence-transformers model's ``POST /`` is TEI's: ``tei.py``).

Two shapes are accepted:
- a raw text body (``curl -d "test [MASK]"``: form-encoded or text/plain),
  which is one input with no parameters;
- JSON ``{"inputs": str | object | [str | object], "parameters": {...},
  "stream": bool}``; the task's parameters are checked by the worker (422
  naming one it does not take).
"""

from __future__ import annotations

from typing import Any

from ..common.config import ServerConfig
from ..ipc import Call, RequestKind
from . import fields
from .errors import RequestError
from .fields import BODY, TEXT_CONTENT_TYPES
from .schemas import validate


def parse_pipeline(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /``: a raw text body or the inference API's JSON (``schema``)."""
    if fields.is_json(content_type):
        return _parse_json(body, config.max_inputs, schema)
    if content_type in TEXT_CONTENT_TYPES:
        text = fields.text(fields.utf8(body), BODY, blank=True)
        validate(text, "TextBody", 400)
        return Call(RequestKind.PIPELINE, (text,), single=True)
    raise RequestError(
        415,
        "unsupported_media_type",
        f"unsupported content type {content_type!r}: send application/json or a raw text body",
    )


def _parse_json(body: bytes, max_inputs: int, schema: str) -> Call:
    document = fields.json_object(body, '{"inputs": ...}')
    fields.only_known(document, fields.known_fields(schema))
    raw = fields.required(document, "inputs")
    parameters = document.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise fields.invalid("parameters", "a JSON object")
    if isinstance(raw, list):
        inputs, single = fields.each(fields.items(raw, "inputs", max_inputs), "inputs", _input), False
    else:
        inputs, single = (_input(raw, "inputs"),), True
    stream = fields.boolean(document, "stream", False)
    if stream and not (single and isinstance(inputs[0], str)):
        raise fields.invalid("inputs", "one string when streaming")
    kind = RequestKind.STREAM if stream else RequestKind.PIPELINE
    fields.checked(document, schema)  # the document's word (schemas.py): last, after the messages above
    return Call(kind, inputs, parameters, single)


def _input(value: Any, where: str) -> Any:
    """A text, or an object of texts (``{"question": ..., "context": ...}``)."""
    if isinstance(value, dict) and value:
        for key, part in value.items():
            fields.text(part, f"{where}.{key}", blank=True)
        return value
    if isinstance(value, str):
        return fields.text(value, where, blank=True)
    raise fields.invalid(where, "a non-empty string (or an object of strings)")
