"""text-embeddings-inference's ``/embed_sparse`` and ``/similarity``: their
request parsers, and which route a model's kind serves.

``/embed_sparse`` takes ``/embed_all``'s body (inputs, ``truncate``,
``truncation_direction``, ``prompt_name``; no pooling options) and answers
``[[{"index", "value"}]]``, each input's non-zero weights. ``/similarity``
takes ``{"inputs": {"source_sentence", "sentences"}, "parameters": {...}}``
and answers one score per sentence; ``POST /`` on a sentence-transformers
model takes that body too (the inference API's sentence-similarity) beside
``/embed``'s, and on a SPLADE model is ``/embed_sparse`` (as TEI's; root.py
chooses). A sparse model's dense routes, and a dense model's
``/embed_sparse``, are TEI's 424 naming the route to use.
"""

from __future__ import annotations

from typing import Any

from ..common.config import ServerConfig
from ..ipc import Call, EmbedOptions, RequestKind, WorkerReady
from . import fields
from .errors import RequestError
from .fields import TEXT_CONTENT_TYPES
from .schemas import validate
from .tei import document_of, embed_inputs, embed_options, parse_root_embed, root_embed_call, root_text

# The dense routes a sparse encoder does not serve.
_DENSE_KINDS = (RequestKind.EMBED, RequestKind.EMBED_ALL)
_PAIR_FIELDS = ("source_sentence", "sentences")
_PARAMETERS = ("truncate", "truncation_direction", "prompt_name")


def parse_embed_sparse(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /embed_sparse``: TEI's EmbedSparseRequest."""
    document = document_of(body, content_type, schema)
    call = Call(RequestKind.EMBED_SPARSE, embed_inputs(document, config), embed=embed_options(document, pooled=False))
    fields.checked(document, schema)
    return call


def parse_root_sparse(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /`` on a SPLADE model, as TEI answers there: ``/embed_sparse``'s
    body, or a raw text body (one input)."""
    if content_type in TEXT_CONTENT_TYPES:
        return Call(RequestKind.EMBED_SPARSE, (root_text(body),), single=True, embed=embed_options({}, pooled=False))
    return parse_embed_sparse(body, content_type, config, schema)


def parse_similarity(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /similarity``: TEI's SimilarityRequest; the call's inputs are
    ``(source_sentence, *sentences)``, each one batch item."""
    document = document_of(body, content_type, schema)
    call = similarity_call(document, config)
    fields.checked(document, schema)
    return call


def parse_root(body: bytes, content_type: str, config: ServerConfig, schema: str) -> Call:
    """``POST /`` on a sentence-transformers model (``schema``: either body).
    The inference API's sentence-similarity body, ``inputs`` an object of
    ``source_sentence`` and ``sentences`` (huggingface_hub's
    ``InferenceClient.sentence_similarity`` sends it to the root), is
    ``/similarity``'s; a raw text or any other JSON is ``/embed``'s
    (``tei.parse_root_embed``)."""
    if content_type in TEXT_CONTENT_TYPES:
        return parse_root_embed(body, content_type, config, schema)
    document = fields.json_request(body, content_type, '{"inputs": ...}')
    if isinstance(document.get("inputs"), dict):
        fields.only_known(document, fields.known_fields("SimilarityRequest"))
        call = similarity_call(document, config)
    else:
        fields.only_known(document, fields.known_fields("RootEmbedRequest"))
        call = root_embed_call(document, config)
    validate(document, schema, 422)  # the document's word (schemas.py): last, after the messages above
    return call


def similarity_call(document: dict[str, Any], config: ServerConfig) -> Call:
    """A similarity body's Call: ``(source_sentence, *sentences)``."""
    pair = fields.required(document, "inputs")
    if not isinstance(pair, dict):
        raise fields.invalid("inputs", "an object with source_sentence and sentences")
    fields.only_known(pair, _PAIR_FIELDS, "inputs")
    source = fields.text(fields.required(pair, "source_sentence"), "inputs.source_sentence")
    raw = fields.required(pair, "sentences")
    # The source is a batch item too: it counts against the input limit.
    sentences = fields.each(fields.items(raw, "inputs.sentences", config.max_inputs - 1), "inputs.sentences",
                            fields.text)
    parameters: Any = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise fields.invalid("parameters", "an object")
    fields.only_known(parameters, _PARAMETERS, "parameters")
    options = embed_options(parameters, pooled=False)
    return Call(RequestKind.SIMILARITY, (source, *sentences), embed=EmbedOptions(
        truncate=options.truncate, truncation_direction=options.truncation_direction,
        prompt_name=options.prompt_name))


def check_model_kind(call: Call, info: WorkerReady | None) -> None:
    """TEI's 424 (``not_supported``) when a sparse model gets a dense call or
    the reverse, naming the route that serves this model."""
    if info is None:
        return
    if info.facts.sparse and call.kind in _DENSE_KINDS:
        raise RequestError(400, "not_supported",
                           "this model is a sparse encoder (SPLADE): POST /embed_sparse serves it, not dense routes")
    if call.kind is RequestKind.EMBED_SPARSE and not info.facts.sparse:
        route = "POST /embed" if info.facts.embedding_dimension is not None else "its task's route"
        raise RequestError(400, "not_supported", f"this model ({info.task}) is not a sparse encoder "
                                                 f"(SPLADE pooling); {route} serves it")
    if call.kind is RequestKind.SIMILARITY and info.facts.similarity_fn_name is None:
        raise RequestError(400, "not_supported", f"this model ({info.task}) does not produce sentence embeddings; "
                                                 "/similarity needs an embedding model")


def info_fields(worker: WorkerReady | None) -> dict[str, object]:
    """``/info``'s sentence-transformers fields: whether the model is sparse,
    its similarity function, and what ``--long-inputs`` does."""
    return {
        "sparse": worker.facts.sparse if worker else None,
        "similarity_fn_name": worker.facts.similarity_fn_name if worker else None,
        "long_inputs": worker.facts.long_inputs if worker else None,
    }
