"""The predict task: a sequence classifier's score for every label (TEI's ``/predict``).

Each input is a text or a (text, text_pair) pair, one batch item. Scores
are the softmax of the logits in float32 (the sigmoid for a one-label or
multi-label model, as the text-classification pipeline decides), or the
logits themselves with ``raw_scores``; every label is listed, highest
score first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch

from ...ipc import Call
from ..errors import ParametersRejected
from .base import Prepared, PreparesOneByOne, TaskPlan
from .pairs import PairScorer, text_and_pair, truncation_options

_PARAMETERS = frozenset({"raw_scores", "truncate", "truncation_direction"})
_GROUP = "predict"  # logits do not depend on the options: every request may share a batch


@dataclass(frozen=True, slots=True)
class PredictOptions:
    raw_scores: bool = False
    truncate: bool | None = None  # None: as --no-truncate says
    truncate_left: bool = False


class PredictTask(PreparesOneByOne):
    def __init__(self, pipe: Any, truncate: bool = True) -> None:
        self._scorer = PairScorer(pipe, truncate=truncate)
        self.max_tokens = self._scorer.max_tokens
        config = pipe.model.config
        self._sigmoid = config.problem_type == "multi_label_classification" or config.num_labels == 1

    def plan(self, call: Call) -> TaskPlan:
        for name in call.params:
            if name not in _PARAMETERS:
                raise ParametersRejected(f"unsupported parameter {name!r}")
        raw_scores = call.params.get("raw_scores", False)
        if not isinstance(raw_scores, bool):
            raise ParametersRejected("raw_scores must be true or false")
        truncate, left = truncation_options(call.params)
        return TaskPlan(PredictOptions(raw_scores, truncate, left), _GROUP)

    def prepare(self, value: Any, options: PredictOptions) -> Prepared:
        text, pair = text_and_pair(value)
        return self._scorer.encode_pair(text, pair, options.truncate, options.truncate_left)

    def run(self, batch: list[Prepared], options: PredictOptions) -> list[Any]:
        return self._scorer.run(batch)

    def encode(self, outputs: list[Any], call: Call, options: PredictOptions, tokens: int) -> bytes:
        logits = torch.from_numpy(np.stack(outputs))  # float32, one row per input
        if not options.raw_scores:
            logits = torch.sigmoid(logits) if self._sigmoid else torch.softmax(logits, dim=-1)
        labels = self._scorer.labels
        predictions = []
        for row in logits.tolist():
            order = sorted(range(len(row)), key=lambda i: -row[i])
            predictions.append([{"score": row[i], "label": labels[i]} for i in order])
        return orjson.dumps(predictions[0] if call.single else predictions)

    def warmup(self) -> None:
        for result in self._scorer.run(self._scorer.warmup_items()):
            if isinstance(result, Exception):
                raise result
