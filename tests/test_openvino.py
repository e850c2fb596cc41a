"""The OpenVINO engine (--engine openvino, and a candidate of --engine auto).

In-process, through the worker's own loading and task code, on tiny random
models: every route through the engine answers as torch float32 does (f32
hint: the same answers; bf16 hint: within the gate), sentence embeddings
as sentence-transformers' encode() computes them for every pooling; the
conversion cache; the gate refusing a candidate that disagrees; auto's
choice. Skipped where the extra (``pip install 'inferserve[openvino]'``)
is not installed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino")

from helpers import answer_in_process, build_tiny_bert, build_tiny_gpt2  # noqa: E402
from inferserve.common.config import ModelSpec  # noqa: E402
from inferserve.ipc import RequestKind  # noqa: E402
from inferserve.model import openvino_engine, precision  # noqa: E402
from inferserve.model.loading import load_model  # noqa: E402
from inferserve.model.tasks import build_tasks  # noqa: E402

LABELS = {"num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"}, "label2id": {"a": 0, "b": 1, "c": 2}}
TEXTS = ["hello world", "a much longer sentence, with more words than the first one has"]
# model: (builder, --task)
MODELS: dict[str, tuple[Any, str | None]] = {
    "masked-lm": (lambda d: build_tiny_bert(d, "BertForMaskedLM"), None),
    "base": (lambda d: build_tiny_bert(d, "BertModel"), "feature-extraction"),
    "classifier": (lambda d: build_tiny_bert(d, "BertForSequenceClassification", **LABELS), None),
    "cross-encoder": (lambda d: build_tiny_bert(d, "BertForSequenceClassification", num_labels=1), None),
    "tagger": (lambda d: build_tiny_bert(d, "BertForTokenClassification", **LABELS), None),
    "reader": (lambda d: build_tiny_bert(d, "BertForQuestionAnswering"), None),
}
# route: (model, RequestKind, inputs, parameters)
ROUTES: dict[str, tuple[str, RequestKind, list[Any], dict[str, Any]]] = {
    "fill-mask": ("masked-lm", RequestKind.PIPELINE,
                  ["hello [MASK] world", "a longer sentence whose [MASK] sits in the middle"], {"top_k": 3}),
    "feature-extraction": ("base", RequestKind.PIPELINE, TEXTS, {}),
    "embed": ("base", RequestKind.EMBED, TEXTS, {}),
    "embed-all": ("base", RequestKind.EMBED_ALL, TEXTS, {}),
    "text-classification": ("classifier", RequestKind.PIPELINE, TEXTS, {"top_k": None}),
    "predict": ("classifier", RequestKind.PREDICT, [*TEXTS, ["a text", "and its pair"]], {}),
    "rerank": ("cross-encoder", RequestKind.RERANK, TEXTS, {}),
    "token-classification": ("tagger", RequestKind.PIPELINE, ["john lives in paris", "hi"], {}),
    "question-answering": ("reader", RequestKind.PIPELINE,
                           [{"question": "where?", "context": "john lives in paris"}], {}),
}


def _hints() -> list[str]:
    import openvino

    return openvino_engine.cpu_precision_hints(openvino.Core())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("openvino-models")
    return {name: build(root / name) for name, (build, _task) in MODELS.items()}


@pytest.fixture(autouse=True)
def quick_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up's timing of each candidate stands in at a constant: these
    tests are about answers (the choice by speed has its own test), and the
    real timing runs a tiny masked LM's 30k-word head for seconds."""
    monkeypatch.setattr(precision, "_time_forward", lambda model, features: 1.0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("openvino-cache"))


def _spec(model_dir: Path, cache_dir: str, **fields: Any) -> ModelSpec:
    return ModelSpec(model=str(model_dir), cache_dir=cache_dir, **fields)


@functools.lru_cache(maxsize=None)  # each (model, engine, precision) is loaded once
def _load(model_dir: Path, task: str | None, cache_dir: str, engine: str, dtype: str) -> tuple[Any, Any]:
    loaded = load_model(_spec(model_dir, cache_dir, task=task, engine=engine, dtype=dtype))
    assert loaded.engine == engine
    return build_tasks(loaded.pipeline, loaded.task, str(model_dir), True, lambda message: None), loaded.precision


def _answer(name: str, models: dict[str, Path], cache_dir: str, engine: str, dtype: str) -> tuple[Any, Any]:
    model, kind, inputs, params = ROUTES[name]
    return _ask(models[model], MODELS[model][1], kind, inputs, params, cache_dir, engine, dtype)


def _ask(model_dir: Path, task: str | None, kind: RequestKind, inputs: list[Any], params: dict[str, Any],
         cache_dir: str, engine: str, dtype: str) -> tuple[Any, Any]:
    tasks, report = _load(model_dir, task, cache_dir, engine, dtype)
    return answer_in_process(tasks, kind, inputs, params), report


