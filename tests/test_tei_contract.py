"""text-embeddings-inference's contract: its own OpenAPI document.

``tests/data/tei-openapi.json`` is TEI's published ``docs/openapi.json``
(version 1.9.3, from huggingface/text-embeddings-inference). A real server
on the default model answers valid and invalid requests on every TEI route
we serve; each answer's status must be one the document lists for that
operation, and its body must match the document's schema for that status.
Then schemathesis generates requests from the document itself.

``/v1/embeddings``' answers are checked too, errors included: they keep
OpenAI's error object (what the openai client parses) and carry TEI's
``{message, code, error_type}`` beside it, so both documents hold.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from helpers import ServerProcess, scrape

DOCUMENT_PATH = Path(__file__).parent / "data" / "tei-openapi.json"
DOCUMENT = json.loads(DOCUMENT_PATH.read_text())
# The TEI operations the default model serves (/embed_sparse: a SPLADE
# model's, checked below on one; /rerank and /predict are not ours here).
SERVED = ("/embed", "/embed_all", "/similarity", "/tokenize", "/decode", "/info", "/health", "/metrics")
LONG = "word " * 600


def _json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable: true`` becomes a
    ``null`` alternative (jsonschema does not know the keyword)."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _json_schema(v) for k, v in node.items()}
    if node.pop("nullable", False):
        if isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


COMPONENTS = _json_schema(DOCUMENT["components"])


def response_schema(method: str, path: str, status: int) -> dict[str, Any] | None:
    """The document's body schema for this answer; fails when the status is
    not one the document lists for the operation."""
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path}: status {status} is not in TEI's document ({sorted(responses)})"
    content = responses[str(status)].get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return None
    return {**_json_schema(copy.deepcopy(schema)), "components": COMPONENTS}


def check(server: ServerProcess, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
    """Send one request; validate the answer against the document; return its JSON."""
    if method == "GET":
        response = server.get(path)
    else:
        response = server.post_json(body, path=path)
    if expect is not None:
        assert response.status == expect, (path, body, response.status, response.body[:300])
    schema = response_schema(method, path, response.status)
    if schema is None:
        return None
    document = response.json()
    jsonschema.Draft7Validator(schema).validate(document)
    return document


VALID = [
    ("/embed", {"inputs": "What is Deep Learning?"}),
    ("/embed", {"inputs": ["hello world", "x"], "normalize": False}),
    ("/embed", {"inputs": [101, 7592, 2088, 102]}),
    ("/embed", {"inputs": [[101, 7592, 102], "mixed with text"]}),
    ("/embed", {"inputs": "x", "dimensions": 16, "truncate": True, "truncation_direction": "Left"}),
    ("/embed", {"inputs": LONG, "truncate": True, "truncation_direction": "right", "prompt_name": None}),
    ("/embed", {"inputs": "   "}),
    ("/embed_all", {"inputs": "hello world"}),
    ("/embed_all", {"inputs": ["hello world", [101, 102]], "truncate": True, "truncation_direction": "Right"}),
    ("/tokenize", {"inputs": "héllo world"}),
    ("/tokenize", {"inputs": ["hello world", "two"], "add_special_tokens": False}),
    ("/decode", {"ids": [101, 7592, 2088, 102]}),
    ("/similarity", {"inputs": {"source_sentence": "What is Deep Learning?", "sentences": ["ML?", "cats"]}}),
    ("/similarity", {"inputs": {"source_sentence": LONG, "sentences": ["x"]},
                     "parameters": {"truncate": True, "truncation_direction": "Left", "prompt_name": None}}),
    ("/decode", {"ids": [[101, 7592, 102], [2088]], "skip_special_tokens": False}),
]

INVALID = [
    ("/embed", {"inputs": []}, 400),
    ("/embed", {"inputs": ""}, 400),
    ("/embed", {"inputs": ["ok", ""]}, 400),
    ("/embed", {"inputs": [[]]}, 400),
    ("/embed", {}, 422),
    ("/embed", {"inputs": 5}, 422),
    ("/embed", {"inputs": [1.5]}, 422),
    ("/embed", {"inputs": "x", "dimensions": 0}, 422),
    ("/embed", {"inputs": "x", "dimensions": 10_000}, 422),
    ("/embed", {"inputs": "x", "normalize": "yes"}, 422),
    ("/embed", {"inputs": "x", "truncation_direction": "up"}, 422),
    ("/embed", {"inputs": "x", "prompt_name": "query"}, 422),  # the model names no prompts
    ("/embed", {"inputs": LONG, "truncate": False}, 422),
    ("/embed", {"inputs": [[2**31 - 1]]}, 422),
    ("/embed", {"inputs": ["x"] * 300}, 413),
    ("/embed_all", {"inputs": []}, 400),
    ("/embed_all", {"inputs": LONG, "truncate": False}, 422),
    ("/embed_all", {"inputs": "x", "prompt_name": "nope"}, 422),
    ("/tokenize", {"inputs": []}, 400),
    ("/tokenize", {"inputs": ""}, 400),
    ("/tokenize", {"inputs": [101, 102]}, 422),
    ("/tokenize", {"inputs": "x", "prompt_name": "nope"}, 422),
    ("/tokenize", {"inputs": "x", "add_special_tokens": 1}, 422),
    ("/decode", {"ids": []}, 400),
    ("/decode", {"ids": [[]]}, 400),
    ("/decode", {"ids": "hello"}, 422),
    ("/decode", {"ids": [-1]}, 422),
    ("/decode", {"ids": [10**9]}, 422),
    ("/decode", {}, 422),
    ("/embed", {"inputs": "x", "foo": 1}, 422),  # a field TEI does not document
    ("/similarity", {"inputs": {"source_sentence": "", "sentences": ["x"]}}, 400),
    ("/similarity", {"inputs": {"source_sentence": "x", "sentences": []}}, 400),
    ("/similarity", {"inputs": {"source_sentence": "x"}}, 422),
    ("/similarity", {"inputs": ["x", "y"]}, 422),
    ("/similarity", {"inputs": {"source_sentence": "x", "sentences": ["y"]}, "parameters": {"prompt_name": "q"}},
     422),
    ("/similarity", {"inputs": {"source_sentence": "x", "sentences": ["y"] * 300}}, 413),
    ("/similarity", {"inputs": {"source_sentence": "x", "sentences": ["y"], "foo": 1}}, 422),
]
OPENAI_INVALID = [
    ({"input": []}, 400),
    ({"input": 5}, 422),
    ({"input": "x", "foo": 1}, 422),
    ({"input": "x", "dimensions": 10_000}, 422),
    ({"input": ["x"] * 300}, 413),
]


@pytest.fixture(scope="module")
def server(default_model_server: ServerProcess) -> ServerProcess:
    return default_model_server


@pytest.mark.parametrize("path,body", VALID)
def test_valid_requests_get_the_documented_answer(server: ServerProcess, path: str, body: Any) -> None:
    check(server, "POST", path, body, expect=200)


@pytest.mark.parametrize("path,body,status", INVALID)
def test_invalid_requests_get_tei_errors(server: ServerProcess, path: str, body: Any, status: int) -> None:
    error = check(server, "POST", path, body, expect=status)
    assert error["error"] and error["error_type"] in ("Validation", "Empty", "Tokenizer")


@pytest.mark.parametrize("body,status", OPENAI_INVALID)
def test_openai_errors_hold_in_teis_document_and_openais(server: ServerProcess, body: Any, status: int) -> None:
    error = check(server, "POST", "/v1/embeddings", body, expect=status)
    assert error["code"] == status and error["message"] == error["error"]["message"]
    assert error["error"]["type"] == "invalid_request_error"


def test_malformed_json_is_400_in_tei_shape(server: ServerProcess) -> None:
    for path in ("/embed", "/embed_all", "/tokenize", "/decode"):
        response = server.request("POST", path, b'{"inputs": ', {"Content-Type": "application/json"})
        assert response.status == 400
        jsonschema.Draft7Validator(response_schema("POST", path, 400)).validate(response.json())


def test_info_is_tei_info(server: ServerProcess) -> None:
    info = check(server, "GET", "/info", expect=200)
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 256  # the model's max_seq_length
    assert info["model_dtype"] == "float32" and info["model_sha"] is None
    assert info["served_model_name"] == "sentence-transformers/all-MiniLM-L6-v2"  # its name; model_id: where from
    assert info["max_client_batch_size"] == 256 and info["auto_truncate"] is True
    assert info["max_batch_requests"] == 8 and info["max_batch_tokens"] == 8 * 256
    assert info["task"] == "feature-extraction"  # ours, beside TEI's


def test_health_and_openai_answers_follow_the_document(server: ServerProcess) -> None:
    check(server, "GET", "/health", expect=200)
    check(server, "POST", "/v1/embeddings", {"input": ["hello", "world"]}, expect=200)
    check(server, "POST", "/v1/embeddings", {"input": "hello", "encoding_format": "base64"}, expect=200)


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(server: ServerProcess, tmp_path: Path) -> None:
    """Requests generated from TEI's document (examples, coverage and
    fuzzing phases, positive and negative, 25 examples an operation)."""
    pytest.importorskip("schemathesis")
    before = scrape(server)
    paths = "|".join(p.lstrip("/") for p in SERVED)
    command = [
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "run", str(DOCUMENT_PATH), "--url", server.url,
        "--checks", "not_a_server_error,response_schema_conformance",
        "--include-path-regex", f"^/({paths})$",
        "--max-examples", "12", "--seed", "20", "--workers", "1",
        "--generation-database", "none", "--no-color",
    ]
    # In tmp_path: schemathesis keeps a .schemathesis/ cache in its working directory.
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # The server's own count: no 5xx, and no 424 (a failed inference) on any route.
    after = scrape(server)
    bad = {name: value - before.get(name, 0.0) for name, value in after.items()
           if name.startswith("inferserve_requests_total") and ('status="5' in name or 'status="424"' in name)}
    assert not {name: n for name, n in bad.items() if n}, bad


# ---- /embed_sparse, on a tiny SPLADE model ------------------------------------

SPARSE_VALID = [
    {"inputs": "What is Deep Learning?"},
    {"inputs": ["hello world", [101, 7592, 102]], "truncate": True, "truncation_direction": "Left"},
    {"inputs": LONG, "prompt_name": None},
]
SPARSE_INVALID = [({"inputs": []}, 400), ({"inputs": ""}, 400), ({}, 422), ({"inputs": 5}, 422),
                  ({"inputs": "x", "prompt_name": "nope"}, 422), ({"inputs": LONG, "truncate": False}, 422),
                  ({"inputs": ["x"] * 300}, 413)]


@pytest.fixture(scope="module")
def sparse_server(splade_server: ServerProcess) -> ServerProcess:
    return splade_server


def test_embed_sparse_follows_the_document(sparse_server: ServerProcess, server: ServerProcess) -> None:
    for body in SPARSE_VALID:
        answer = check(sparse_server, "POST", "/embed_sparse", body, expect=200)
        assert all(w["value"] != 0 for weights in answer for w in weights)
    for body, status in SPARSE_INVALID:
        error = check(sparse_server, "POST", "/embed_sparse", body, expect=status)
        assert error["error_type"] in ("Validation", "Empty", "Tokenizer")
    # The document's 424: a dense model's /embed_sparse, a sparse model's /embed.
    assert check(server, "POST", "/embed_sparse", {"inputs": "x"}, expect=424)["error_type"] == "Backend"
    assert check(sparse_server, "POST", "/embed", {"inputs": "x"}, expect=424)["error_type"] == "Backend"
    check(sparse_server, "POST", "/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}, expect=200)


@pytest.mark.timeout(300)
def test_schemathesis_on_embed_sparse(sparse_server: ServerProcess, tmp_path: Path) -> None:
    pytest.importorskip("schemathesis")
    command = [
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "run", str(DOCUMENT_PATH), "--url", sparse_server.url,
        "--checks", "not_a_server_error,response_schema_conformance",
        "--include-path-regex", "^/embed_sparse$",
        "--max-examples", "8", "--seed", "20", "--workers", "1",
        "--generation-database", "none", "--no-color",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
