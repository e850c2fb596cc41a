"""Every sentence-transformers chain served exactly: the embedding task's
vectors (float32) equal ``SentenceTransformer.encode()`` within 1e-4, for
models saved by sentence-transformers itself in the current and the legacy
format. In-process (the task over a transformers pipeline): fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from st_models import build_bert_base, build_st_model, build_tiny_decoder

TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog, again and again and again.", "x",
         "inference servers batch requests of very different lengths"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bert_base(tmp_path_factory.mktemp("st") / "bert")


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_decoder(tmp_path_factory.mktemp("st") / "qwen2")


def served(model_dir: Path, texts: list[str], **options: Any) -> np.ndarray:
    """What /embed computes for ``texts``, in one batch (padding included)."""
    import transformers

    from inferserve.ipc import EmbedOptions
    from inferserve.model.tasks.embeddings import SentenceEmbeddingTask

    pipe = transformers.pipeline("feature-extraction", model=str(model_dir), device="cpu")
    task = SentenceEmbeddingTask(pipe, str(model_dir))
    embed = EmbedOptions(**options)
    plan = task.plan(_call(texts, embed))
    prepared = task.prepare_all([(text, plan.options) for text in texts])
    outputs = task.run(prepared, plan.options)
    assert not any(isinstance(o, Exception) for o in outputs), outputs
    return np.stack(outputs)


def _call(texts: list[str], embed: Any) -> Any:
    from inferserve.ipc import Call, RequestKind

    return Call(RequestKind.EMBED, tuple(texts), embed=embed)


def reference(model_dir: Path, texts: list[str], **kwargs: Any) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu").encode(texts, **kwargs)


POOLINGS = ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ("cls", "mean")]


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "legacy"])
@pytest.mark.parametrize("pooling", POOLINGS, ids=lambda p: p if isinstance(p, str) else "+".join(p))
def test_every_pooling_mode_in_both_formats(bert: Path, tmp_path: Path, pooling: Any, legacy: bool) -> None:
    model = build_st_model(tmp_path / "m", bert, pooling=pooling, legacy=legacy)
    np.testing.assert_allclose(served(model, TEXTS), reference(model, TEXTS), atol=1e-4)


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "legacy"])
@pytest.mark.parametrize("dense", [((16, "Tanh"),), ((24, "Identity"), (8, "Tanh"))], ids=["one", "two"])
def test_dense_heads_and_normalize(bert: Path, tmp_path: Path, dense: Any, legacy: bool) -> None:
    """LaBSE's shape (CLS, Dense tanh, Normalize) and a two-layer head."""
    model = build_st_model(tmp_path / "m", bert, pooling="cls", dense=dense, normalize=True, legacy=legacy)
    got = served(model, TEXTS)
    assert got.shape == (len(TEXTS), dense[-1][0])
    np.testing.assert_allclose(got, reference(model, TEXTS), atol=1e-4)
    if legacy:
        assert list((model / "2_Dense").glob("pytorch_model.bin"))


def test_layer_norm_head(bert: Path, tmp_path: Path) -> None:
    model = build_st_model(tmp_path / "m", bert, dense=((16, "Identity"),), layer_norm=True)
    np.testing.assert_allclose(served(model, TEXTS), reference(model, TEXTS), atol=1e-4)


def test_prompts_default_prompt_and_include_prompt_false(bert: Path, tmp_path: Path) -> None:
    prompts = {"query": "query: ", "passage": "passage: "}
    model = build_st_model(tmp_path / "m", bert, pooling="mean", include_prompt=False, prompts=prompts,
                           default_prompt_name="query")
    # No prompt_name: the default prompt, as encode() does.
    np.testing.assert_allclose(served(model, TEXTS), reference(model, TEXTS), atol=1e-4)
    np.testing.assert_allclose(served(model, TEXTS, prompt_name="passage"),
                               reference(model, TEXTS, prompt_name="passage"), atol=1e-4)
    with_prompt = build_st_model(tmp_path / "p", bert, pooling="weightedmean", prompts=prompts)
    np.testing.assert_allclose(served(with_prompt, TEXTS, prompt_name="query"),
                               reference(with_prompt, TEXTS, prompt_name="query"), atol=1e-4)


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "legacy"])
def test_short_max_seq_length_truncates_a_long_input(bert: Path, tmp_path: Path, legacy: bool) -> None:
    model = build_st_model(tmp_path / "m", bert, max_seq_length=8, legacy=legacy)
    np.testing.assert_allclose(served(model, TEXTS), reference(model, TEXTS), atol=1e-4)


def test_do_lower_case(bert: Path, tmp_path: Path) -> None:
    model = build_st_model(tmp_path / "m", bert, legacy=True)
    config = json.loads((model / "sentence_bert_config.json").read_text())
    (model / "sentence_bert_config.json").write_text(json.dumps({**config, "do_lower_case": True}))
    # The MiniLM tokenizer lower-cases already; the flag must leave the vectors as encode()'s.
    np.testing.assert_allclose(served(model, TEXTS), reference(model, TEXTS), atol=1e-4)


