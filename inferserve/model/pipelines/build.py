"""Build our own pipeline for a task transformers 5 dropped."""

from __future__ import annotations

from typing import Any

import transformers

from .base import OwnPipeline, own_task_family
from .question_answering import ExtractiveQuestionAnswering
from .seq2seq import Seq2SeqGeneration


def build_own_pipeline(task: str, model: str, device: str, dtype: Any) -> OwnPipeline:
    family = own_task_family(task)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    kwargs = {} if dtype == "auto" else {"dtype": dtype}
    if family == "question-answering":
        if not tokenizer.is_fast:
            raise ValueError("question-answering needs a fast tokenizer (tokenizer.json) for character offsets")
        network = transformers.AutoModelForQuestionAnswering.from_pretrained(model, **kwargs)
        return ExtractiveQuestionAnswering(network.to(device).eval(), tokenizer)
    network = transformers.AutoModelForSeq2SeqLM.from_pretrained(model, **kwargs)
    return Seq2SeqGeneration(task, network.to(device).eval(), tokenizer)
