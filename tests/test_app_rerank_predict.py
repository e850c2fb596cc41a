"""The parser's 4xx of /rerank, /v1 and /v2 rerank, /predict and OpenAI's
/v1/embeddings, in-process: each refused before the worker, in its route's
API family's shape. (They ran against real servers in test_rerank.py and
test_embeddings.py; what only a model can refuse stays there.)"""

from __future__ import annotations

from typing import Any

import pytest

from app_harness import CLASSIFIER, EMBEDDER, RERANKER, FakeBackend, error_message, post_json

QUERY = "what is the capital of france?"
DOCS = ["paris is the capital of france", "berlin is the capital of germany", "a cat sat on the mat"]
SERVES = {"/rerank": RERANKER, "/v1/rerank": RERANKER, "/v2/rerank": RERANKER, "/predict": CLASSIFIER,
          "/v1/embeddings": EMBEDDER}
# The flags the real servers of test_rerank.py ran with.
MAX_INPUTS = {"/rerank": 150, "/v1/rerank": 150, "/v2/rerank": 150, "/predict": 8, "/v1/embeddings": 8}

PARSE_ERRORS = [
    # (route, body, status, kind: ours, or OpenAI's code; TEI's error_type and Cohere's shape follow from it,
    #  a part of the message)
    ("/rerank", {"query": QUERY, "texts": []}, 422, "empty_input", '"texts" is empty'),
    ("/rerank", {"query": QUERY, "texts": ["x"] * 151}, 413, "too_many_inputs", "the limit is 150"),
    ("/rerank", {"texts": DOCS}, 422, "invalid_input", '"query" must be a non-empty string'),
    ("/rerank", {"query": QUERY, "texts": [1, 2]}, 422, "invalid_input", "texts[0] must be a string"),
    ("/rerank", {"query": QUERY, "texts": DOCS, "truncation_direction": "up"}, 422, "invalid_input",
     '"truncation_direction" must be "left" or "right"'),
    ("/v1/rerank", {"query": QUERY, "documents": []}, 422, "empty_input", '"documents" is empty'),
    ("/v1/rerank", {"query": QUERY, "documents": ["x"] * 151}, 413, "too_many_inputs", "the limit is 150"),
    ("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0}, 422, "invalid_input",
     '"top_n" must be a positive integer'),
    ("/v2/rerank", {"query": QUERY, "documents": [{"title": "no text"}]}, 422, "invalid_input",
     'documents[0] must be a string or an object with a "text" string'),
    ("/predict", {"inputs": []}, 422, "empty_input", '"inputs" is an empty list'),
    # A list of strings is one input: at most a pair.
    ("/predict", {"inputs": ["a", "b", "c"]}, 422, "invalid_input", "inputs must be [text] or [text, text_pair]"),
    ("/predict", {"inputs": [["a", "b", "c"]]}, 422, "invalid_input", "inputs[0] must be [text] or [text, text_pair]"),
    ("/predict", {"inputs": [["a"]] * 9}, 413, "too_many_inputs", "the limit is 8"),
    ("/predict", {"inputs": "x", "raw_scores": "yes"}, 422, "invalid_input", '"raw_scores" must be true or false'),
    ("/predict", {"text": "x"}, 422, "invalid_input", 'no "inputs" field'),
    ("/v1/embeddings", {"input": ""}, 400, "empty_input", "input must be a non-empty string"),
    ("/v1/embeddings", {"input": []}, 400, "empty_input", "input"),
    ("/v1/embeddings", {"input": [1.5]}, 400, "invalid_input", "input[0] must be a non-empty string"),
    ("/v1/embeddings", {"model": "m"}, 400, "missing_inputs", 'no "input" field'),
    ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, 400, "invalid_parameters", "encoding_format"),
    ("/v1/embeddings", {"input": "x", "dimensions": 0}, 400, "invalid_parameters", "dimensions"),
]


@pytest.mark.parametrize("path,body,status,kind,message", PARSE_ERRORS,
                         ids=[f"{row[0]} {i}" for i, row in enumerate(PARSE_ERRORS)])
def test_a_bad_body_is_refused_before_the_worker_in_its_apis_shape(
        path: str, body: dict[str, Any], status: int, kind: str, message: str) -> None:
    reply, backend = post_json(path, body, FakeBackend(info=SERVES[path]), max_inputs=MAX_INPUTS[path])
    assert message in error_message(path, reply, status, kind)
    assert backend.seen == []
