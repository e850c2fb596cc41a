"""Parse rerank and predict bodies into ``Call``s (no aiohttp, no torch).

- ``POST /rerank`` (TEI): ``{query, texts, truncate?, raw_scores?,
  return_text?, truncation_direction?}``.
- ``POST /v1/rerank``, ``POST /v2/rerank`` (Cohere's, and Jina's v1):
  ``{model, query, documents (strings, or objects with "text"), top_n?,
  return_documents?}``.
- ``POST /predict`` (TEI): ``{inputs: str | [str, str] | [[str] | [str, str], ...],
  raw_scores?, truncate?, truncation_direction?}``, read as TEI reads it: a
  string or a list of one or two strings is one input (a text or a text
  pair); a list of lists is a batch.

Malformed JSON is a 400; a body that parses but is not what the route takes
(a missing or mistyped field, no texts) is a 422, as TEI answers; more
texts than ``--max-inputs`` is a 413. Each (query, text) pair is one input
to the batcher.
"""

from __future__ import annotations

from typing import Any


from ..common.config import ServerConfig
from ..ipc import Call, RequestKind, RerankOptions, WorkerReady
from .errors import PayloadError
from .payload import Parser, is_integer, json_request
from .schemas import validate

# Which model tasks serve each of these kinds (the worker's build_tasks).
_SERVING_TASKS = {
    RequestKind.RERANK: ("text-ranking",),
    RequestKind.PREDICT: ("text-classification", "text-ranking"),
}


def check_served(call: Call, info: WorkerReady | None) -> None:
    """400 when the loaded model cannot answer this kind of call."""
    tasks = _SERVING_TASKS.get(call.kind)
    if tasks is None or info is None or info.task in tasks:
        return
    if call.kind is RequestKind.RERANK:
        need = "a cross-encoder (a sequence-classification model with one label, or --task text-ranking)"
        raise PayloadError(400, "not_supported", f"this model ({info.task}) does not rerank; that needs {need}")
    raise PayloadError(400, "not_supported",
                       f"this model ({info.task}) is not a sequence classifier; /predict needs text-classification")


