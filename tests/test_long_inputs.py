"""``--long-inputs {error,truncate,chunk}`` on the embedding tasks, in-process:
a chunked input's vector is the token-count-weighted mean of its windows
embedded alone (normalised as the model does); a sparse model's is their max."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import build_tiny_bert
from st_models import build_bert_base, build_splade, build_st_model

LIMIT = 10  # max_seq_length: 8 text tokens between [CLS] and [SEP]
LONG = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen"


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("long")
    return build_st_model(root / "m", build_bert_base(root / "bert"), dense=((16, "Tanh"),), normalize=True,
                          max_seq_length=LIMIT)


def _task(model: Path, long_inputs: str | None, sparse: bool = False) -> Any:
    import transformers

    from inferserve.model.tasks.embeddings import SentenceEmbeddingTask
    from inferserve.model.tasks.sparse import SparseEmbeddingTask

    if sparse:
        pipe = transformers.pipeline("fill-mask", model=str(model), device="cpu")
        return SparseEmbeddingTask(pipe, str(model), long_inputs=long_inputs)
    pipe = transformers.pipeline("feature-extraction", model=str(model), device="cpu")
    return SentenceEmbeddingTask(pipe, str(model), long_inputs=long_inputs)


def _vectors(task: Any, inputs: list[Any], **options: Any) -> Any:
    from inferserve.ipc import EmbedOptions

    embed = EmbedOptions(**options)
    prepared = task.prepare_all([(value, embed) for value in inputs])
    return prepared, task.run([p for p in prepared], embed) if not any(isinstance(p, Exception) for p in prepared) \
        else None


def _windows(task: Any, text: str) -> list[list[int]]:
    """The three windows, cut by hand: [CLS] + 8 tokens + [SEP] (the last shorter)."""
    ids = task._tokenizer(text)["input_ids"]
    body = ids[1:-1]
    return [[ids[0], *body[i:i + LIMIT - 2], ids[-1]] for i in range(0, len(body), LIMIT - 2)]


def test_a_three_window_input_is_the_weighted_mean_of_its_windows(dense: Path) -> None:
    task = _task(dense, "chunk")
    windows = _windows(task, LONG)
    assert len(windows) == 3 and len(windows[-1]) < LIMIT
    _, (chunked, short) = _vectors(task, [LONG, "hello world"])
    _, alone = _vectors(task, windows, normalize=False)  # each window embedded alone, as token ids
    weights = np.array([len(w) for w in windows], dtype=np.float64)
    expected = (np.stack(alone) * weights[:, None]).sum(axis=0) / weights.sum()
    expected /= np.linalg.norm(expected)  # the model ends in Normalize
    np.testing.assert_allclose(chunked, expected, atol=1e-5)
    from sentence_transformers import SentenceTransformer

    np.testing.assert_allclose(short, SentenceTransformer(str(dense), device="cpu").encode(["hello world"])[0],
                               atol=1e-4)  # a short neighbour is untouched


def test_error_and_truncate_modes_and_the_request_truncate_flag(dense: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from inferserve.model.errors import InputRejected

    reference = SentenceTransformer(str(dense), device="cpu").encode([LONG])[0]  # ST truncates
    prepared, _ = _vectors(_task(dense, "error"), [LONG])
    assert isinstance(prepared[0], InputRejected)
    np.testing.assert_allclose(_vectors(_task(dense, "truncate"), [LONG])[1][0], reference, atol=1e-4)
    # In chunk mode a request that asks to truncate is truncated.
    np.testing.assert_allclose(_vectors(_task(dense, "chunk"), [LONG], truncate=True)[1][0], reference, atol=1e-4)
    assert _task(dense, None).long_inputs == "truncate"


def test_a_sparse_model_combines_windows_by_max(tmp_path: Path) -> None:
    mlm = build_tiny_bert(tmp_path / "mlm", "BertForMaskedLM", seed=4)
    task = _task(build_splade(tmp_path / "splade", mlm, max_seq_length=LIMIT), "chunk", sparse=True)
    windows = _windows(task, LONG)
    _, (chunked,) = _vectors(task, [LONG])
    _, alone = _vectors(task, windows)
    dense = np.zeros((len(windows), task.dimension), dtype=np.float32)
    for row, (indices, values) in enumerate(alone):
        dense[row, indices] = values
    expected = dense.max(axis=0)
    got = np.zeros(task.dimension, dtype=np.float32)
    got[chunked[0]] = chunked[1]
    np.testing.assert_allclose(got, expected, atol=1e-5)
