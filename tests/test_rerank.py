"""Reranking with a cross-encoder (TEI's /rerank, Cohere's and Jina's /v1 and
/v2 rerank) and TEI's /predict on a classifier, against a real server; every
score is checked against the model run directly with transformers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import ServerProcess, build_tiny_bert, scrape, start_together, stop_all

QUERY = "what is the capital of france?"
DOCS = [
    "paris is the capital of france",
    "berlin is the capital of germany",
    "a cat sat on the mat",
    "the eiffel tower is in paris",
    "capital cities of europe",
    "bananas are yellow",
]
SENTIMENT = {0: "negative", 1: "neutral", 2: "positive"}
MAX_POSITIONS = 128  # build_tiny_bert's max_position_embeddings
TOKEN_BUDGET = 512  # a bucket boundary of inferserve_batch_padded_tokens


@pytest.fixture(scope="module")
def cross_encoder(models_dir: Path) -> Path:
    # initializer_range 0.5: logits far enough apart that the order is the model's, not float noise.
    return build_tiny_bert(models_dir / "tiny-cross-encoder", "BertForSequenceClassification",
                           num_labels=1, initializer_range=0.5)


@pytest.fixture(scope="module")
def classifier(models_dir: Path) -> Path:
    labels = {"num_labels": 3, "id2label": SENTIMENT, "label2id": {v: k for k, v in SENTIMENT.items()}}
    return build_tiny_bert(models_dir / "tiny-sentiment", "BertForSequenceClassification",
                           initializer_range=0.5, **labels)


@pytest.fixture(scope="module")
def servers(cross_encoder: Path, classifier: Path, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("logs")
    started = start_together([
        # A fixed wait of 500 ms: pairs of requests sent close together share batches.
        ServerProcess(["--model", str(cross_encoder), "--served-model-name", "tiny-reranker", "--max-batch-size", "64",
                       "--max-batch-delay-ms", "500", "--batch-wait", "fixed", "--max-batch-tokens", str(TOKEN_BUDGET),
                       "--max-inputs", "150"], logs / "reranker.log"),
        ServerProcess(["--model", str(classifier), "--max-inputs", "8"], logs / "classifier.log"),
    ])
    yield started
    stop_all(started)


@pytest.fixture(scope="module")
def reranker(servers: list[ServerProcess]) -> ServerProcess:
    return servers[0]


@pytest.fixture(scope="module")
def classifier_server(servers: list[ServerProcess]) -> ServerProcess:
    return servers[1]


def _logits(model_dir: Path, pairs: list[tuple[str, str | None]]) -> list[list[float]]:
    """The model's own logits, one (unpadded) pair at a time, in float32."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    rows = []
    with torch.inference_mode():
        for text, pair in pairs:
            encoded = tokenizer(text, pair, truncation=True, max_length=MAX_POSITIONS, return_tensors="pt")
            rows.append(model(**encoded).logits.float()[0].tolist())
    return rows


def _rerank_reference(model_dir: Path, query: str, docs: list[str]) -> tuple[list[float], list[float]]:
    """(sigmoid scores, raw logits) of each (query, doc) pair, in document order."""
    import torch

    logits = [row[0] for row in _logits(model_dir, [(query, d) for d in docs])]
    return torch.sigmoid(torch.tensor(logits)).tolist(), logits


def _assert_ranked(ranks: list[dict[str, Any]], scores: list[float], key: str, count: int | None = None) -> None:
    expected_order = sorted(range(len(scores)), key=lambda i: -scores[i])[:count]
    assert [r["index"] for r in ranks] == expected_order
    for rank in ranks:
        assert rank[key] == pytest.approx(scores[rank["index"]], rel=1e-4, abs=1e-6)


def test_a_one_label_sequence_classifier_is_served_as_a_reranker(reranker: ServerProcess) -> None:
    assert reranker.get("/info").json()["task"] == "text-ranking"