def _assert_close(got: Any, want: Any, tolerance: float, where: str = "") -> None:
    """The same structure, labels and tokens; every number within ``tolerance``
    (relative to the larger of 1 and its size)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            _assert_close(got[key], want[key], tolerance, f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for index, (g, w) in enumerate(zip(got, want)):
            _assert_close(g, w, tolerance, f"{where}[{index}]")
    elif isinstance(want, float):
        assert abs(got - want) <= tolerance * max(1.0, abs(want)), f"{where}: {got} vs {want}"
    else:
        assert got == want, where


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_every_route_answers_as_torch_float32_with_the_f32_hint(models, cache_dir, name) -> None:
    got, report = _answer(name, models, cache_dir, "openvino", "float32")
    want, _ = _answer(name, models, cache_dir, "torch", "float32")
    assert report.engine == "openvino" and report.precision_hint == "f32" and report.dtype == "float32"
    assert report.min_cosine >= 0.999
    _assert_close(got, want, 1e-3)


@pytest.mark.parametrize("name", ["embed", "embed-all", "text-classification", "predict", "rerank"])
def test_routes_agree_within_the_gate_with_the_bf16_hint(models, cache_dir, name) -> None:
    if "bf16" not in _hints():
        pytest.skip("this CPU has no bfloat16: OpenVINO compiles f32 only")
    got, report = _answer(name, models, cache_dir, "openvino", "bfloat16")
    want, _ = _answer(name, models, cache_dir, "torch", "float32")
    assert report.precision_hint == "bf16" and report.dtype == "bfloat16" and report.min_cosine >= 0.999
    if name.startswith("embed"):  # vectors: the gate's cosine, item by item
        for g, w in zip(np.asarray(got, dtype=object), np.asarray(want, dtype=object)):
            g, w = np.asarray(g, dtype=float).ravel(), np.asarray(w, dtype=float).ravel()
            assert g @ w / (np.linalg.norm(g) * np.linalg.norm(w)) >= 0.999
    else:  # probabilities and logits within the gate's 0.01, every label in the same order
        _assert_close(got, want, 0.01)


# ---- sentence embeddings, as sentence-transformers computes them ----------------

POOLINGS = ("mean_tokens", "cls_token", "max_tokens", "mean_sqrt_len_tokens")


def _write_pooling(directory: Path, pooling: str) -> None:
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, **{f"pooling_mode_{m}": m == pooling for m in POOLINGS}}))


@pytest.fixture(scope="module")
def sentence_model(models: dict[str, Path]) -> Path:
    """The tiny base model as a sentence-transformers directory (Transformer, Pooling, Normalize)."""
    directory = models["base"].parent / "sentence"
    build_tiny_bert(directory, "BertModel")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    _write_pooling(directory, "mean_tokens")
    return directory


@pytest.mark.parametrize("hint", ["f32", "bf16"])
def test_embed_matches_sentence_transformers_for_every_pooling(sentence_model, cache_dir, hint) -> None:
    """One engine per hint; the pooling (torch, after the network) rebuilt from each config."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    if hint not in _hints():
        pytest.skip(f"this CPU has no {hint}")
    loaded = load_model(_spec(sentence_model, cache_dir, task="feature-extraction", engine="openvino",
                              dtype=openvino_engine.HINT_DTYPES[hint]))
    assert loaded.precision.precision_hint == hint
    for pooling in POOLINGS:
        _write_pooling(sentence_model, pooling)
        want = sentence_transformers.SentenceTransformer(str(sentence_model), device="cpu").encode(TEXTS)
        tasks = build_tasks(loaded.pipeline, loaded.task, str(sentence_model), True, lambda message: None)
        got = answer_in_process(tasks, RequestKind.EMBED, TEXTS, {})
        for g, w in zip(np.asarray(got), want):
            if hint == "f32":
                np.testing.assert_allclose(g, w, atol=1e-5, err_msg=pooling)
            else:
                assert g @ w / (np.linalg.norm(g) * np.linalg.norm(w)) >= 0.999, pooling


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_a_decoder_embedder_converts_and_the_gate_judges_it(tmp_path, cache_dir, caplog, padding_side) -> None:
    """A Qwen2 base model with last-token pooling (Qwen3-Embedding's shape) converts now that its
    forward builds no key/value cache. Padded on the right, OpenVINO serves it; padded on the left,
    OpenVINO's last-token vectors are NaN (past the padding rows, which attend to nothing): the
    gate refuses it and torch serves. Either way the vectors are sentence-transformers' own."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from st_models import build_st_model, build_tiny_decoder

    base = build_tiny_decoder(tmp_path / "qwen2", padding_side=padding_side)
    model = build_st_model(tmp_path / "st", base, pooling="lasttoken", normalize=True)
    with caplog.at_level(logging.INFO, logger="inferserve.worker"):
        loaded = load_model(_spec(model, cache_dir, task="feature-extraction", engine="openvino", dtype="float32"))
    assert "cannot run this model" not in caplog.text  # converted
    if padding_side == "right":
        assert loaded.engine == "openvino"
    else:
        assert loaded.engine == "torch" and "fail the agreement gate (min cosine nan)" in caplog.text
    tasks = build_tasks(loaded.pipeline, loaded.task, str(model), True, lambda message: None)
    got = answer_in_process(tasks, RequestKind.EMBED, TEXTS, {})
    want = sentence_transformers.SentenceTransformer(str(model), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_a_decoder_is_converted_in_a_real_worker(server_factory, tmp_path) -> None:
    """A decoder served on OpenVINO by a real worker. Its forward built a key/value cache inside
    the trace, which OpenVINO failed to convert in a worker process (in this test process that
    trace converted either way, so the test above cannot tell)."""
    from st_models import build_tiny_decoder

    base = build_tiny_decoder(tmp_path / "qwen2", padding_side="right")
    server = server_factory("--model", str(base), "--task", "feature-extraction", "--engine", "openvino",
                            "--dtype", "float32", "--cache-dir", str(tmp_path / "cache"), "--num-threads", "1")
    assert server.get("/info").json()["engine"] == "openvino", server.log()
    vectors = server.post_json({"inputs": TEXTS}, path="/embed").json()
    assert len(vectors) == 2 and all(np.isfinite(v).all() for v in vectors)


def test_a_failed_conversion_leaves_the_loggers_as_they_were(models, tmp_path, monkeypatch, caplog) -> None:
    """openvino.convert_model sets the root logger to ERROR and restores it only when it succeeds:
    after a failure the worker's warnings, the fallback's first, went unseen."""
    from inferserve.model import engines

    monkeypatch.setattr(engines.TracedNetwork, "example", lambda self: "not a tensor")  # the converter refuses it
    root = logging.getLogger()
    with caplog.at_level(logging.WARNING):
        filters = list(root.filters)
        loaded = load_model(_spec(models["classifier"], str(tmp_path / "cache"), engine="openvino", dtype="float32"))
        assert root.level == logging.WARNING and root.filters == filters
    assert loaded.engine == "torch"
    assert "OpenVINO cannot run this model, serving with torch" in caplog.text


# ---- the conversion cache ----------------------------------------------------


def test_the_conversion_is_cached_and_redone_when_the_model_files_change(models, tmp_path, monkeypatch) -> None:
    model_dir = models["classifier"]
    pipe = load_model(ModelSpec(model=str(model_dir), dtype="float32")).pipeline
    converted: list[str] = []
    real_convert = openvino_engine._convert

    def counting_convert(*args: Any) -> None:
        converted.append(args[-1])
        real_convert(*args)

    monkeypatch.setattr(openvino_engine, "_convert", counting_convert)
    cache = str(tmp_path / "cache")
    first = openvino_engine.openvino_models(pipe, "text-classification", str(model_dir), cache, 1, ["f32"])
    again = openvino_engine.openvino_models(pipe, "text-classification", str(model_dir), cache, 1, ["f32"])
    assert len(converted) == 1 and os.path.isfile(converted[0])  # the second start read the cache
    features = pipe.tokenizer(TEXTS, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(first["f32"](**features).logits, again["f32"](**features).logits)
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, (stat.st_atime, stat.st_mtime + 10))  # the model files changed
    openvino_engine.openvino_models(pipe, "text-classification", str(model_dir), cache, 1, ["f32"])
    assert len(converted) == 2 and converted[1] != converted[0]


# ---- the gate and auto's choice ----------------------------------------------


def test_the_gate_refuses_an_openvino_candidate_that_disagrees(models, tmp_path, monkeypatch, caplog) -> None:
    """A compiled model whose outputs are garbled (as a bad conversion or
    precision would garble them) is refused: torch serves."""
    import torch

    real_forward = openvino_engine.OpenVinoModel.forward

    def garbled(self: Any, *args: Any, **kwargs: Any) -> Any:
        output = real_forward(self, *args, **kwargs)
        output["logits"] = output["logits"] + torch.randn_like(output["logits"]) * output["logits"].std() * 3
        return output

    monkeypatch.setattr(openvino_engine.OpenVinoModel, "forward", garbled)
    monkeypatch.setattr(openvino_engine.OpenVinoModel, "__call__", garbled)
    spec = _spec(models["classifier"], str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="inferserve.worker"):
        forced = load_model(dataclasses.replace(spec, engine="openvino", dtype="float32"))
        # bfloat16: torch's serves (asked for), OpenVINO's bf16 must beat it; no ONNX candidate.
        auto = load_model(dataclasses.replace(spec, engine="auto", dtype="bfloat16"))
    assert forced.engine == "torch" and forced.precision.engine is None
    assert auto.engine == "torch" and auto.precision.engine is None
    assert caplog.text.count("fail the agreement gate") == 2


def test_auto_takes_openvino_only_when_it_beats_what_serves(models, tmp_path) -> None:
    pipe = load_model(ModelSpec(model=str(models["classifier"]), dtype="float32")).pipeline
    torch_model = pipe.model
    candidates = openvino_engine.openvino_models(pipe, "text-classification", str(models["classifier"]),
                                                 str(tmp_path / "cache"), 1, ["f32"])
    # A stand-in clock: torch float32 10 ms, OpenVINO 4 ms (2.5x).
    calibration = precision.Calibration(pipe, lambda model, features: 10.0 if model is torch_model else 4.0)
    gate = precision.Gate()
    beaten = openvino_engine.choose_openvino(pipe, "text-classification", candidates, gate, calibration, 3.0)
    assert beaten is None and pipe.model is torch_model  # what serves is 3x float32: OpenVINO is slower
    chosen = openvino_engine.choose_openvino(pipe, "text-classification", candidates, gate, calibration, 1.5)
    assert chosen is not None and pipe.model is candidates["f32"]
    assert chosen.engine == "openvino" and chosen.speedup == pytest.approx(2.5) and chosen.requested == "auto"
    assert chosen.reason.startswith("openvino, precision hint f32")


def test_a_generation_task_falls_back_to_torch(tmp_path, caplog) -> None:
    model_dir = build_tiny_gpt2(tmp_path / "gpt2")
    with caplog.at_level(logging.WARNING, logger="inferserve.worker"):
        loaded = load_model(ModelSpec(model=str(model_dir), engine="openvino", dtype="float32",
                                      cache_dir=str(tmp_path / "cache")))
    assert loaded.engine == "torch"
    assert "--engine openvino does not serve text-generation" in caplog.text


def test_a_model_openvino_cannot_convert_falls_back_to_torch(models, tmp_path, monkeypatch, caplog) -> None:
    from inferserve.model.errors import ModelLoadError

    def failing(*args: Any) -> None:
        raise ModelLoadError("OpenVINO conversion failed: an operation it does not know")

    monkeypatch.setattr(openvino_engine, "_convert", failing)
    with caplog.at_level(logging.WARNING, logger="inferserve.worker"):
        loaded = load_model(_spec(models["classifier"], str(tmp_path / "cache"), engine="openvino", dtype="float32"))
    assert loaded.engine == "torch" and loaded.precision.dtype == "float32"
    assert "OpenVINO cannot run this model, serving with torch" in caplog.text


def test_torch_keeps_one_thread_beside_openvino_and_its_own_count_otherwise(models, tmp_path) -> None:
    """Beside an engine torch only pads and pools: one thread, so no idle
    torch pool thread spins against the engine's (docs/design.md#torch-threads-beside-an-engine)."""
    import torch

    spec = _spec(models["classifier"], str(tmp_path / "cache"), engine="openvino", dtype="float32", num_threads=3)
    assert load_model(spec).engine == "openvino"
    assert torch.get_num_threads() == 1
    assert load_model(dataclasses.replace(spec, engine="torch")).engine == "torch"
    assert torch.get_num_threads() == 3


def test_info_names_the_engine_and_its_hint(server_factory, models, tmp_path) -> None:
    import transformers

    model = str(models["classifier"])
    server = server_factory("--model", model, "--engine", "openvino", "--dtype", "auto",
                            "--cache-dir", str(tmp_path / "cache"), "--num-threads", "1")
    info = server.get("/info").json()
    report = info["precision"]
    assert info["engine"] == "openvino" and report["engine"] == "openvino"
    assert report["precision_hint"] in _hints()
    assert info["model_dtype"] == openvino_engine.HINT_DTYPES[report["precision_hint"]]
    assert report["min_cosine"] >= 0.999 and report["speedup"] > 0
    assert "converting the model to OpenVINO" in server.log() and "openvino, precision hint" in server.log()
    assert "torch intra-op threads: 1 (openvino computes the network on 1)" in server.log()
    reference = transformers.pipeline("text-classification", model=model, device="cpu")
    got = server.post_json({"inputs": TEXTS[1], "parameters": {"top_k": None}}).json()
    want = reference(TEXTS[1], top_k=None)
    assert {g["label"]: g["score"] for g in got} == pytest.approx({w["label"]: w["score"] for w in want}, abs=0.01)
