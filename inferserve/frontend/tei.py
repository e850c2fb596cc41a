"""text-embeddings-inference's API: request parsers and /info fields.

The contract is TEI's published OpenAPI document (a copy in
``tests/data/tei-openapi.json``, version 1.9.3): ``/embed``, ``/embed_all``,
``/tokenize`` and ``/decode`` take its request bodies and answer with its
shapes (built in the worker); their errors are ``responses.tei_error``.
TEI's statuses: 400 for an empty input or list, 413 for more inputs than
``--max-inputs``, 422 for a body that is not the documented shape or an
input or option the model refuses (too long without truncation, unknown
``prompt_name``, ``dimensions`` out of range), 424 for a model that does
not serve the route; malformed JSON is 400, a non-JSON body 415.

Unknown fields are ignored, as TEI (serde) does. Omitted options take TEI's
defaults: ``normalize`` true, ``truncation_direction`` right (spelled
``Right``/``Left`` in the document; any case accepted), ``truncate`` the
server's (``--no-truncate``), ``add_special_tokens`` and
``skip_special_tokens`` true.
"""

from __future__ import annotations

from typing import Any


from .. import __version__
from ..common.config import ServerConfig
from ..ipc import Call, EmbedOptions, RequestKind, WorkerReady
from .errors import PayloadError
from .payload import TEXT_CONTENT_TYPES, is_integer, json_request, utf8
from .schemas import validate

_MAX_TOKEN_ID = 2**32 - 1  # TEI's ids are u32


