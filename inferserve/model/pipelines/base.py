"""The base of the tasks transformers 5 no longer ships as pipelines.

transformers 5 removed the question-answering, text2text-generation,
summarization and translation pipelines; the models remain, users still
deploy them and their clients parse the 4.x output shapes (the Hugging Face
inference API's). ``OwnPipeline`` is the pipeline surface ``PipelineTask``
drives for them: ``_sanitize_parameters``, a list ``__call__`` with
``batch_size``, plus an explicit input check and list-answer shape.
"""

from __future__ import annotations

from typing import Any

from ..tokens import token_limit


def own_task_family(task: str) -> str | None:
    """Which of our implementations serves ``task``, if any."""
    if task in ("question-answering", "text2text-generation", "summarization"):
        return task
    if task == "translation" or (task.startswith("translation_") and "_to_" in task):
        return "translation"  # translation_en_to_de names its languages
    return None


class OwnPipeline:
    """What PipelineTask uses of a transformers Pipeline, and two hooks."""

    task: str
    generates = False  # whether the warm-up must bound generation

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = model.device
        self._preprocess_params: dict[str, Any] = {}
        self._forward_params: dict[str, Any] = {}
        self._postprocess_params: dict[str, Any] = {}
        self._token_limit = token_limit(tokenizer, model.config)

    def check_input(self, value: Any) -> None:
        """Raise InputRejected for an input of the wrong shape, before batching."""

    def combine(self, outputs: list[Any]) -> list[Any]:
        """A list request's answer from each input's own output."""
        return outputs


def unexpected(name: str) -> TypeError:
    # Same wording as a pipeline's, which the runner turns into a 422.
    return TypeError(f"_sanitize_parameters() got an unexpected keyword argument '{name}'")


def positive_int(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
