"""The parser's 4xx of /rerank, /v1 and /v2 rerank and /predict, in-process:
each refused before the worker, in its route's API family's shape. (They ran
against real servers in test_rerank.py; what only a model can refuse stays
there.)"""

from __future__ import annotations

from typing import Any

import pytest

from app_harness import CLASSIFIER, RERANKER, FakeBackend, error_message, post_json

QUERY = "what is the capital of france?"
DOCS = ["paris is the capital of france", "berlin is the capital of germany", "a cat sat on the mat"]
SERVES = {"/rerank": RERANKER, "/v1/rerank": RERANKER, "/v2/rerank": RERANKER, "/predict": CLASSIFIER}
# The flags the real servers of test_rerank.py ran with.
MAX_INPUTS = {"/rerank": 150, "/v1/rerank": 150, "/v2/rerank": 150, "/predict": 8}

PARSE_ERRORS = [
    # (route, body, status, kind: ours, which TEI's error_type and Cohere's shape follow)
    ("/rerank", {"query": QUERY, "texts": []}, 422, "empty_input"),
    ("/rerank", {"query": QUERY, "texts": ["x"] * 151}, 413, "too_many_inputs"),
    ("/rerank", {"texts": DOCS}, 422, "invalid_input"),
    ("/rerank", {"query": QUERY, "texts": [1, 2]}, 422, "invalid_input"),
    ("/rerank", {"query": QUERY, "texts": DOCS, "truncation_direction": "up"}, 422, "invalid_input"),
    ("/v1/rerank", {"query": QUERY, "documents": []}, 422, "empty_input"),
    ("/v1/rerank", {"query": QUERY, "documents": ["x"] * 151}, 413, "too_many_inputs"),
    ("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0}, 422, "invalid_input"),
    ("/v2/rerank", {"query": QUERY, "documents": [{"title": "no text"}]}, 422, "invalid_input"),
    ("/predict", {"inputs": []}, 422, "empty_input"),
    ("/predict", {"inputs": ["a", "b", "c"]}, 422, "invalid_input"),  # a list of strings is one input: a pair at most
    ("/predict", {"inputs": [["a", "b", "c"]]}, 422, "invalid_input"),
    ("/predict", {"inputs": [["a"]] * 9}, 413, "too_many_inputs"),
    ("/predict", {"inputs": "x", "raw_scores": "yes"}, 422, "invalid_input"),
    ("/predict", {"text": "x"}, 422, "invalid_input"),
]


@pytest.mark.parametrize("path,body,status,kind", PARSE_ERRORS,
                         ids=[f"{row[0]} {i}" for i, row in enumerate(PARSE_ERRORS)])
def test_a_bad_body_is_refused_before_the_worker_in_its_apis_shape(
        path: str, body: dict[str, Any], status: int, kind: str) -> None:
    reply, backend = post_json(path, body, FakeBackend(info=SERVES[path]), max_inputs=MAX_INPUTS[path])
    error_message(path, reply, status, kind)  # the status, and the family's shape with a message
    assert backend.seen == []
