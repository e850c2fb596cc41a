"""Every route's request and response bodies as JSON Schema, in one place.

The parsers validate each JSON body with these schemas (jsonschema-rs: about
2 us for a small body, 10-20 us for 256 texts) and ``openapi.py``
puts the same dicts in ``/openapi.json``'s components: the document and the
parser cannot drift apart. The parsers' own checks run first and name the
error (status, kind and message, as before); the schema then has the last
word, so a body the document rejects is never accepted. What no schema can
say is left to documented error answers: more inputs than ``--max-inputs``
(413), and what the model refuses (too many tokens, an unknown prompt name,
more dimensions than it has, token ids outside its vocabulary: 422).
docs/design.md#openapi.

The schemas are JSON Schema 2020-12 (OpenAPI 3.1's dialect, the one they
are validated under here); references point into ``#/components/schemas/``,
where the document puts them. Patterns name their characters rather than
use ``\\s``, whose meaning differs between regex engines. TEI's names
(``EmbedRequest``, ``Input``, ``Rank``, ``ErrorResponse``, ...) are kept
where ours follow TEI's published document (tests/data/tei-openapi.json),
tightened where TEI answers 400 or 422 for what its schema lets through
(empty texts and lists, ids over u32).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema_rs

from .errors import RequestError
from .sparse_schemas import REQUEST_SCHEMAS as SPARSE_REQUESTS, RESPONSE_SCHEMAS as SPARSE_RESPONSES

REF = "#/components/schemas/"
MAX_TOKEN_ID = 2**32 - 1  # TEI's ids are u32


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _list(items: dict[str, Any], **more: Any) -> dict[str, Any]:
    """A non-empty list (every list of inputs is)."""
    return {"type": "array", "items": items, "minItems": 1, **more}


_BOOL = {"type": ["boolean", "null"]}
_STRING = {"type": ["string", "null"]}
# A text the parsers strip before refusing it as empty: a character that is not
# str.isspace() (every one of them, spelled out: \s differs between engines).
_NON_BLANK = {"type": "string",
              "pattern": r"[^\x09-\x0d\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028-\u2029\u202f\u205f\u3000]"}
_NON_EMPTY = {"type": "string", "minLength": 1}
_POSITIVE = {"type": ["integer", "null"], "minimum": 1}
_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer", "minimum": 0}

# TEI's options shared by /embed, /embed_all and POST / on a sentence-transformers model.
_TRUNCATION = {
    "truncate": {**_BOOL, "description": "Truncate inputs longer than the model takes (default: the server's "
                                         "--no-truncate); false answers 422 for them."},
    "truncation_direction": _or_null(ref("TruncationDirection")),
    "prompt_name": {**_STRING, "description": "A key of the model's sentence-transformers prompts (422 if none)."},
}
_EMBED_OPTIONS = {
    "normalize": {**_BOOL, "description": "L2-normalise (default true)."},
    "dimensions": {**_POSITIVE, "description": "Keep the first N dimensions (422 past the model's)."},
    **_TRUNCATION,
}
_RANK_OPTIONS = {
    "raw_scores": {**_BOOL, "description": "The logits instead of their sigmoid."},
    "truncate": _TRUNCATION["truncate"],
    "truncation_direction": _TRUNCATION["truncation_direction"],
}

# The HF Inference API's "options" (use_cache, wait_for_model): its clients send them; nothing here to change.
_API_OPTIONS = {"type": ["object", "null"], "description": "The inference API's options (use_cache, wait_for_model): "
                                                          "taken, no effect here."}
_PIPELINE_INPUT = {"anyOf": [
    _NON_BLANK,
    {"type": "object", "minProperties": 1, "additionalProperties": _NON_BLANK,
     "description": 'An object of strings, e.g. {"question": ..., "context": ...}'},
]}
_IDS = _list({"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID}, description="Token ids")
_INPUT_TYPE = {"anyOf": [_NON_EMPTY, _IDS], "description": "A text or its token ids"}
_OPENAI_IDS = _list({"type": "integer"}, description="Token ids")

REQUESTS: dict[str, dict[str, Any]] = {
    # ---- POST / (the Hugging Face inference API's convention) ----
    "TextBody": {**_NON_BLANK, "description": "One input, the body as it is (text/plain, form-encoded, "
                                                "octet-stream or no content type)."},
    "EmbedTextBody": {**_NON_EMPTY, "description": "One input, the body as it is."},
    "PipelineRequest": {
        "type": "object", "required": ["inputs"],
        "properties": {
            "inputs": {"anyOf": [_PIPELINE_INPUT, _list(_PIPELINE_INPUT)]},
            "parameters": {"type": ["object", "null"], "description": "The task's parameters (422 names one "
                                                                      "it does not take)."},
            "stream": {"type": "boolean", "description": "Server-Sent Events, one per token (text generation)."},
            "options": _API_OPTIONS,
        },
        # Streaming takes one string.
        "if": {"required": ["stream"], "properties": {"stream": {"const": True}}},
        "then": {"properties": {"inputs": {"type": "string"}}},
        "examples": [{"inputs": "paris is the [MASK] of france.", "parameters": {"top_k": 2}}],
    },
    "RootEmbedRequest": {
        "description": "POST / on a sentence-transformers model: /embed's body, whose options may also come "
                       'in "parameters" (the body\'s own win).',
        "type": "object", "required": ["inputs"],
        "properties": {"inputs": ref("Input"), "parameters": _or_null(ref("EmbedParameters")), **_EMBED_OPTIONS,
                       "stream": {"const": False, "description": "An embedding model does not stream (true: 422)."},
                       "options": _API_OPTIONS},
        "examples": [{"inputs": ["hello world"], "parameters": {"normalize": False}}],
    },
    "RootSentenceModelRequest": {
        "description": "POST / on a sentence-transformers model: /embed's body (RootEmbedRequest), or the "
                       "inference API's sentence-similarity body, /similarity's (inputs an object).",
        "anyOf": [ref("RootEmbedRequest"), ref("SimilarityRequest")],
        "examples": [{"inputs": ["hello world"], "parameters": {"normalize": False}},
                     {"inputs": {"source_sentence": "hello", "sentences": ["hello world", "goodbye"]}}],
    },
    "EmbedParameters": {"type": "object", "properties": _EMBED_OPTIONS},
    # ---- text-embeddings-inference ----
    "Input": {"anyOf": [_INPUT_TYPE, _list(_INPUT_TYPE)]},
    "InputIds": {"anyOf": [_IDS, _list(_IDS)]},
    "TokenizeInput": {"anyOf": [_NON_EMPTY, _list(_NON_EMPTY)]},
    "TruncationDirection": {
        "description": "Left or Right, in any case (default Right).",
        "anyOf": [{"type": "string", "pattern": "^[Ll][Ee][Ff][Tt]$", "maxLength": 4},
                  {"type": "string", "pattern": "^[Rr][Ii][Gg][Hh][Tt]$", "maxLength": 5}],
    },
    "EmbedRequest": {
        "type": "object", "required": ["inputs"], "properties": {"inputs": ref("Input"), **_EMBED_OPTIONS},
        "examples": [{"inputs": ["hello world", "inference servers"], "dimensions": 128}],
    },
    "EmbedAllRequest": {
        "type": "object", "required": ["inputs"], "properties": {"inputs": ref("Input"), **_TRUNCATION},
        "examples": [{"inputs": "hello world"}],
    },
    "TokenizeRequest": {
        "type": "object", "required": ["inputs"],
        "properties": {"inputs": ref("TokenizeInput"), "add_special_tokens": _BOOL,
                       "prompt_name": _TRUNCATION["prompt_name"]},
        "examples": [{"inputs": ["hello world"]}],
    },
    "DecodeRequest": {
        "type": "object", "required": ["ids"], "properties": {"ids": ref("InputIds"), "skip_special_tokens": _BOOL},
        "examples": [{"ids": [101, 7592, 2088, 102]}],
    },
    "RerankRequest": {
        "type": "object", "required": ["query", "texts"],
        "properties": {"query": _NON_BLANK, "texts": _list({"type": "string"}), "return_text": _BOOL,
                       **_RANK_OPTIONS},
        "examples": [{"query": "capital of france?", "texts": ["paris is in france", "bananas"]}],
    },
    "PredictInput": {"anyOf": [
        _NON_BLANK,
        {**_list(_NON_BLANK, maxItems=2), "description": "[text] or [text, text_pair]: one input"},
        {**_list(_list(_NON_BLANK, maxItems=2)), "description": "A batch of [text] or [text, text_pair]"},
    ]},
    "PredictRequest": {
        "type": "object", "required": ["inputs"], "properties": {"inputs": ref("PredictInput"), **_RANK_OPTIONS},
        "examples": [{"inputs": ["the movie was great", "I liked it"]}],
    },
    # ---- OpenAI's embeddings ----
    "OpenAICompatRequest": {
        "type": "object", "required": ["input"],
        "properties": {
            "input": {"anyOf": [_NON_BLANK, _OPENAI_IDS, _list({"anyOf": [_NON_BLANK, _OPENAI_IDS]})]},
            "model": {**_STRING, "description": "Echoed in the answer (default --served-model-name)."},
            "encoding_format": {"enum": ["float", "base64", None]},
            "dimensions": _POSITIVE,
            "user": {**_STRING, "description": "OpenAI's end-user id: taken, not used."},
        },
        "examples": [{"input": ["hello world"], "model": "sentence-transformers/all-MiniLM-L6-v2"}],
    },
    # ---- Cohere's (and Jina's) rerank ----
    "CohereRerankRequest": {
        "type": "object", "required": ["query", "documents"],
        "properties": {
            "model": {**_STRING, "description": "Echoed in the answer (default --served-model-name)."},
            "query": _NON_BLANK,
            "documents": _list({"anyOf": [{"type": "string"}, {"type": "object", "required": ["text"],
                                                                "properties": {"text": {"type": "string"}}}]}),
            "top_n": _POSITIVE,
            "return_documents": _BOOL,
        },
        "examples": [{"model": "my-reranker", "query": "capital of france?",
                      "documents": ["paris is in france", "bananas"], "top_n": 1}],
    },
}

REQUESTS.update(SPARSE_REQUESTS)  # TEI's /embed_sparse and /similarity (sparse_schemas.py)

# Strict bodies: a field a request schema does not list is refused (the
# parsers first name it: fields.only_known), not silently ignored.
for _schema in REQUESTS.values():
    if _schema.get("type") == "object" and "properties" in _schema:
        _schema.setdefault("additionalProperties", False)

_FLOATS = {"type": "array", "items": _NUMBER}
_PREDICTION = {"type": "object", "required": ["score", "label"],
               "properties": {"score": _NUMBER, "label": {"type": "string"}}}
_PREDICTIONS = {"type": "array", "items": _PREDICTION}
_USAGE = {"type": "object", "required": ["prompt_tokens", "total_tokens"],
          "properties": {"prompt_tokens": _INTEGER, "total_tokens": _INTEGER}}
_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}

RESPONSES: dict[str, dict[str, Any]] = {
    "PipelineOutput": {"description": "What the task's pipeline returns (fill-mask: [{score, token, token_str, "
                                      "sequence}], ...)."},
    "EmbedResponse": {"type": "array", "items": _FLOATS},
    "EmbedAllResponse": {"type": "array", "items": {"type": "array", "items": _FLOATS}},
    "SimpleToken": {
        "type": "object", "required": ["id", "text", "special"],
        "properties": {"id": _INTEGER, "text": {"type": "string"}, "special": {"type": "boolean"},
                       "start": {"type": ["integer", "null"], "minimum": 0, "description": "UTF-8 byte offset"},
                       "stop": {"type": ["integer", "null"], "minimum": 0}},
    },
    "TokenizeResponse": {"type": "array", "items": {"type": "array", "items": ref("SimpleToken")}},
    "DecodeResponse": {"type": "array", "items": {"type": "string"}},
    "Rank": {"type": "object", "required": ["index", "score"],
             "properties": {"index": _INTEGER, "score": _NUMBER, "text": {"type": "string"}}},
    "RerankResponse": {"type": "array", "items": ref("Rank")},
    "Prediction": _PREDICTION,
    "PredictResponse": {"anyOf": [_PREDICTIONS, {"type": "array", "items": _PREDICTIONS}]},
    "OpenAICompatResponse": {
        "type": "object", "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"const": "list"}, "model": {"type": "string"}, "usage": _USAGE,
            "data": {"type": "array", "items": {
                "type": "object", "required": ["object", "embedding", "index"],
                "properties": {"object": {"const": "embedding"}, "index": _INTEGER,
                               "embedding": {"anyOf": [_FLOATS, {"type": "string", "description": "base64: "
                                                                 "little-endian float32"}]}}}},
        },
    },
    "CohereRerankResponse": {
        "type": "object", "required": ["id", "results", "meta"],
        "properties": {
            "id": {"type": "string"}, "model": {"type": "string"}, "usage": _USAGE, "meta": {"type": "object"},
            "results": {"type": "array", "items": {
                "type": "object", "required": ["index", "relevance_score"],
                "properties": {"index": _INTEGER, "relevance_score": _NUMBER,
                               "document": {"type": "object", "required": ["text"],
                                            "properties": {"text": {"type": "string"}}}}}},
        },
    },
    "Health": _STATUS,
    "Ready": _STATUS,
    "Info": {
        "type": "object",
        "description": "TEI's Info fields, with TEI's meaning (served_model_name: the model's name; model_id: where it "
                       "was loaded from, a directory or a hub id; model_dtype: the precision served; "
                       "max_concurrent_requests: --max-queue; max_batch_tokens: the most padded tokens a batch "
                       "holds), and ours that TEI has no field for.",
        "required": ["task", "ready", "max_batch_size", "max_inputs", "versions", "served_model_name",
                     "model_id", "model_dtype", "max_concurrent_requests", "max_input_length",
                     "max_batch_tokens", "max_client_batch_size", "auto_truncate", "tokenization_workers",
                     "version"],
        "properties": {
            "task": _STRING, "device": _STRING, "engine": _STRING, "precision": {"type": ["object", "null"]},
            "cost_model": {"type": ["object", "null"]},
            "embedding_dimension": {"type": ["integer", "null"]}, "ready": {"type": "boolean"},
            "sparse": {"type": ["boolean", "null"]}, "similarity_fn_name": _STRING, "long_inputs": _STRING,
            "workers": _INTEGER, "max_batch_size": _INTEGER, "max_batch_delay_ms": _NUMBER,
            "batch_wait": {"enum": ["adaptive", "fixed"]}, "max_inputs": _INTEGER,
            "max_body_bytes": _INTEGER, "request_timeout_s": _NUMBER, "uptime_s": _NUMBER,
            "versions": {"type": "object", "additionalProperties": _STRING},
            "models": {"type": "array", "items": {"type": "string"}},
            # TEI's
            "model_id": {"type": "string"}, "served_model_name": {"type": "string"}, "model_sha": _STRING, "model_dtype": {"type": "string"},
            "model_type": _or_null(ref("ModelType")), "max_concurrent_requests": _INTEGER,
            "max_input_length": _INTEGER, "max_batch_tokens": _INTEGER,
            "max_batch_requests": {"type": ["integer", "null"], "minimum": 0},
            "max_client_batch_size": _INTEGER, "auto_truncate": {"type": "boolean"},
            "tokenization_workers": _INTEGER, "version": {"type": "string"}, "sha": _STRING,
            "docker_label": _STRING,
        },
        "additionalProperties": False,
    },
    "ModelType": {"oneOf": [
        {"type": "object", "required": ["embedding"], "properties": {"embedding": {
            "type": "object", "required": ["pooling"], "properties": {"pooling": {"type": "string"}}}}},
        {"type": "object", "required": ["classifier"], "properties": {"classifier": ref("ClassifierModel")}},
        {"type": "object", "required": ["reranker"], "properties": {"reranker": ref("ClassifierModel")}},
    ]},
    "ClassifierModel": {
        "type": "object", "required": ["id2label", "label2id"],
        "properties": {"id2label": {"type": "object", "additionalProperties": {"type": "string"}},
                       "label2id": {"type": "object", "additionalProperties": _INTEGER}},
    },
    "Model": {"type": "object", "required": ["id", "object", "created", "owned_by"],
              "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": _INTEGER,
                             "owned_by": {"type": "string"}}},
    "ModelList": {"type": "object", "required": ["object", "data"],
                  "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": ref("Model")}}},
    "OpenAPIDocument": {"type": "object", "required": ["openapi", "info", "paths"]},
    "Text": {"type": "string"},
    # ---- each API family's error ----
    "Error": {
        "description": "Ours: a message and its kind (invalid_json, empty_input, unavailable, ...).",
        "type": "object", "required": ["error", "type"], "additionalProperties": False,
        "properties": {"error": {"type": "string"}, "type": {"type": "string"}},
    },
    "OpenAIError": {
        "description": "OpenAI's error object, with TEI's OpenAICompatErrorResponse fields beside it.",
        "type": "object", "required": ["error", "message", "code", "error_type"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"], "additionalProperties": False,
            "properties": {"message": {"type": "string"},
                           "type": {"enum": ["invalid_request_error", "server_error"]},
                           "param": _STRING, "code": _STRING}},
            "message": {"type": "string"}, "code": {"type": "integer", "minimum": 0, "description": "The status"},
            "error_type": ref("ErrorType")},
    },
    "ErrorResponse": {
        "description": "text-embeddings-inference's.",
        "type": "object", "required": ["error", "error_type"], "additionalProperties": False,
        "properties": {"error": {"type": "string"}, "error_type": ref("ErrorType")},
    },
    "ErrorType": {"type": "string", "enum": ["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer",
                                             "Empty"]},
    "CohereError": {"description": "Cohere's.", "type": "object", "required": ["message"],
                    "additionalProperties": False, "properties": {"message": {"type": "string"}}},
}

RESPONSES.update(SPARSE_RESPONSES)  # TEI's /embed_sparse and /similarity (sparse_schemas.py)
SCHEMAS: dict[str, dict[str, Any]] = {**REQUESTS, **RESPONSES}
assert len(SCHEMAS) == len(REQUESTS) + len(RESPONSES), "a schema name is used twice"


@cache
def validator(name: str) -> jsonschema_rs.Validator:
    """The compiled check of one schema (its references resolved within SCHEMAS)."""
    return jsonschema_rs.Draft202012Validator({"$ref": REF + name, "components": {"schemas": SCHEMAS}})


def validate(document: Any, name: str, status: int, kind: str = "invalid_request") -> None:
    """RequestError(status, kind) unless ``document`` matches schema ``name``.
    Parsers call it after their own checks, which name the usual errors."""
    try:
        validator(name).validate(document)
    except jsonschema_rs.ValidationError as exc:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.instance_path)
        where = f"`{path.lstrip('.')}`" if path else "the body"
        # Not exc.message: it quotes the value, which can be the whole body.
        raise RequestError(status, kind, f"{where} does not match the {name} schema (see /openapi.json)") from None


def warm() -> None:
    """Compile every request schema now (about a millisecond each) rather than on its first request."""
    for name in REQUESTS:
        validator(name)
