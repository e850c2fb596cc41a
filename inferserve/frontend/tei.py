"""text-embeddings-inference's wire family: request parsers and /info fields.

The contract is TEI's published OpenAPI document (a copy in
``tests/data/tei-openapi.json``, version 1.9.3): ``/embed``, ``/embed_all``,
``/tokenize``, ``/decode``, ``/rerank`` and ``/predict`` take its request
bodies and answer with its shapes (built in the worker); their errors are
``responses.tei_error``. Statuses (``fields``): 400 for an empty input or
list (422 on ``/rerank`` and ``/predict``), 413 for more inputs than
``--max-inputs``, 422 for a body that is not the documented shape (a field
the route does not take included) or an input or option the model refuses
(too long without truncation, unknown ``prompt_name``, ``dimensions`` out
of range), 424 for a model that does not serve the route; malformed JSON
is 400, a non-JSON body 415.

Omitted options take TEI's defaults: ``normalize`` true,
``truncation_direction`` right (spelled ``Right``/``Left`` in the
document; any case accepted), ``truncate`` the server's
(``--no-truncate``), ``add_special_tokens`` and ``skip_special_tokens``
true. ``/predict`` reads ``inputs`` as TEI does: a string or a list of one
or two strings is one input (a text or a text pair); a list of lists is a
batch. Each (query, text) pair of ``/rerank`` is one input to the batcher.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..common.config import ServerConfig
from ..ipc import Call, EmbedOptions, RequestKind, RerankOptions, WorkerReady
from . import fields
from .errors import RequestError
from .fields import BODY, TEXT_CONTENT_TYPES
from .schemas import validate

_RANK_EMPTY = 422  # an empty list to rank or predict: 422, as it has been
_INPUT = "a string, a list of token ids, or a list of those"


def parse_embed(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /embed``: TEI's EmbedRequest."""
    document = document_of(body, content_type, schema)
    call = _embed_call(document, config)
    fields.checked(document, schema)  # the document's word (schemas.py), after the messages
    return call


def _embed_call(document: dict[str, Any], config: ServerConfig) -> Call:
    return Call(RequestKind.EMBED, embed_inputs(document, config), embed=embed_options(document, pooled=True))


