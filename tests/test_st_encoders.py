"""sentence-transformers' SparseEncoder (SPLADE) and CrossEncoder, served
exactly: ``/embed_sparse`` weights equal ``SparseEncoder.encode()``,
``/similarity`` equals the model's ``similarity()``, ``/rerank`` scores
equal ``CrossEncoder.predict()`` (float32, within 1e-4). In-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from helpers import build_tiny_bert
from st_models import build_bert_base, build_cross_encoder, build_splade, build_st_model

TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog, again and again and again.", "x",
         "sparse retrieval with splade"]


@pytest.fixture(scope="module")
def mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("st") / "mlm", "BertForMaskedLM", seed=4)


def _run(task: Any, kind: Any, texts: list[str], **options: Any) -> bytes:
    from inferserve.ipc import Call, EmbedOptions

    call = Call(kind, tuple(texts), embed=EmbedOptions(**options))
    plan = task.plan(call)
    outputs = task.run(task.prepare_all([(t, plan.options) for t in texts]), plan.options)
    assert not any(isinstance(o, Exception) for o in outputs), outputs
    return task.encode(outputs, call, plan.options, 0)


def _sparse_task(model: Path) -> Any:
    import transformers

    from inferserve.model.tasks.sparse import SparseEmbeddingTask

    return SparseEmbeddingTask(transformers.pipeline("fill-mask", model=str(model), device="cpu"), str(model))


@pytest.mark.parametrize("pooling,legacy", [("max", False), ("sum", False), ("max", True)])
def test_embed_sparse_equals_sparse_encoder(mlm: Path, tmp_path: Path, pooling: str, legacy: bool) -> None:
    from sentence_transformers import SparseEncoder

    from inferserve.ipc import RequestKind

    model = build_splade(tmp_path / "splade", mlm, pooling=pooling, legacy=legacy)
    answer = orjson.loads(_run(_sparse_task(model), RequestKind.EMBED_SPARSE, TEXTS))
    expected = SparseEncoder(str(model), device="cpu").encode(TEXTS).to_dense().numpy()
    got = np.zeros_like(expected)
    for row, weights in enumerate(answer):
        indices = [w["index"] for w in weights]
        assert indices == sorted(indices) and all(w["value"] > 0 for w in weights)  # non-zero only
        got[row, indices] = [w["value"] for w in weights]
    assert 0 < (expected > 0).sum(axis=1).max() < expected.shape[1] // 2  # sparse, not empty
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("pooling,activation", [("max", "relu"), ("max", "log1p_relu"), ("sum", "relu"),
                                                ("sum", "log1p_relu")])
def test_splade_pooling_equals_sentence_transformers_on_padded_logits(padding_side: str, pooling: str,
                                                                      activation: str) -> None:
    """The pooling alone, where padding matters: rows of 7, 3, 5, 1 and 0 real
    tokens, one row's logits all negative (weights all 0), either side padded."""
    import torch
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    from inferserve.model.st_chain.reader import SpladeSpec
    from inferserve.model.st_chain.splade import splade_pool

    logits = torch.randn(5, 7, 50, generator=torch.Generator().manual_seed(0)) * 3
    logits[2] = -logits[2].abs() - 0.1
    mask = torch.zeros(5, 7, dtype=torch.long)
    for row, real in enumerate([7, 3, 5, 1, 0]):
        mask[row, slice(7 - real, 7) if padding_side == "left" else slice(0, real)] = 1
    st = SpladePooling(pooling_strategy=pooling, activation_function=activation).eval()
    with torch.inference_mode():
        expected = st({"token_embeddings": logits.clone(), "attention_mask": mask})["sentence_embedding"]
        got = splade_pool(logits, mask, SpladeSpec(pooling, activation))
    assert (expected[2] == 0).all() and (expected[4] == 0).all() and (expected[0] > 0).any()
    torch.testing.assert_close(got, expected)


