"""text-embeddings-inference's ``/embed_sparse`` and ``/similarity``: their
request parsers, their schemas, and which route a model's kind serves.

``/embed_sparse`` takes ``/embed_all``'s body (inputs, ``truncate``,
``truncation_direction``, ``prompt_name``; no pooling options) and answers
``[[{"index", "value"}]]``, each input's non-zero weights. ``/similarity``
takes ``{"inputs": {"source_sentence", "sentences"}, "parameters": {...}}``
and answers one score per sentence. A sparse model's dense routes, and a
dense model's ``/embed_sparse``, are TEI's 424 naming the route to use.
"""

from __future__ import annotations

from ..common.config import ServerConfig
from ..ipc import Call, EmbedOptions, RequestKind, WorkerReady
from .errors import PayloadError
from .schemas import validate
from .tei import _document, _embed_inputs, _embed_options, _items, _required, _text

# The dense routes a sparse encoder does not serve.
_DENSE_KINDS = (RequestKind.EMBED, RequestKind.EMBED_ALL)


def parse_embed_sparse(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /embed_sparse``: TEI's EmbedSparseRequest."""
    document = _document(body, content_type)
    inputs = _embed_inputs(document, config)
    call = Call(RequestKind.EMBED_SPARSE, inputs, embed=_embed_options(document, pooled=False))
    validate(document, "EmbedSparseRequest", 422)
    return call


def parse_similarity(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /similarity``: TEI's SimilarityRequest; the call's inputs are
    ``(source_sentence, *sentences)``, each one batch item."""
    document = _document(body, content_type)
    pair = _required(document, "inputs")
    if not isinstance(pair, dict):
        raise PayloadError(422, "invalid_input", "`inputs` must be an object with source_sentence and sentences")
    source = _text(_required(pair, "source_sentence"), "inputs.source_sentence")
    raw = _required(pair, "sentences")
    if isinstance(raw, list) and len(raw) + 1 > config.max_inputs:
        raise PayloadError(413, "too_many_inputs",
                           f"batch size {len(raw) + 1} > maximum allowed batch size {config.max_inputs}")
    sentences = [_text(v, f"inputs.sentences[{i}]") for i, v in enumerate(_items(raw, "inputs.sentences", config))]
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise PayloadError(422, "invalid_parameters", "`parameters` must be an object")
    options = _embed_options(parameters or {}, pooled=False)
    validate(document, "SimilarityRequest", 422)
    return Call(RequestKind.SIMILARITY, (source, *sentences), embed=EmbedOptions(
        truncate=options.truncate, truncation_direction=options.truncation_direction,
        prompt_name=options.prompt_name))


def check_model_kind(call: Call, info: WorkerReady | None) -> None:
    """TEI's 424 (``not_supported``) when a sparse model gets a dense call or
    the reverse, naming the route that serves this model."""
    if info is None:
        return
    if info.sparse and call.kind in _DENSE_KINDS:
        raise PayloadError(400, "not_supported",
                           "this model is a sparse encoder (SPLADE): POST /embed_sparse serves it, not dense routes")
    if call.kind is RequestKind.EMBED_SPARSE and not info.sparse:
        route = "POST /embed" if info.embedding_dimension is not None else "its task's route"
        raise PayloadError(400, "not_supported", f"this model ({info.task}) is not a sparse encoder "
                                                 f"(SPLADE pooling); {route} serves it")
    if call.kind is RequestKind.SIMILARITY and info.similarity_fn_name is None:
        raise PayloadError(400, "not_supported", f"this model ({info.task}) does not produce sentence embeddings; "
                                                 "/similarity needs an embedding model")


def info_fields(worker: WorkerReady | None) -> dict[str, object]:
    """``/info``'s sentence-transformers fields: whether the model is sparse,
    its similarity function, and what ``--long-inputs`` does."""
    return {
        "sparse": worker.sparse if worker else None,
        "similarity_fn_name": worker.similarity_fn_name if worker else None,
        "long_inputs": worker.long_inputs if worker else None,
    }