def parse_embed_all(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /embed_all``: TEI's EmbedAllRequest (no pooling options)."""
    document = document_of(body, content_type, schema)
    inputs = embed_inputs(document, config)
    call = Call(RequestKind.EMBED_ALL, inputs, embed=embed_options(document, pooled=False))
    fields.checked(document, schema)
    return call


def parse_tokenize(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /tokenize``: TEI's TokenizeRequest (texts only, no token ids)."""
    document = document_of(body, content_type, schema)
    raw = fields.required(document, "inputs")
    if isinstance(raw, str):
        inputs: tuple[Any, ...] = (fields.text(raw, "inputs"),)
    else:
        inputs = fields.each(fields.items(raw, "inputs", config.max_inputs, "a string or a list"), "inputs",
                             fields.text)
    params = {
        "add_special_tokens": fields.boolean(document, "add_special_tokens", True),
        "prompt_name": fields.optional_text(document, "prompt_name"),
    }
    fields.checked(document, schema)
    return Call(RequestKind.TOKENIZE, inputs, params, single=isinstance(raw, str))


def parse_decode(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /decode``: TEI's DecodeRequest (``ids``: one id list or several)."""
    document = document_of(body, content_type, schema)
    raw = fields.required(document, "ids")
    single = isinstance(raw, list) and (not raw or not isinstance(raw[0], list))
    if single:
        inputs: tuple[Any, ...] = (fields.token_ids(raw, "ids"),)
    else:
        inputs = fields.each(fields.items(raw, "ids", config.max_inputs, "a list of token ids"), "ids",
                             fields.token_ids)
    params = {"skip_special_tokens": fields.boolean(document, "skip_special_tokens", True)}
    fields.checked(document, schema)
    return Call(RequestKind.DECODE, inputs, params, single=single)


def parse_root_embed(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /`` on a sentence-transformers model: what ``/embed`` answers
    (TEI's ``/`` on an embedding model; the HF Inference API's
    feature-extraction output for such models, one vector per input). A raw
    text body is one input; JSON is ``/embed``'s body, whose options may
    also come in ``"parameters"`` (the inference API's convention)."""
    if content_type in TEXT_CONTENT_TYPES:
        return Call(RequestKind.EMBED, (root_text(body),), single=True, embed=EmbedOptions(normalize=True))
    document = document_of(body, content_type, schema)
    call = root_embed_call(document, config)
    fields.checked(document, schema)
    return call


def root_text(body: bytes) -> str:
    """``POST /``'s raw text body on an embedding model: one input, not blank."""
    text = fields.text(fields.utf8(body), BODY)
    validate(text, "EmbedTextBody", 422)
    return text


def root_embed_call(document: dict[str, Any], config: ServerConfig) -> Call:
    """``POST /``'s JSON on a sentence-transformers model as ``/embed``'s,
    options from ``"parameters"`` too (its known fields checked here)."""
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise fields.invalid("parameters", "a JSON object")
    fields.only_known(parameters or {}, fields.known_fields("EmbedParameters"), "parameters")
    if fields.boolean(document, "stream", False):
        raise RequestError(422, "invalid_request",
                                  "this model (sentence embeddings) does not stream; streaming needs text-generation")
    return _embed_call({**(parameters or {}), **document}, config)


def parse_rerank(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /rerank``: TEI's RerankRequest."""
    document = document_of(body, content_type, schema)
    query = fields.text(fields.required(document, "query"), "query", _RANK_EMPTY, blank=True)
    raw = fields.items(fields.required(document, "texts"), "texts", config.max_inputs, "a list of strings",
                       _RANK_EMPTY)
    texts = fields.each(raw, "texts", _any_text)
    truncate, direction = fields.truncation(document)
    options = RerankOptions(
        query=query,
        raw_scores=fields.boolean(document, "raw_scores", False),
        return_text=fields.boolean(document, "return_text", False),
        truncate=truncate,
        truncate_left=direction == "left",
    )
    fields.checked(document, schema)
    return Call(RequestKind.RERANK, texts, rerank=options)


def parse_predict(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /predict``: TEI's PredictRequest; each input a text or a [text, text_pair]."""
    document = document_of(body, content_type, schema)
    inputs, single = _predict_inputs(fields.required(document, "inputs"), config.max_inputs)
    params: dict[str, Any] = {"raw_scores": fields.boolean(document, "raw_scores", False)}
    truncate, direction = fields.truncation(document)
    if truncate is not None:
        params["truncate"] = truncate
    if direction == "left":
        params["truncation_direction"] = "left"
    fields.checked(document, schema)
    return Call(RequestKind.PREDICT, inputs, params, single)


def info_fields(name: str, config: ServerConfig, worker: WorkerReady | None) -> dict[str, Any]:
    """TEI's Info fields (its schema's required ones and the nullable rest)
    of the model served as ``name`` (``served_model_name``; ``model_id``
    is what it was loaded from, TEI's --model-id: a directory or a hub id). ``model_type`` is null before a worker
    is ready and for tasks TEI does not serve (fill-mask, generation, ...);
    ``model_dtype`` is --dtype until the worker says what it chose."""
    max_input_length = (worker.facts.max_input_length if worker else None) or 0
    return {
        "model_id": worker.model if worker else config.model.model,
        "served_model_name": name,
        "model_sha": None,
        "model_dtype": worker.dtype if worker else config.model.dtype,
        "model_type": _model_type(worker),
        "max_concurrent_requests": config.max_queue,
        "max_input_length": max_input_length,
        # No --max-batch-tokens: the most a batch can hold (0 until the worker reports its longest input).
        "max_batch_tokens": config.batch.max_batch_tokens or config.batch.max_batch_size * max_input_length,
        "max_batch_requests": config.batch.max_batch_size,
        "max_client_batch_size": config.max_inputs,
        "auto_truncate": config.model.truncate,
        "tokenization_workers": config.workers,  # each worker tokenizes on its model thread
        "version": __version__,
        "sha": None,
        "docker_label": None,
    }


def _model_type(worker: WorkerReady | None) -> dict[str, Any] | None:
    if worker is None:
        return None
    if worker.facts.pooling is not None:
        return {"embedding": {"pooling": worker.facts.pooling}}
    if worker.facts.id2label is not None:
        labels = sorted(worker.facts.id2label.items())
        head = {"id2label": {str(i): label for i, label in labels}, "label2id": {label: i for i, label in labels}}
        # TEI: a sequence classifier with one output is a reranker.
        return {"reranker" if len(labels) == 1 else "classifier": head}
    return None


# ---- parsing helpers ---------------------------------------------------------


def document_of(body: bytes, content_type: str, schema: str) -> dict[str, Any]:
    """The JSON body, with no field its schema does not document."""
    document = fields.json_request(body, content_type, '{"inputs": ...}')
    fields.only_known(document, fields.known_fields(schema))
    return document


def embed_inputs(document: dict[str, Any], config: ServerConfig) -> tuple[Any, ...]:
    """TEI's Input: a string or a token-id list, or a list of those."""
    raw = fields.required(document, "inputs")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(fields.is_integer(v) for v in raw)):
        return (_embed_input(raw, "inputs"),)
    return fields.each(fields.items(raw, "inputs", config.max_inputs, _INPUT), "inputs", _embed_input)


def _embed_input(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return fields.text(value, where)
    if isinstance(value, list):
        return fields.token_ids(value, where)
    raise fields.invalid(where, "a string or a list of token ids")


def embed_options(document: dict[str, Any], pooled: bool) -> EmbedOptions:
    truncate, direction = fields.truncation(document)
    prompt_name = fields.optional_text(document, "prompt_name")
    if not pooled:
        return EmbedOptions(truncate=truncate, truncation_direction=direction, prompt_name=prompt_name)
    return EmbedOptions(
        normalize=fields.boolean(document, "normalize", True),
        dimensions=fields.positive_integer(document, "dimensions"),
        truncate=truncate,
        truncation_direction=direction,
        prompt_name=prompt_name,
    )


def _any_text(value: Any, where: str) -> str:
    """A text to rank (TEI ranks an empty one too)."""
    if not isinstance(value, str):
        raise fields.invalid(where, "a string")
    return value


def _predict_inputs(raw: Any, max_inputs: int) -> tuple[tuple[Any, ...], bool]:
    if isinstance(raw, str):
        return (fields.text(raw, "inputs", _RANK_EMPTY, blank=True),), True
    if not isinstance(raw, list):
        raise fields.invalid("inputs", "a string, a pair of strings or a list of them")
    if not raw:
        raise fields.empty("inputs", _RANK_EMPTY)
    if not isinstance(raw[0], list):  # a string or [text, text_pair]: one input
        return (_sequence(raw, "inputs"),), True
    return fields.each(fields.items(raw, "inputs", max_inputs), "inputs", _sequence), False


def _sequence(value: Any, where: str) -> Any:
    """[text] -> text; [text, text_pair] -> [text, text_pair]."""
    if not isinstance(value, list) or len(value) not in (1, 2) or not all(isinstance(v, str) for v in value):
        raise fields.invalid(where, '[text] or [text, text_pair]; a batch is a list of those, '
                                    '[["text"], ["text", "text_pair"], ...]')
    texts = [fields.text(v, where, _RANK_EMPTY, blank=True) for v in value]
    return texts[0] if len(texts) == 1 else texts