def parse_rerank(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /rerank``: TEI's request."""
    document = _document(body, content_type, '{"query": ..., "texts": [...]}')
    query = _query(document)
    texts = _texts(document, "texts", config.max_inputs)
    truncate, left = _truncation(document)
    options = RerankOptions(
        query=query,
        raw_scores=_flag(document, "raw_scores"),
        return_text=_flag(document, "return_text"),
        response="tei",
        truncate=truncate,
        truncate_left=left,
    )
    validate(document, "RerankRequest", 422)  # the document's word (schemas.py), after the messages
    return Call(RequestKind.RERANK, texts, rerank=options)


def cohere_rerank_parser(api_version: str) -> Parser:
    """``POST /v1/rerank`` and ``/v2/rerank``: Cohere's request (Jina's too)."""

    def parse(body: bytes, content_type: str, config: ServerConfig) -> Call:
        document = _document(body, content_type, '{"model": ..., "query": ..., "documents": [...]}')
        query = _query(document)
        texts = _texts(document, "documents", config.max_inputs, objects=True)
        top_n = document.get("top_n")
        if top_n is not None and (not is_integer(top_n) or top_n < 1):
            raise _unprocessable('"top_n" must be a positive integer')
        model = document.get("model")
        if model is not None and not isinstance(model, str):
            raise _unprocessable('"model" must be a string')
        options = RerankOptions(
            query=query,
            return_text=_flag(document, "return_documents"),
            top_n=top_n,
            response="cohere",
            model_name=model or config.served_model_name,
            api_version=api_version,
        )
        validate(document, "CohereRerankRequest", 422)
        return Call(RequestKind.RERANK, texts, rerank=options)

    return parse


parse_cohere_rerank_v1 = cohere_rerank_parser("1")
parse_cohere_rerank_v2 = cohere_rerank_parser("2")


def parse_predict(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /predict``: TEI's request; each input a text or a [text, text_pair]."""
    document = _document(body, content_type, '{"inputs": ...}')
    if "inputs" not in document:
        raise _unprocessable('the JSON object has no "inputs" field')
    inputs, single = _predict_inputs(document["inputs"], config.max_inputs)
    params: dict[str, Any] = {"raw_scores": _flag(document, "raw_scores")}
    truncate, left = _truncation(document)
    if truncate is not None:
        params["truncate"] = truncate
    if left:
        params["truncation_direction"] = "left"
    validate(document, "PredictRequest", 422)
    return Call(RequestKind.PREDICT, inputs, params, single)


def _predict_inputs(raw: Any, max_inputs: int) -> tuple[tuple[Any, ...], bool]:
    if isinstance(raw, str):
        return (_text(raw, "inputs"),), True
    if not isinstance(raw, list):
        raise _unprocessable('"inputs" must be a string, a pair of strings or a list of them')
    if not raw:
        raise PayloadError(422, "empty_input", '"inputs" is an empty list')
    if not isinstance(raw[0], list):  # a string or [text, text_pair]: one input
        return (_sequence(raw, "inputs"),), True
    if len(raw) > max_inputs:
        raise PayloadError(413, "too_many_inputs", f'"inputs" has {len(raw)} items; the limit is {max_inputs}')
    return tuple(_sequence(item, f"inputs[{i}]") for i, item in enumerate(raw)), False


def _sequence(value: Any, where: str) -> Any:
    """[text] -> text; [text, text_pair] -> [text, text_pair]."""
    if not isinstance(value, list) or len(value) not in (1, 2) or not all(isinstance(v, str) for v in value):
        raise _unprocessable(
            f"{where} must be [text] or [text, text_pair]; a batch is a list of those, "
            '[["text"], ["text", "text_pair"], ...]'
        )
    texts = [_text(v, where) for v in value]
    return texts[0] if len(texts) == 1 else texts


# ---- shared field readers ---------------------------------------------------


def _document(body: bytes, content_type: str, example: str) -> dict[str, Any]:
    return json_request(body, content_type, example, not_an_object=422)


def _query(document: dict[str, Any]) -> str:
    query = document.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _unprocessable('"query" must be a non-empty string')
    return query


def _texts(document: dict[str, Any], field: str, max_inputs: int, objects: bool = False) -> tuple[str, ...]:
    """The texts to rank: a non-empty list of at most max_inputs strings (or,
    with ``objects``, of {"text": ...} objects as Cohere's v1 takes them)."""
    raw = document.get(field)
    if not isinstance(raw, list):
        raise _unprocessable(f'"{field}" must be a list of strings')
    if not raw:
        raise PayloadError(422, "empty_input", f'"{field}" is empty: there is nothing to rank')
    if len(raw) > max_inputs:
        raise PayloadError(413, "too_many_inputs", f'"{field}" has {len(raw)} items; the limit is {max_inputs}')
    texts = []
    for index, value in enumerate(raw):
        if objects and isinstance(value, dict):
            value = value.get("text")
        if not isinstance(value, str):
            shape = 'a string or an object with a "text" string' if objects else "a string"
            raise _unprocessable(f"{field}[{index}] must be {shape}")
        texts.append(value)
    return tuple(texts)


def _text(value: str, where: str) -> str:
    if not value.strip():
        raise PayloadError(422, "empty_input", f"{where} is an empty string")
    return value


def _flag(document: dict[str, Any], name: str) -> bool:
    value = document.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _unprocessable(f'"{name}" must be true or false')
    return value


def _truncation(document: dict[str, Any]) -> tuple[bool | None, bool]:
    """TEI's ``truncate`` (None: as --no-truncate says) and ``truncation_direction``."""
    truncate = document.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise _unprocessable('"truncate" must be true or false')
    direction = document.get("truncation_direction")
    if direction is None:
        return truncate, False
    if not isinstance(direction, str) or direction.lower() not in ("left", "right"):
        raise _unprocessable('"truncation_direction" must be "left" or "right"')
    return truncate, direction.lower() == "left"


def _unprocessable(message: str) -> PayloadError:
    return PayloadError(422, "invalid_request", message)
