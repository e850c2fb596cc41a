"""Precision: every task in float32, bfloat16 and float16; the agreement gate.

In-process, through the worker's own loading and task code (the same path a
worker runs), on tiny random models: CPU torch computes bfloat16 and float16
(slowly where the hardware lacks them).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import answer_in_process, build_tiny_bart, build_tiny_bert, build_tiny_gpt2
from inferserve.common.config import ModelSpec
from inferserve.ipc import RequestKind
from inferserve.model import precision
from inferserve.model.loading import load_model
from inferserve.model.tasks import build_tasks

DTYPES = ("float32", "bfloat16", "float16")
LABELS = {"num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"}, "label2id": {"a": 0, "b": 1, "c": 2}}

# task: (builder, --task, inputs, parameters)
TASKS: dict[str, tuple[Any, str | None, list[Any], dict[str, Any]]] = {
    "fill-mask": (lambda d: build_tiny_bert(d, "BertForMaskedLM"), None, ["hello [MASK] world", "[MASK]"], {"top_k": 2}),
    "feature-extraction": (lambda d: build_tiny_bert(d, "BertModel"), "feature-extraction", ["hello world", "hi"], {}),
    "text-classification": (lambda d: build_tiny_bert(d, "BertForSequenceClassification", **LABELS), None,
                            ["good", "a longer bad sentence"], {"top_k": None}),
    "token-classification": (lambda d: build_tiny_bert(d, "BertForTokenClassification", **LABELS), None,
                             ["john lives in paris", "hi"], {}),
    "question-answering": (lambda d: build_tiny_bert(d, "BertForQuestionAnswering"), None,
                           [{"question": "where?", "context": "john lives in paris"}], {}),
    "text-generation": (build_tiny_gpt2, None, ["once upon a time"], {"max_new_tokens": 3, "do_sample": False}),
    "text2text-generation": (build_tiny_bart, None, ["hello world"], {"max_new_tokens": 3}),
}


@pytest.fixture(scope="module")
def task_models(models_dir: Path) -> dict[str, Path]:
    return {name: build(models_dir / f"precision-{name}") for name, (build, *_rest) in TASKS.items()}


@functools.lru_cache(maxsize=None)  # each (model, precision, route) is loaded and asked once
def _answer(model_dir: Path, name: str, dtype: str, kind: RequestKind = RequestKind.PIPELINE) -> Any:
    _, task, inputs, params = TASKS[name]
    loaded = load_model(ModelSpec(model=str(model_dir), task=task, dtype=dtype))
    assert loaded.precision.dtype == dtype
    assert loaded.dtype == dtype  # the network itself runs in it
    tasks = build_tasks(loaded.pipeline, loaded.task, str(model_dir), True, lambda message: None)
    return answer_in_process(tasks, kind, inputs, params if kind is RequestKind.PIPELINE else {})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_answers_in_every_precision(task_models: dict[str, Path], name: str, dtype: str) -> None:
    answer = _answer(task_models[name], name, dtype)
    reference = _answer(task_models[name], name, "float32") if dtype != "float32" else answer
    assert len(answer) == len(reference) == len(TASKS[name][2])
    if name == "feature-extraction":  # per-token vectors, close to float32's
        for got, want in zip(answer, reference):
            cosine = _cosine(np.asarray(got).ravel(), np.asarray(want).ravel())
            assert cosine > 0.99


@pytest.mark.parametrize("dtype", DTYPES)
def test_sentence_embeddings_pool_in_float32_in_every_precision(task_models: dict[str, Path], dtype: str) -> None:
    vectors = np.asarray(_answer(task_models["feature-extraction"], "feature-extraction", dtype, RequestKind.EMBED))
    reference = np.asarray(_answer(task_models["feature-extraction"], "feature-extraction", "float32", RequestKind.EMBED))
    assert vectors.shape == reference.shape and vectors.dtype == np.float64  # JSON floats, from float32
    for got, want in zip(vectors, reference):
        assert _cosine(got, want) > 0.999


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- the gate ------------------------------------------------------------------


def _fill_mask_pipe(model_dir: Path) -> Any:
    loaded = load_model(ModelSpec(model=str(model_dir), dtype="float32"))
    return loaded.pipeline


def _timer_favouring(dtype_name: str) -> precision.Timer:
    """A stand-in clock on which ``dtype_name`` runs twice as fast as the rest."""
    return lambda model, features: 5.0 if str(model.dtype) == f"torch.{dtype_name}" else 10.0


def test_auto_chooses_a_faster_precision_that_passes_the_gate(task_models, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(precision, "reduced_precisions", lambda device: ["bfloat16"])
    pipe = _fill_mask_pipe(task_models["fill-mask"])
    report = precision.choose_precision(pipe, "fill-mask", "cpu", "auto", timer=_timer_favouring("bfloat16"))
    assert report.dtype == "bfloat16" and pipe.model.dtype == torch.bfloat16
    assert report.min_cosine is not None and report.min_cosine >= 0.999
    assert report.max_prob_diff is not None and report.max_prob_diff <= 0.01
    assert report.speedup == pytest.approx(2.0)


def test_auto_keeps_float32_when_the_gate_fails_or_nothing_is_faster(task_models, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(precision, "reduced_precisions", lambda device: ["bfloat16"])
    pipe = _fill_mask_pipe(task_models["fill-mask"])
    impossible = precision.Gate(min_cosine=1.01)  # no reduced precision can agree this well
    report = precision.choose_precision(pipe, "fill-mask", "cpu", "auto", impossible, _timer_favouring("bfloat16"))
    assert report.dtype == "float32" and pipe.model.dtype == torch.float32
    assert "bfloat16" in report.reason and "min cosine" in report.reason
    slower = precision.choose_precision(pipe, "fill-mask", "cpu", "auto", timer=_timer_favouring("float32"))
    assert slower.dtype == "float32" and pipe.model.dtype == torch.float32


def test_a_broken_reduced_path_fails_the_gate(task_models, monkeypatch) -> None:
    """A path that garbles the outputs (as the int8 rows of issue 19 did) is refused."""
    import torch

    pipe = _fill_mask_pipe(task_models["fill-mask"])
    original_to = torch.nn.Module.to

    def noisy_to(module: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
        moved = original_to(module, *args, **kwargs)
        if any(a is torch.bfloat16 for a in args):
            with torch.no_grad():
                for parameter in moved.parameters():
                    parameter.add_(torch.randn_like(parameter) * 0.05)
        return moved

    monkeypatch.setattr(precision, "reduced_precisions", lambda device: ["bfloat16"])
    monkeypatch.setattr(torch.nn.Module, "to", noisy_to)
    report = precision.choose_precision(pipe, "fill-mask", "cpu", "auto", timer=_timer_favouring("bfloat16"))
    assert report.dtype == "float32"


def test_info_reports_the_chosen_precision(server_factory, task_models) -> None:
    model = ("--model", str(task_models["feature-extraction"]), "--task", "feature-extraction")
    server = server_factory(*model, "--dtype", "auto", "--min-cosine", "1.01", wait_ready=False)
    forced_server = server_factory(*model, "--dtype", "bfloat16", wait_ready=False)  # both load side by side
    server.wait_ready()
    info = server.get("/info").json()
    assert info["model_dtype"] == "float32"
    report = info["precision"]
    assert report["dtype"] == "float32" and report["requested"] == "auto"
    assert "float32 kept" in report["reason"]
    assert "precision float32 (asked: auto)" in server.log()
    forced_server.wait_ready()
    forced = forced_server.get("/info").json()
    assert forced["model_dtype"] == "bfloat16"
    assert forced["precision"]["min_cosine"] > 0.99


# ---- engines ----------------------------------------------------------------


def test_onnx_engine_serves_the_same_answers_and_is_exported_once(server_factory, task_models, tmp_path,
                                                                  monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import transformers

    model = str(task_models["fill-mask"])
    args = ("--model", model, "--engine", "onnx", "--cache-dir", str(tmp_path / "cache"))
    server = server_factory(*args)
    info = server.get("/info").json()
    assert info["engine"] == "onnx" and info["model_dtype"] == "float32"
    assert info["precision"]["min_cosine"] >= 0.999
    assert "exporting the model to ONNX" in server.log()
    reference = transformers.pipeline("fill-mask", model=model, device="cpu")
    for text in ("hello [MASK] world", "a much longer sentence whose [MASK] sits in the middle"):
        got = server.post_json({"inputs": text, "parameters": {"top_k": 3}}).json()
        want = reference(text, top_k=3)
        assert [g["token"] for g in got] == [w["token"] for w in want]
        assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], rel=1e-3)
    server.stop()
    # The next start finds the export the server cached: the same code, in-process, exports nothing.
    from inferserve.model import engines

    def no_export(*args: Any) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(engines, "_export", no_export)
    again = engines.onnx_model(_fill_mask_pipe(Path(model)), "fill-mask", model, str(tmp_path / "cache"), 1)
    assert isinstance(again, engines.OnnxRuntimeModel)


def test_an_engine_that_disagrees_is_not_used(task_models) -> None:
    import torch

    pipe = _fill_mask_pipe(task_models["fill-mask"])
    torch_model = pipe.model

    class Garbled:
        def __call__(self, **features: Any) -> Any:
            output = torch_model(**features)
            output["logits"] = torch.randn_like(output["logits"])
            return output

    assert precision.verify_engine(pipe, "fill-mask", Garbled(), precision.Gate()) is None
    assert pipe.model is torch_model


def test_engine_auto_takes_another_engine_only_when_it_is_faster(task_models) -> None:
    pipe = _fill_mask_pipe(task_models["fill-mask"])
    torch_model = pipe.model

    class SameAnswers:  # another engine whose outputs agree with torch's exactly
        def __call__(self, **features: Any) -> Any:
            return torch_model(**features)

    candidate = SameAnswers()

    def timer(faster: Any) -> precision.Timer:
        return lambda model, features: 5.0 if model is faster else 10.0

    slower = precision.verify_engine(pipe, "fill-mask", candidate, precision.Gate(), True, timer(torch_model))
    assert slower is None and pipe.model is torch_model
    faster = precision.verify_engine(pipe, "fill-mask", candidate, precision.Gate(), True, timer(candidate))
    assert faster is not None and pipe.model is candidate and faster.speedup == pytest.approx(2.0)


def test_one_calibration_serves_the_precision_choice_and_the_engine_check(task_models, monkeypatch) -> None:
    """Start-up under --dtype auto --engine auto times float32 torch once, not once per check."""
    pipe = _fill_mask_pipe(task_models["fill-mask"])
    torch_model = pipe.model
    timed: list[Any] = []

    def counting_timer(model: Any, features: Any) -> float:
        timed.append(model)
        return 10.0 if model is torch_model else 5.0

    class SameAnswers:
        def __call__(self, **features: Any) -> Any:
            return torch_model(**features)

    monkeypatch.setattr(precision, "reduced_precisions", lambda device: ["bfloat16"])
    calibration = precision.Calibration(pipe, counting_timer)
    report = precision.choose_precision(pipe, "fill-mask", "cpu", "auto", calibration=calibration)
    assert report.dtype == "bfloat16"  # the stand-in clock makes every other model twice as fast
    pipe.model = torch_model
    assert precision.verify_engine(pipe, "fill-mask", SameAnswers(), precision.Gate(), True,
                                   calibration=calibration) is not None
    assert sum(model is torch_model for model in timed) == 1
    assert len(timed) == 3  # float32 torch once, bfloat16 once, the other engine once
