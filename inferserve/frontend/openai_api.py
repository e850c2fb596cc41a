"""OpenAI's wire family: ``POST /v1/embeddings`` (the ``openai`` client's
request: ``input`` a string, a list of strings, token ids or lists of
them; ``model``, ``encoding_format``, ``dimensions``, ``user``)."""

from __future__ import annotations

from typing import Any

from ..common.config import ServerConfig
from ..ipc import AnswerShape, Call, EmbedOptions, RequestKind
from . import fields

_SHOULD = "a string, a list of strings, or token ids"


def parse_openai_embeddings(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /v1/embeddings``. With one model, any ``model`` is answered by
    it and echoed (docs/api.md#openai); with several, it chooses one."""
    document = fields.json_request(body, content_type, '{"input": ..., "model": ...}')
    fields.only_known(document, fields.known_fields(schema))
    raw = fields.required(document, "input")
    if isinstance(raw, list) and raw and all(fields.is_integer(t) for t in raw):
        inputs: tuple[Any, ...] = (_text_or_tokens(raw, "input"),)  # one input given as token ids
    elif isinstance(raw, list):
        inputs = fields.each(fields.items(raw, "input", config.max_inputs, _SHOULD), "input", _text_or_tokens)
    elif isinstance(raw, str):
        inputs = (fields.text(raw, "input", blank=True),)
    else:
        raise fields.invalid("input", _SHOULD)
    encoding_format = document.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise fields.invalid("encoding_format", '"float" or "base64"')
    options = EmbedOptions(
        dimensions=fields.positive_integer(document, "dimensions"),
        response=AnswerShape.OPENAI,
        encoding_format=encoding_format,
        model_name=fields.optional_text(document, "model") or config.served_model_name,
    )
    fields.optional_text(document, "user")
    fields.checked(document, schema)
    return Call(RequestKind.EMBED, inputs, embed=options)


def _text_or_tokens(value: Any, where: str) -> Any:
    if isinstance(value, list):
        if not value or not all(fields.is_integer(t) for t in value):
            raise fields.invalid(where, "a string or a non-empty list of token ids")
        return value
    if not isinstance(value, str):
        raise fields.invalid(where, "a string or a non-empty list of token ids")
    return fields.text(value, where, blank=True)
