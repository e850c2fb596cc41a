"""Property-based fuzzing of POST /: malformed requests never get a 5xx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ServerProcess, scrape

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
parameters = st.dictionaries(
    st.sampled_from(["top_k", "targets", "tokenizer_kwargs", "bogus", ""]), json_values, max_size=3
) | json_values
documents = st.one_of(
    json_values,  # anything at all
    st.fixed_dictionaries({"inputs": json_values}),
    st.fixed_dictionaries({"inputs": json_values, "parameters": parameters}),
    st.fixed_dictionaries({"inputs": st.text(max_size=60), "parameters": parameters}),
    st.fixed_dictionaries({"inputs": st.lists(st.text(max_size=30), max_size=20)}),
)
content_types = st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded", "image/png",
     "multipart/form-data", "application/json; charset=latin-1", ""]
)
bodies = st.one_of(
    documents.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(1, 200).map(lambda depth: b"[" * depth * 20 + b"]" * depth * 20),  # deep nesting
)


@pytest.fixture(scope="module")
def fuzz_server(fill_mask_model: Path, tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess(
        ["--model", str(fill_mask_model), "--max-body-bytes", "8192", "--max-inputs", "8"],
        tmp_path_factory.mktemp("logs") / "fuzz.log",
    ).start()
    yield server
    server.stop()


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=bodies, content_type=content_types)
def test_malformed_requests_never_get_a_5xx(fuzz_server: ServerProcess, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = fuzz_server.request("POST", "/", body, headers, timeout=30)
    assert response.status < 500, (response.status, response.body)
    if response.status != 200:
        error = json.loads(response.body)
        assert error["type"] and error["error"]


def test_after_the_fuzzing_the_worker_never_restarted_and_serves(fuzz_server: ServerProcess) -> None:
    samples = scrape(fuzz_server)
    assert samples["inferserve_worker_restarts_total"] == 0
    # (/ready answers 503 while the model loads: only the fuzzed route counts)
    server_errors = {k: v for k, v in samples.items()
                     if k.startswith('inferserve_requests_total{route="/",status="5')}
    assert not server_errors
    fuzzed = sum(v for k, v in samples.items() if k.startswith('inferserve_requests_total{route="/"'))
    assert fuzzed >= 500
    response = fuzz_server.post_text("after the storm [MASK]")
    assert response.status == 200 and len(response.json()) == 5
