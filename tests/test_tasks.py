"""Each text pipeline task through POST /, compared with calling the pipeline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import ServerProcess, build_tiny_bert, build_tiny_gpt2, start_together, stop_all

SENTIMENT = {0: "negative", 1: "neutral", 2: "positive"}
ENTITIES = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
NLI = {0: "contradiction", 1: "neutral", 2: "entailment"}


def _labels(mapping: dict[int, str]) -> dict[str, Any]:
    return {"num_labels": len(mapping), "id2label": mapping, "label2id": {v: k for k, v in mapping.items()}}


TASKS = {
    # name: (builder, --task, inputs, parameter sets)
    "text-classification": (
        lambda d: build_tiny_bert(d, "BertForSequenceClassification", **_labels(SENTIMENT)), None,
        ["what a good movie", "bad, really bad", "meh"],
        [{}, {"top_k": 2}, {"top_k": None, "function_to_apply": "sigmoid"}],  # last: multi-label style
    ),
    "token-classification": (
        lambda d: build_tiny_bert(d, "BertForTokenClassification", **_labels(ENTITIES)), None,
        ["john lives in paris", "mary met bob in new york city"],
        [{}, {"aggregation_strategy": "simple"}],
    ),
    "zero-shot-classification": (
        lambda d: build_tiny_bert(d, "BertForSequenceClassification", **_labels(NLI)), "zero-shot-classification",
        ["i love this phone", "the weather is terrible today"],
        [{"candidate_labels": ["happy", "sad"]}, {"candidate_labels": ["tech", "weather", "food"], "multi_label": True}],
    ),
    "text-generation": (
        build_tiny_gpt2, None,
        ["hello there", "once upon a time in a land far away"],
        [{"max_new_tokens": 6, "do_sample": False}],
    ),
}


def assert_close(got: Any, expected: Any, path: str = "") -> None:
    if isinstance(expected, float) or isinstance(got, float):
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6), path
    elif isinstance(expected, dict):
        assert set(got) == set(expected), path
        for key in expected:
            assert_close(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_close(g, e, f"{path}[{i}]")
    else:
        assert got == expected, path


def _jsonable(value: Any) -> Any:
    """The pipeline's output as JSON would carry it (numpy scalars -> float)."""
    import json

    return json.loads(json.dumps(value, default=float))


@pytest.fixture(scope="module")
def task_servers(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("logs")
    models, servers = {}, {}
    for name, (build, task, _, _) in TASKS.items():
        models[name] = build(models_dir / f"task-{name}")
        args = ["--model", str(models[name]), "--max-batch-delay-ms", "50", "--batch-wait", "fixed"]
        servers[name] = ServerProcess(args + (["--task", task] if task else []), logs / f"{name}.log")
    start_together(list(servers.values()))
    yield models, servers
    stop_all(list(servers.values()))


@pytest.fixture(scope="module", params=sorted(TASKS))
def task_setup(request, task_servers):
    import transformers

    name = request.param
    _, task, inputs, parameter_sets = TASKS[name]
    models, servers = task_servers
    pipe = transformers.pipeline(task or name, model=str(models[name]), device="cpu")
    return name, servers[name], pipe, inputs, parameter_sets


def test_task_is_inferred_or_given_and_shown_in_info(task_setup) -> None:
    name, server, _, _, _ = task_setup
    assert server.get("/info").json()["task"] == name


def test_single_and_list_inputs_match_the_pipeline(task_setup) -> None:
    _, server, pipe, inputs, parameter_sets = task_setup
    for params in parameter_sets:
        single = server.post_json({"inputs": inputs[0], "parameters": params})
        assert single.status == 200, single.body
        assert_close(single.json(), _jsonable(pipe(inputs[0], **params)))
        many = server.post_json({"inputs": inputs, "parameters": params})
        assert many.status == 200, many.body
        assert_close(many.json(), [_jsonable(pipe(text, **params)) for text in inputs])


def test_a_parameter_the_task_does_not_take_is_refused_naming_it(task_setup) -> None:
    # Several pipelines' _sanitize_parameters end in **kwargs and used to drop a misspelt name.
    _, server, _, inputs, parameter_sets = task_setup
    response = server.post_json({"inputs": inputs[0], "parameters": {**parameter_sets[0], "top_kk": 3}})
    assert response.status == 422, response.body
    assert response.json()["error"] == "unsupported parameter 'top_kk'"


def test_concurrent_requests_batch_and_stay_correct(task_setup) -> None:
    _, server, pipe, inputs, parameter_sets = task_setup
    params = parameter_sets[0]

    async def run() -> list[tuple[int, Any, int]]:
        async with aiohttp.ClientSession() as session:
            async def one(text: str) -> tuple[int, Any, int]:
                async with session.post(server.url + "/", json={"inputs": text, "parameters": params}) as resp:
                    return resp.status, await resp.json(), int(resp.headers.get("X-Batch-Size", 0))

            return await asyncio.gather(*(one(t) for t in inputs * 3))

    results = asyncio.run(run())
    for text, (status, body, _) in zip(inputs * 3, results):
        assert status == 200
        assert_close(body, _jsonable(pipe(text, **params)))
    assert max(size for _, _, size in results) > 1
