"""sentence-transformers models through a real server: a decoder embedder
(Qwen2, last-token pooling, left padding, a default instruction prompt) on
``/embed``, ``/v1/embeddings`` and ``POST /``; a SPLADE model on
``/embed_sparse``; ``/similarity``; the wrong kind of route is TEI's 424
naming the right one; a module we do not implement stops start-up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import ServerProcess
from st_models import build_st_model, build_tiny_decoder

TEXTS = ["hello world", "a decoder embedder pads on the left", "x"]
PROMPTS = {"query": "Instruct: find passages\nQuery: ", "document": ""}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, splade_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("st-server")
    decoder = build_st_model(root / "decoder", build_tiny_decoder(root / "qwen2"), pooling="lasttoken",
                             normalize=True, prompts=PROMPTS, default_prompt_name="query", similarity_fn_name="dot")
    return {"decoder": decoder, "splade": splade_model}


@pytest.fixture(scope="module")
def servers(models: dict[str, Path], splade_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory):
    decoder = ServerProcess(["--model", str(models["decoder"]), "--long-inputs", "chunk"],
                            tmp_path_factory.mktemp("st-logs") / "decoder.log").start()
    yield {"decoder": decoder, "splade": splade_server}
    decoder.stop()


def test_a_decoder_embedder_answers_every_embedding_route_as_encode(models, servers) -> None:
    from sentence_transformers import SentenceTransformer

    server = servers["decoder"]
    st = SentenceTransformer(str(models["decoder"]), device="cpu")
    expected = st.encode(TEXTS)  # the default prompt: "query"
    embed = server.post_json({"inputs": TEXTS}, path="/embed")
    assert embed.status == 200, embed.body
    np.testing.assert_allclose(np.array(embed.json()), expected, atol=1e-4)
    openai = server.post_json({"input": TEXTS}, path="/v1/embeddings")
    np.testing.assert_allclose(np.array([d["embedding"] for d in openai.json()["data"]]), expected, atol=1e-4)
    root = server.post_json({"inputs": TEXTS}, path="/")
    np.testing.assert_allclose(np.array(root.json()), expected, atol=1e-4)
    document = server.post_json({"inputs": TEXTS, "prompt_name": "document"}, path="/embed")
    np.testing.assert_allclose(np.array(document.json()), st.encode(TEXTS, prompt_name="document"), atol=1e-4)
    info = server.get("/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "last_token"}}
    assert info["similarity_fn_name"] == "dot" and info["sparse"] is False and info["long_inputs"] == "chunk"


def test_similarity_scores_each_sentence_with_the_model_function(models, servers) -> None:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(models["decoder"]), device="cpu")
    body = {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}}
    response = servers["decoder"].post_json(body, path="/similarity")
    assert response.status == 200, response.body
    expected = st.similarity(st.encode(TEXTS[:1]), st.encode(TEXTS[1:])).numpy()[0]
    np.testing.assert_allclose(response.json(), expected, atol=1e-4)
    unknown = servers["decoder"].post_json({**body, "parameters": {"prompt_name": "nope"}}, path="/similarity")
    assert unknown.status == 422 and unknown.json()["error_type"] == "Validation"


def test_a_splade_model_serves_embed_sparse(models, servers) -> None:
    from sentence_transformers import SparseEncoder

    server = servers["splade"]
    response = server.post_json({"inputs": TEXTS}, path="/embed_sparse")
    assert response.status == 200, response.body
    expected = SparseEncoder(str(models["splade"]), device="cpu").encode(TEXTS).to_dense().numpy()
    got = np.zeros_like(expected)
    for row, weights in enumerate(response.json()):
        got[row, [w["index"] for w in weights]] = [w["value"] for w in weights]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # TEI's POST / on a SPLADE model is /embed_sparse; a raw text body is one input.
    assert server.post_json({"inputs": TEXTS}, path="/").json() == response.json()
    alone = server.post_json({"inputs": TEXTS[:1]}, path="/embed_sparse").json()  # the same batch's shape
    assert server.post_text(TEXTS[0]).json() == alone
    info = server.get("/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "splade"}} and info["sparse"] is True
    assert info["task"] == "sparse-embedding" and info["similarity_fn_name"] == "dot"


@pytest.mark.parametrize("path,body,names", [
    ("/embed", {"inputs": "x"}, "/embed_sparse"),
    ("/embed_all", {"inputs": "x"}, "/embed_sparse"),
])
def test_dense_routes_on_a_sparse_model_are_424_naming_the_route(servers, path, body, names) -> None:
    response = servers["splade"].post_json(body, path=path)
    assert response.status == 424 and names in response.json()["error"], response.body


def test_embed_sparse_on_a_dense_model_is_424_naming_embed(servers) -> None:
    response = servers["decoder"].post_json({"inputs": "x"}, path="/embed_sparse")
    assert response.status == 424 and "/embed" in response.json()["error"], response.body


def test_a_module_we_do_not_implement_stops_start_up(models, tmp_path: Path) -> None:
    modules = json.loads((models["decoder"] / "modules.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    for item in models["decoder"].iterdir():
        (bad / item.name).symlink_to(item)
    (bad / "modules.json").unlink()
    modules.insert(2, {"idx": 9, "name": "9", "path": "9_CNN", "type": "sentence_transformers.models.CNN"})
    (bad / "modules.json").write_text(json.dumps(modules))
    server = ServerProcess(["--model", str(bad)], tmp_path / "bad.log").start(wait_ready=False)
    assert server.process is not None and server.process.wait(90) == 2  # a model it cannot serve: the user's, exit 2
    assert "'sentence_transformers.models.CNN' is not one inferserve implements" in server.log()
    assert "Traceback" not in server.log()  # one line says why; the traceback only with --log-level debug
    server.stop()