@pytest.mark.parametrize("pooling", ["lasttoken", "mean", "weightedmean", "cls"])
def test_decoder_embedder_left_padding(decoder: Path, tmp_path: Path, pooling: str) -> None:
    """A Qwen2 base model, left padding, instruction prompts (Qwen3-Embedding's shape)."""
    model = build_st_model(tmp_path / "m", decoder, pooling=pooling, normalize=True,
                           prompts={"query": "Instruct: find passages\nQuery: "}, default_prompt_name="query")
    np.testing.assert_allclose(served(model, TEXTS), reference(model, TEXTS), atol=1e-4)


def test_a_module_we_do_not_implement_is_a_load_error_naming_it(bert: Path, tmp_path: Path) -> None:
    from inferserve.model.errors import ModelLoadError
    from inferserve.model.st_chain.reader import read_chain

    model = build_st_model(tmp_path / "m", bert)
    modules = json.loads((model / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_WordWeights", "type": "sentence_transformers.models.WordWeights"})
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="'sentence_transformers.models.WordWeights'"):
        read_chain(str(model))


def test_a_head_on_the_token_vectors_is_a_load_error_not_skipped(bert: Path, tmp_path: Path) -> None:
    from inferserve.model.errors import ModelLoadError
    from inferserve.model.st_chain.reader import read_chain

    model = build_st_model(tmp_path / "m", bert, dense=((32, "Tanh"),))
    modules = json.loads((model / "modules.json").read_text())
    modules[1], modules[2] = modules[2], modules[1]  # Dense before Pooling
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="not after a Pooling module"):
        read_chain(str(model))


def test_bfloat16_agreement_is_measured_on_the_final_vectors(bert: Path, tmp_path: Path) -> None:
    """The gate compares what the client gets (CLS, Dense tanh, Normalize), not the hidden states."""
    import copy

    import torch
    import transformers

    from inferserve.model.precision import CALIBRATION_TEXTS, Calibration, choose_precision
    from inferserve.model.st_chain.calibration import final_vectors

    model = build_st_model(tmp_path / "m", bert, pooling="cls", dense=((16, "Tanh"),), normalize=True)
    pipe = transformers.pipeline("feature-extraction", model=str(model), device="cpu")
    reference_model = copy.deepcopy(pipe.model)
    calibration = Calibration(pipe, finish=final_vectors(str(model), "feature-extraction", "cpu"))
    report = choose_precision(pipe, "feature-extraction", "cpu", "bfloat16", calibration=calibration)
    assert report.dtype == "bfloat16" and report.min_cosine is not None
    texts = list(CALIBRATION_TEXTS)
    full = served_with(pipe, model, texts, reference_model)
    reduced = served_with(pipe, model, texts, pipe.model)
    cosines = torch.nn.functional.cosine_similarity(torch.from_numpy(full), torch.from_numpy(reduced), dim=1)
    assert abs(report.min_cosine - float(cosines.min())) < 1e-3
    assert report.min_cosine < 1.0


def served_with(pipe: Any, model_dir: Path, texts: list[str], network: Any) -> np.ndarray:
    """The embedding task's vectors with ``network`` as the transformer, inputs truncated as the calibration's."""
    from inferserve.ipc import EmbedOptions
    from inferserve.model.tasks.embeddings import SentenceEmbeddingTask

    task = SentenceEmbeddingTask(pipe, str(model_dir))
    task._model = network
    task.max_tokens = 64
    options = EmbedOptions()
    return np.stack(task.run(task.prepare_all([(t, options) for t in texts]), options))


def test_onnx_runtime_transformer_then_the_heads(bert: Path, tmp_path: Path) -> None:
    """--engine onnx exports the transformer only; pooling, Dense and Normalize run after it."""
    pytest.importorskip("onnxruntime")
    import transformers

    from inferserve.model import engines
    from inferserve.model.precision import Calibration, Gate, verify_engine
    from inferserve.model.st_chain.calibration import final_vectors

    model = build_st_model(tmp_path / "m", bert, pooling="cls", dense=((16, "Tanh"),), normalize=True)
    pipe = transformers.pipeline("feature-extraction", model=str(model), device="cpu")
    candidate = engines.onnx_model(pipe, "feature-extraction", str(model), str(tmp_path / "cache"), 1)
    calibration = Calibration(pipe, finish=final_vectors(str(model), "feature-extraction", "cpu"))
    report = verify_engine(pipe, "feature-extraction", candidate, Gate(), calibration=calibration)
    assert report is not None and pipe.model is candidate
    from inferserve.ipc import EmbedOptions
    from inferserve.model.tasks.embeddings import SentenceEmbeddingTask

    task = SentenceEmbeddingTask(pipe, str(model))
    options = EmbedOptions()
    got = np.stack(task.run(task.prepare_all([(t, options) for t in TEXTS]), options))
    np.testing.assert_allclose(got, reference(model, TEXTS), atol=1e-4)
