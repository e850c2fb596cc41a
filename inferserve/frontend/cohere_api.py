"""Cohere's wire family (Jina's rerank too): ``POST /v1/rerank`` and
``/v2/rerank``, ``{model, query, documents (strings, or objects with
"text"), top_n?, return_documents?}``. Fields Cohere documents that are not
served here (``rank_fields``, ``max_chunks_per_doc``, ``max_tokens_per_doc``)
are a 422 saying so; any other unknown field a 422 naming it. Errors are
Cohere's ``{"message"}``; an empty ``documents`` is a 422, as it was."""

from __future__ import annotations

from typing import Any

from ..common.config import ServerConfig
from ..ipc import AnswerShape, Call, RequestKind, RerankOptions
from . import fields
from .errors import RequestError
from .fields import Parser

_EMPTY_STATUS = 422
# Cohere's documented fields that change the ranking in ways not served here.
_NOT_SERVED = ("rank_fields", "max_chunks_per_doc", "max_tokens_per_doc")


def cohere_rerank_parser(api_version: str) -> Parser:
    """``POST /v1/rerank`` (``api_version`` "1") and ``/v2/rerank`` ("2")."""

    def parse(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
        document = fields.json_request(body, content_type, '{"model": ..., "query": ..., "documents": [...]}')
        for name in _NOT_SERVED:
            if document.get(name) is not None:
                raise RequestError(422, "unknown_field", f"`{name}` (Cohere's) is not served here")
        fields.only_known(document, fields.known_fields(schema))
        query = fields.text(fields.required(document, "query"), "query", _EMPTY_STATUS, blank=True)
        raw = fields.items(fields.required(document, "documents"), "documents", config.max_inputs,
                           "a list of strings", _EMPTY_STATUS)
        texts = fields.each(raw, "documents", _document_text)
        options = RerankOptions(
            query=query,
            return_text=fields.boolean(document, "return_documents", False),
            top_n=fields.positive_integer(document, "top_n"),
            response=AnswerShape.COHERE,
            model_name=fields.optional_text(document, "model") or config.served_model_name,
            api_version=api_version,
        )
        fields.checked(document, schema)
        return Call(RequestKind.RERANK, texts, rerank=options)

    return parse


def _document_text(value: Any, where: str) -> str:
    """A document: a string, or (Cohere's v1, Jina's) an object with a "text"."""
    if isinstance(value, dict):
        value = value.get("text")
        where += ".text"
    if not isinstance(value, str):
        raise fields.invalid(where, 'a string or an object with a "text" string')
    return value


parse_cohere_rerank_v1 = cohere_rerank_parser("1")
parse_cohere_rerank_v2 = cohere_rerank_parser("2")