def test_tei_rerank_orders_texts_by_the_models_own_scores(reranker: ServerProcess, cross_encoder: Path) -> None:
    scores, logits = _rerank_reference(cross_encoder, QUERY, DOCS)
    assert len(set(round(s, 4) for s in scores)) == len(DOCS)  # a meaningful order to check

    plain = reranker.post_json({"query": QUERY, "texts": DOCS}, path="/rerank")
    assert plain.status == 200, plain.body
    _assert_ranked(plain.json(), scores, "score")
    assert all(set(rank) == {"index", "score"} for rank in plain.json())

    raw = reranker.post_json({"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True},
                             path="/rerank")
    assert raw.status == 200, raw.body
    _assert_ranked(raw.json(), logits, "score")
    assert all(rank["text"] == DOCS[rank["index"]] for rank in raw.json())


def test_cohere_and_jina_shapes_with_top_n_and_documents(reranker: ServerProcess, cross_encoder: Path) -> None:
    scores, _ = _rerank_reference(cross_encoder, QUERY, DOCS)
    documents = [{"text": d} if i % 2 else d for i, d in enumerate(DOCS)]  # strings and {"text"} objects
    v1 = reranker.post_json({"model": "my-reranker", "query": QUERY, "documents": documents, "top_n": 3,
                             "return_documents": True}, path="/v1/rerank")
    assert v1.status == 200, v1.body
    body = v1.json()
    assert isinstance(body["id"], str) and body["id"]
    assert body["model"] == "my-reranker"
    _assert_ranked(body["results"], scores, "relevance_score", count=3)
    assert all(r["document"] == {"text": DOCS[r["index"]]} for r in body["results"])
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] > 0
    assert body["meta"]["api_version"]["version"] == "1"

    v2 = reranker.post_json({"query": QUERY, "documents": DOCS}, path="/v2/rerank")
    assert v2.status == 200, v2.body
    body = v2.json()
    assert body["model"] == "tiny-reranker"  # --served-model-name when the request names none
    _assert_ranked(body["results"], scores, "relevance_score")
    assert all("document" not in r for r in body["results"])
    assert body["meta"]["api_version"]["version"] == "2"
    assert body["meta"]["tokens"]["input_tokens"] == body["usage"]["total_tokens"]
    assert body["id"] != v1.json()["id"]


def test_a_100_document_request_shares_batches_with_its_neighbours(
    reranker: ServerProcess, cross_encoder: Path
) -> None:
    """Each (query, text) pair is one batch item: a 3-text request sent just
    before a 100-text one rides in a batch with the big one's pairs, and no
    batch exceeds --max-batch-tokens."""
    big_docs = [f"document number {i} talks about {DOCS[i % len(DOCS)]}" for i in range(100)]
    small_docs = DOCS[:3]
    before = scrape(reranker)

    async def run() -> list[tuple[int, dict[str, str], Any]]:
        async with aiohttp.ClientSession() as session:
            async def one(body: dict[str, Any], delay: float) -> tuple[int, dict[str, str], Any]:
                await asyncio.sleep(delay)
                async with session.post(reranker.url + "/rerank", json=body) as resp:
                    return resp.status, resp.headers.copy(), await resp.json()

            return await asyncio.gather(
                one({"query": QUERY, "texts": small_docs}, 0.0),
                one({"query": "who wrote about documents?", "texts": big_docs}, 0.05),
            )

    started = time.monotonic()
    (small_status, small_headers, small), (big_status, big_headers, big) = asyncio.run(run())
    assert small_status == 200 and big_status == 200, (small, big)
    assert time.monotonic() - started < 30
    after = scrape(reranker)

    _assert_ranked(small, _rerank_reference(cross_encoder, QUERY, small_docs)[0], "score")
    _assert_ranked(big, _rerank_reference(cross_encoder, "who wrote about documents?", big_docs)[0], "score")
    # The small request's 3 pairs were batched with pairs of the big one.
    assert int(small_headers["X-Batch-Size"]) > len(small_docs)
    assert int(big_headers["X-Batch-Size"]) <= 64
    computed = after["inferserve_items_computed_total"] - before.get("inferserve_items_computed_total", 0)
    assert computed == len(big_docs) + len(small_docs)
    batches = after["inferserve_batch_size_count"] - before.get("inferserve_batch_size_count", 0)
    bucket = f'inferserve_batch_padded_tokens_bucket{{le="{float(TOKEN_BUDGET)}"}}'
    assert after[bucket] - before.get(bucket, 0) == batches  # every batch within the token budget
    assert batches > 2  # 103 pairs fit 2 batches of 64: the token budget cut them smaller


