"""PipelineTask against a real tiny model: fault isolation by bisection."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferserve.common.config import ModelSpec
from inferserve.model.errors import InputRejected, ParametersRejected
from inferserve.model.loading import load_model
from inferserve.model.tasks.pipeline import PipelineTask


@pytest.fixture(scope="module")
def runner(fill_mask_model: Path) -> PipelineTask:
    loaded = load_model(ModelSpec(model=str(fill_mask_model), dtype="float32"))
    return PipelineTask(loaded.pipeline, loaded.task)


def test_a_failing_item_is_isolated_and_its_neighbours_succeed(runner: PipelineTask) -> None:
    params = runner.parse_params({})
    good = [runner.prepare(f"item {i} is [MASK].", params) for i in range(5)]
    poisoned = runner.prepare("poisoned [MASK].", params)
    # A token id past the vocabulary makes the embedding lookup raise inside
    # forward(), for the whole padded batch: only bisection can save the rest.
    poisoned.features["input_ids"][0, 1] = 10**6
    batch = good[:3] + [poisoned] + good[3:]
    outputs = runner.run(batch, params)
    assert isinstance(outputs[3], Exception)
    expected = runner.run(good, params)
    for got, want in zip(outputs[:3] + outputs[4:], expected):
        assert not isinstance(got, Exception)
        assert [r["token"] for r in got] == [r["token"] for r in want]


def test_batched_outputs_equal_single_calls(runner: PipelineTask) -> None:
    params = runner.parse_params({"top_k": 3})
    texts = ["short [MASK]", "a much longer sentence whose [MASK] sits in the middle of it", "x [MASK] y"]
    batched = runner.run([runner.prepare(t, params) for t in texts], params)
    for text, output in zip(texts, batched):
        (single,) = runner.run([runner.prepare(text, params)], params)
        assert [r["token"] for r in output] == [r["token"] for r in single]
        assert [r["score"] for r in output] == pytest.approx([r["score"] for r in single], rel=1e-4)


def test_rejections_are_typed(runner: PipelineTask) -> None:
    with pytest.raises(ParametersRejected, match="unsupported parameter 'bogus'"):
        runner.parse_params({"bogus": 1})
    with pytest.raises(InputRejected):
        runner.prepare("no mask token", runner.parse_params({}))


def test_over_long_input_is_truncated_or_rejected(fill_mask_model: Path) -> None:
    loaded = load_model(ModelSpec(model=str(fill_mask_model), dtype="float32"))
    long_text = "[MASK] " + "word " * 400
    truncating = PipelineTask(loaded.pipeline, loaded.task, truncate=True)
    params = truncating.parse_params({})
    prepared = truncating.prepare(long_text, params)
    assert prepared.tokens == truncating.max_tokens == 128
    assert not isinstance(truncating.run([prepared], params)[0], Exception)
    strict = PipelineTask(loaded.pipeline, loaded.task, truncate=False)
    with pytest.raises(InputRejected, match="at most 128"):
        strict.prepare(long_text, params)


def test_feature_extraction_skips_the_unused_pooler_and_answers_the_same(embedding_model: Path) -> None:
    import transformers

    loaded = load_model(ModelSpec(model=str(embedding_model), task="feature-extraction", dtype="float32"))
    assert loaded.pipeline.model.pooler is None
    reference = transformers.pipeline("feature-extraction", model=str(embedding_model))
    assert reference.model.pooler is not None
    runner = PipelineTask(loaded.pipeline, loaded.task)
    params = runner.parse_params({})
    texts = ["hello world", "a somewhat longer sentence than the first one"]
    for text in texts:
        (output,) = runner.run([runner.prepare(text, params)], params)
        assert output.tolist() == reference(text)


def test_a_pooler_the_forward_cannot_do_without_is_kept() -> None:
    import torch

    from inferserve.model.loading import drop_unused_pooler

    class NeedsPooler(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pooler = torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * 2, self.pooler(x)  # calls it whether or not it is set

    class Pipe:
        model = NeedsPooler()

        def preprocess(self, text: str) -> torch.Tensor:
            return torch.ones(1, 2)

        def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.model(features)

    pipe = Pipe()
    assert not drop_unused_pooler(pipe)
    assert isinstance(pipe.model.pooler, torch.nn.Linear)