def test_similarity_on_a_sparse_model_is_the_dot_product(mlm: Path, tmp_path: Path) -> None:
    from sentence_transformers import SparseEncoder

    from inferserve.ipc import RequestKind
    from inferserve.model.tasks.similarity import SimilarityTask

    model = build_splade(tmp_path / "splade", mlm)
    scores = orjson.loads(_run(SimilarityTask(_sparse_task(model)), RequestKind.SIMILARITY, TEXTS))
    st = SparseEncoder(str(model), device="cpu")
    expected = st.similarity(st.encode(TEXTS[:1]), st.encode(TEXTS[1:])).numpy()[0]
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_uses_the_model_similarity_function(tmp_path: Path, similarity: str) -> None:
    import transformers
    from sentence_transformers import SentenceTransformer

    from inferserve.ipc import RequestKind
    from inferserve.model.tasks.embeddings import SentenceEmbeddingTask
    from inferserve.model.tasks.similarity import SimilarityTask

    model = build_st_model(tmp_path / "m", build_bert_base(tmp_path / "bert"), similarity_fn_name=similarity)
    pipe = transformers.pipeline("feature-extraction", model=str(model), device="cpu")
    task = SimilarityTask(SentenceEmbeddingTask(pipe, str(model)))
    assert task.similarity == similarity
    scores = orjson.loads(_run(task, RequestKind.SIMILARITY, TEXTS))
    st = SentenceTransformer(str(model), device="cpu")
    expected = st.similarity(st.encode(TEXTS[:1]), st.encode(TEXTS[1:])).numpy()[0]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation,legacy", [(None, False), ("Identity", False), ("Tanh", True)])
def test_rerank_scores_equal_cross_encoder_predict(tmp_path: Path, activation: str | None, legacy: bool) -> None:
    import transformers
    from sentence_transformers import CrossEncoder

    from inferserve.ipc import Call, RequestKind, RerankOptions
    from inferserve.model.tasks import build_tasks

    base = build_tiny_bert(tmp_path / "base", "BertForSequenceClassification", seed=5, num_labels=1)
    model = build_cross_encoder(tmp_path / "ce", base, activation, max_length=12, legacy=legacy)
    pipe = transformers.pipeline("text-classification", model=str(model), device="cpu")
    rerank = build_tasks(pipe, "text-ranking", str(model), True, lambda message: None).batch[RequestKind.RERANK]
    query = "what is the quick brown fox doing"
    call = Call(RequestKind.RERANK, tuple(TEXTS), rerank=RerankOptions(query=query))
    plan = rerank.plan(call)
    outputs = rerank.run(rerank.prepare_all([(t, plan.options) for t in TEXTS]), plan.options)
    ranks = orjson.loads(rerank.encode(outputs, call, plan.options, 0))
    got = np.array([r["score"] for r in sorted(ranks, key=lambda r: r["index"])])
    expected = CrossEncoder(str(model), device="cpu").predict([(query, t) for t in TEXTS])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    if activation == "Identity":
        assert (got < 0).any() or (got > 1).any() or not np.allclose(got, 1 / (1 + np.exp(-got)))


def test_embed_sparse_on_onnx_runtime(mlm: Path, tmp_path: Path) -> None:
    """--engine onnx runs the MLM transformer; SPLADE pooling runs after it, checked on the final weights."""
    pytest.importorskip("onnxruntime")
    from sentence_transformers import SparseEncoder

    from inferserve.ipc import RequestKind
    from inferserve.model import engines
    from inferserve.model.precision import Calibration, Gate, verify_engine
    from inferserve.model.st_chain.calibration import final_vectors

    import transformers

    from inferserve.model.tasks.sparse import SparseEmbeddingTask

    model = build_splade(tmp_path / "splade", mlm)
    pipe = transformers.pipeline("fill-mask", model=str(model), device="cpu")
    candidate = engines.onnx_model(pipe, "sparse-embedding", str(model), str(tmp_path / "cache"), 1)
    calibration = Calibration(pipe, finish=final_vectors(str(model), "sparse-embedding", "cpu"))
    assert verify_engine(pipe, "sparse-embedding", candidate, Gate(), calibration=calibration) is not None
    assert pipe.model is candidate
    task = SparseEmbeddingTask(pipe, str(model))
    answer = orjson.loads(_run(task, RequestKind.EMBED_SPARSE, TEXTS))
    expected = SparseEncoder(str(model), device="cpu").encode(TEXTS).to_dense().numpy()
    got = np.zeros_like(expected)
    for row, weights in enumerate(answer):
        got[row, [w["index"] for w in weights]] = [w["value"] for w in weights]
    np.testing.assert_allclose(got, expected, atol=1e-4)
