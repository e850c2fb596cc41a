"""The JSON schemas of TEI's ``/embed_sparse`` and ``/similarity`` (the
shapes of TEI's published document), merged into ``schemas.SCHEMAS``."""

from __future__ import annotations

from typing import Any

_SPARSE_VALUE = {"type": "object", "required": ["index", "value"],
                 "properties": {"index": {"type": "integer", "minimum": 0}, "value": {"type": "number"}}}
_OPTIONS = {
    "truncate": {"type": ["boolean", "null"]},
    "truncation_direction": {"anyOf": [{"$ref": "#/components/schemas/TruncationDirection"}, {"type": "null"}]},
    "prompt_name": {"type": ["string", "null"]},
}
REQUEST_SCHEMAS: dict[str, dict[str, Any]] = {
    "EmbedSparseRequest": {"type": "object", "required": ["inputs"],
                           "properties": {"inputs": {"$ref": "#/components/schemas/Input"}, **_OPTIONS}},
    "SimilarityRequest": {
        "type": "object", "required": ["inputs"],
        "properties": {
            "inputs": {"type": "object", "required": ["source_sentence", "sentences"], "additionalProperties": False,
                       "properties": {"source_sentence": {"type": "string", "minLength": 1},
                                      "sentences": {"type": "array", "minItems": 1,
                                                    "items": {"type": "string", "minLength": 1}}}},
            "parameters": {"anyOf": [{"type": "object", "properties": _OPTIONS, "additionalProperties": False},
                                     {"type": "null"}]},
        },
        "examples": [{"inputs": {"source_sentence": "What is Deep Learning?",
                                 "sentences": ["What is Machine Learning?"]}}],
    },
}
RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "EmbedSparseResponse": {"type": "array", "items": {"type": "array", "items": _SPARSE_VALUE}},
    "SimilarityResponse": {"type": "array", "items": {"type": "number"}},
}