def test_an_over_long_pair_with_truncate_false_is_refused_by_the_worker(reranker: ServerProcess) -> None:
    # Only the model's tokenizer knows the pair is too long; the parser's own
    # 4xx are in-process in test_app_rerank_predict.py.
    response = reranker.post_json({"query": QUERY, "texts": ["word " * 400], "truncate": False}, path="/rerank")
    assert response.status == 422, response.body
    error = response.json()
    assert error["error_type"] == "Validation" and "tokens long" in error["error"]
    assert reranker.post_json({"query": QUERY, "texts": DOCS}, path="/rerank").status == 200


def test_over_long_pairs_are_truncated_by_default(reranker: ServerProcess, cross_encoder: Path) -> None:
    texts = ["word " * 400, "short text"]
    response = reranker.post_json({"query": QUERY, "texts": texts}, path="/rerank")
    assert response.status == 200, response.body
    _assert_ranked(response.json(), _rerank_reference(cross_encoder, QUERY, texts)[0], "score")


def test_rerank_on_a_model_that_is_not_a_cross_encoder_is_refused(classifier_server: ServerProcess) -> None:
    tei = classifier_server.post_json({"query": QUERY, "texts": DOCS}, path="/rerank")
    assert tei.status == 424, tei.body  # TEI's status for a route the model does not serve
    assert "does not rerank" in tei.json()["error"]
    cohere = classifier_server.post_json({"query": QUERY, "documents": DOCS}, path="/v1/rerank")
    assert cohere.status == 400 and "does not rerank" in cohere.json()["message"]


def _predictions(logits: list[float], raw: bool = False) -> list[dict[str, Any]]:
    import torch

    scores = logits if raw else torch.softmax(torch.tensor(logits), dim=-1).tolist()
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [{"label": SENTIMENT[i], "score": scores[i]} for i in order]


def _assert_predictions(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    for g, e in zip(got, expected):
        assert g["score"] == pytest.approx(e["score"], rel=1e-4, abs=1e-6)


def test_predict_single_pair_and_batch_equal_the_models_softmax(
    classifier_server: ServerProcess, classifier: Path
) -> None:
    pairs = [("what a good movie", None), ("the plot", "was dull"), ("meh", None)]
    logits = _logits(classifier, pairs)

    single = classifier_server.post_json({"inputs": "what a good movie"}, path="/predict")
    assert single.status == 200, single.body
    _assert_predictions(single.json(), _predictions(logits[0]))
    one = classifier_server.post_json({"inputs": ["what a good movie"]}, path="/predict")  # [text]: one input
    _assert_predictions(one.json(), _predictions(logits[0]))

    pair = classifier_server.post_json({"inputs": ["the plot", "was dull"]}, path="/predict")
    assert pair.status == 200, pair.body
    _assert_predictions(pair.json(), _predictions(logits[1]))

    batch = classifier_server.post_json(
        {"inputs": [["what a good movie"], ["the plot", "was dull"], ["meh"]]}, path="/predict"
    )
    assert batch.status == 200, batch.body
    assert len(batch.json()) == 3
    for got, row in zip(batch.json(), logits):
        _assert_predictions(got, _predictions(row))

    raw = classifier_server.post_json({"inputs": [["meh"]], "raw_scores": True}, path="/predict")
    assert raw.status == 200, raw.body
    _assert_predictions(raw.json()[0], _predictions(logits[2], raw=True))


def test_predict_on_a_reranker_is_the_sigmoid_of_its_one_logit(reranker: ServerProcess, cross_encoder: Path) -> None:
    import torch

    [[logit]] = _logits(cross_encoder, [(QUERY, DOCS[0])])
    response = reranker.post_json({"inputs": [QUERY, DOCS[0]]}, path="/predict")
    assert response.status == 200, response.body
    [prediction] = response.json()
    assert prediction["label"] == "LABEL_0"
    assert prediction["score"] == pytest.approx(torch.sigmoid(torch.tensor(logit)).item(), rel=1e-4)