def parse_embed(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /embed``: TEI's EmbedRequest."""
    document = _document(body, content_type)
    call = _embed_call(document, config)
    validate(document, "EmbedRequest", 422)  # the document's word (schemas.py), after the messages
    return call


def _embed_call(document: dict[str, Any], config: ServerConfig) -> Call:
    return Call(RequestKind.EMBED, _embed_inputs(document, config), embed=_embed_options(document, pooled=True))


def parse_embed_all(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /embed_all``: TEI's EmbedAllRequest (no pooling options)."""
    document = _document(body, content_type)
    inputs = _embed_inputs(document, config)
    call = Call(RequestKind.EMBED_ALL, inputs, embed=_embed_options(document, pooled=False))
    validate(document, "EmbedAllRequest", 422)
    return call


def parse_tokenize(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /tokenize``: TEI's TokenizeRequest (texts only, no token ids)."""
    document = _document(body, content_type)
    raw = _required(document, "inputs")
    if isinstance(raw, str):
        inputs: tuple[Any, ...] = (_text(raw, "inputs"),)
    else:
        inputs = tuple(_text(v, f"inputs[{i}]") for i, v in enumerate(_items(raw, "inputs", config)))
    params = {
        "add_special_tokens": _bool(document, "add_special_tokens", True),
        "prompt_name": _optional_str(document, "prompt_name"),
    }
    validate(document, "TokenizeRequest", 422)
    return Call(RequestKind.TOKENIZE, inputs, params, single=isinstance(raw, str))


def parse_decode(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /decode``: TEI's DecodeRequest (``ids``: one id list or several)."""
    document = _document(body, content_type)
    raw = _required(document, "ids")
    single = isinstance(raw, list) and (not raw or not isinstance(raw[0], list))
    if single:
        inputs: tuple[Any, ...] = (_ids(raw, "ids"),)
    else:
        inputs = tuple(_ids(v, f"ids[{i}]") for i, v in enumerate(_items(raw, "ids", config)))
    params = {"skip_special_tokens": _bool(document, "skip_special_tokens", True)}
    validate(document, "DecodeRequest", 422)
    return Call(RequestKind.DECODE, inputs, params, single=single)


def parse_root_embed(body: bytes, content_type: str, config: ServerConfig) -> Call:
    """``POST /`` on a sentence-transformers model: what ``/embed`` answers
    (TEI's ``/`` on an embedding model; the HF Inference API's
    feature-extraction output for such models, one vector per input). A raw
    text body is one input; JSON is ``/embed``'s body, whose options may
    also come in ``"parameters"`` (the inference API's convention)."""
    if content_type in TEXT_CONTENT_TYPES:
        text = utf8(body)
        validate(_text(text, "the body"), "EmbedTextBody", 422)
        return Call(RequestKind.EMBED, (text,), single=True, embed=EmbedOptions(normalize=True))
    document = _document(body, content_type)
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise PayloadError(422, "invalid_parameters", '"parameters" must be a JSON object')
    call = _embed_call({**(parameters or {}), **document}, config)
    validate(document, "RootEmbedRequest", 422)
    return call


def info_fields(config: ServerConfig, worker: WorkerReady | None) -> dict[str, Any]:
    """TEI's Info fields (its schema's required ones and the nullable rest).
    ``model_type`` is null before a worker is ready and for tasks TEI does
    not serve (fill-mask, generation, ...)."""
    max_input_length = (worker.max_input_length if worker else None) or 0
    return {
        "model_id": config.model.model,
        "model_sha": None,
        "model_dtype": worker.dtype if worker else config.model.dtype,
        "model_type": _model_type(worker),
        "max_concurrent_requests": config.max_queue,
        "max_input_length": max_input_length,
        # No --max-batch-tokens: the most a batch can hold.
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
    if worker.pooling is not None:
        return {"embedding": {"pooling": worker.pooling}}
    if worker.id2label is not None:
        labels = sorted(worker.id2label.items())
        head = {"id2label": {str(i): label for i, label in labels}, "label2id": {label: i for i, label in labels}}
        # TEI: a sequence classifier with one output is a reranker.
        return {"reranker" if len(labels) == 1 else "classifier": head}
    return None


# ---- parsing helpers ---------------------------------------------------------


def _document(body: bytes, content_type: str) -> dict[str, Any]:
    return json_request(body, content_type, '{"inputs": ...}', not_an_object=422)


def _required(document: dict[str, Any], name: str) -> Any:
    if document.get(name) is None:
        raise PayloadError(422, "missing_inputs", f"missing field `{name}`")
    return document[name]


def _items(raw: Any, field: str, config: ServerConfig) -> list[Any]:
    """A batch: a non-empty list of at most --max-inputs items."""
    if not isinstance(raw, list):
        raise PayloadError(422, "invalid_input", f"`{field}` must be a string or a list")
    if not raw:
        raise PayloadError(400, "empty_input", f"`{field}` cannot be empty")
    if len(raw) > config.max_inputs:
        raise PayloadError(
            413, "too_many_inputs", f"batch size {len(raw)} > maximum allowed batch size {config.max_inputs}"
        )
    return raw


def _embed_inputs(document: dict[str, Any], config: ServerConfig) -> tuple[Any, ...]:
    """TEI's Input: a string or a token-id list, or a list of those."""
    raw = _required(document, "inputs")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(is_integer(v) for v in raw)):
        return (_embed_input(raw, "inputs"),)
    return tuple(_embed_input(v, f"inputs[{i}]") for i, v in enumerate(_items(raw, "inputs", config)))


def _embed_input(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return _text(value, where)
    if isinstance(value, list):
        return _ids(value, where)
    raise PayloadError(422, "invalid_input", f"`{where}` must be a string or a list of token ids")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(422, "invalid_input", f"`{where}` must be a string")
    if not value:
        raise PayloadError(400, "empty_input", f"`{where}` cannot be empty")
    return value


def _ids(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(is_integer(v) for v in value):
        raise PayloadError(422, "invalid_input", f"`{where}` must be a list of token ids")
    if not value:
        raise PayloadError(400, "empty_input", f"`{where}` cannot be empty")
    if not all(0 <= v <= _MAX_TOKEN_ID for v in value):
        raise PayloadError(422, "invalid_input", f"`{where}`: token ids must be non-negative 32-bit integers")
    return value


def _embed_options(document: dict[str, Any], pooled: bool) -> EmbedOptions:
    direction = document.get("truncation_direction")
    if direction is None:
        direction = "right"
    elif not isinstance(direction, str) or direction.lower() not in ("left", "right"):
        raise PayloadError(422, "invalid_parameters", "`truncation_direction` must be Left or Right")
    truncate = document.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise PayloadError(422, "invalid_parameters", "`truncate` must be true, false or null")
    options = EmbedOptions(
        response="tei",
        truncate=truncate,
        truncation_direction=direction.lower(),
        prompt_name=_optional_str(document, "prompt_name"),
    )
    if not pooled:
        return options
    dimensions = document.get("dimensions")
    if dimensions is not None and (not is_integer(dimensions) or dimensions < 1):
        raise PayloadError(422, "invalid_parameters", "`dimensions` should be a positive integer")
    return EmbedOptions(
        normalize=_bool(document, "normalize", True),
        dimensions=dimensions,
        response="tei",
        truncate=truncate,
        truncation_direction=options.truncation_direction,
        prompt_name=options.prompt_name,
    )


def _bool(document: dict[str, Any], name: str, default: bool) -> bool:
    value = document.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise PayloadError(422, "invalid_parameters", f"`{name}` must be true or false")
    return value


def _optional_str(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is not None and not isinstance(value, str):
        raise PayloadError(422, "invalid_parameters", f"`{name}` must be a string")
    return value
