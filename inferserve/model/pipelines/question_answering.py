"""Extractive question answering, as the 4.x pipeline did it."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from ..errors import InputRejected
from .base import OwnPipeline, positive_int, unexpected


class ExtractiveQuestionAnswering(OwnPipeline):
    """``{"question", "context"}`` -> ``{"score", "start", "end", "answer"}``.

    The 4.x QuestionAnsweringPipeline's algorithm: the context is split into
    overlapping windows (``max_seq_len``, ``doc_stride``); in each, the start
    and end logits outside the context are masked, softmaxed, and the best
    ``top_k`` spans of at most ``max_answer_len`` tokens are kept by
    p(start) x p(end); spans are widened to whole words (``align_to_words``).
    """

    task = "question-answering"
    # max_question_len is accepted (4.x clients send it) and, as in 4.x, unused.
    _DEFAULTS = {"top_k": 1, "doc_stride": 128, "max_answer_len": 15, "max_seq_len": 384,
                 "max_question_len": 64, "handle_impossible_answer": False, "align_to_words": True}

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__(model, tokenizer)
        self._model_inputs = set(inspect.signature(model.forward).parameters)

    def _sanitize_parameters(self, **params: Any) -> tuple[dict, dict, dict]:
        for name in params:
            if name not in self._DEFAULTS:
                raise unexpected(name)
        settings = {**self._DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
        for name in ("top_k", "doc_stride", "max_answer_len", "max_seq_len", "max_question_len"):
            positive_int(settings, name, self._DEFAULTS[name])
        for name in ("handle_impossible_answer", "align_to_words"):
            if not isinstance(settings[name], bool):
                raise ValueError(f"{name} must be true or false")
        return settings, {}, {}

    def check_input(self, value: Any) -> None:
        if not isinstance(value, dict) or set(value) != {"question", "context"}:
            raise InputRejected('question-answering takes {"question": str, "context": str}')

    def __call__(self, inputs: Any, batch_size: int | None = None, **params: Any) -> Any:
        settings, _, _ = self._sanitize_parameters(**params)
        values = inputs if isinstance(inputs, list) else [inputs]
        for value in values:
            self.check_input(value)
        encodings = [self._encode(value, settings) for value in values]
        # Every window of every input in one forward pass.
        rows = [{k: enc[k][w] for k in enc if k in self._model_inputs}
                for enc in encodings for w in range(len(enc["input_ids"]))]
        features = self.tokenizer.pad(rows, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = self.model(**features)
        starts = output.start_logits.float().cpu().numpy()
        ends = output.end_logits.float().cpu().numpy()
        answers, row = [], 0
        for value, enc in zip(values, encodings):
            windows = len(enc["input_ids"])
            answers.append(self._decode(value["context"], enc, starts[row:row + windows],
                                        ends[row:row + windows], settings))
            row += windows
        return answers if isinstance(inputs, list) else answers[0]

    def _encode(self, value: dict[str, str], settings: dict[str, Any]) -> Any:
        max_seq_len = min(settings["max_seq_len"], self._token_limit or settings["max_seq_len"])
        return self.tokenizer(
            value["question"], value["context"], truncation="only_second", max_length=max_seq_len,
            stride=min(settings["doc_stride"], max_seq_len // 2), return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )

    def _decode(self, context: str, enc: Any, starts: np.ndarray, ends: np.ndarray,
                settings: dict[str, Any]) -> Any:
        answers: list[dict[str, Any]] = []
        null_score = 1_000_000.0
        left_padded = self.tokenizer.padding_side == "left"
        for window in range(len(enc["input_ids"])):
            length = len(enc["input_ids"][window])
            start_logits = starts[window][-length:] if left_padded else starts[window][:length]
            end_logits = ends[window][-length:] if left_padded else ends[window][:length]
            in_context = np.array([sid == 1 for sid in enc.sequence_ids(window)])
            # As the 4.x pipeline: the softmax runs over the context and the
            # CLS token (the "no answer" slot); answers come from the context.
            scored = in_context | (np.array(enc["input_ids"][window]) == self.tokenizer.cls_token_id)
            start = _masked_softmax(start_logits, scored)
            end = _masked_softmax(end_logits, scored)
            if settings["handle_impossible_answer"]:
                null_score = min(null_score, float(start[0] * end[0]))
            start[0] = end[0] = 0.0
            for s, e, score in _best_spans(start, end, settings["top_k"], settings["max_answer_len"], in_context):
                if settings["align_to_words"]:
                    char_start = _word_chars(enc, window, s)[0]
                    char_end = _word_chars(enc, window, e)[1]
                else:
                    char_start, char_end = enc["offset_mapping"][window][s][0], enc["offset_mapping"][window][e][1]
                answers.append({"score": score, "start": char_start, "end": char_end,
                                "answer": context[char_start:char_end]})
        if settings["handle_impossible_answer"]:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[: settings["top_k"]]
        return answers[0] if len(answers) == 1 else answers


def _masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    masked = np.where(allowed, logits, -10000.0).astype(np.float64)
    exp = np.exp(masked - masked.max())
    return exp / exp.sum()


def _best_spans(start: np.ndarray, end: np.ndarray, top_k: int, max_len: int,
                allowed: np.ndarray) -> list[tuple[int, int, float]]:
    # p(start) x p(end) for every start <= end < start + max_len.
    scores = np.tril(np.triu(np.outer(start, end)), max_len - 1)
    flat = scores.flatten()
    order = np.argsort(-flat, kind="stable")[: max(top_k, 1) * 4 + 8]
    spans = []
    for index in order:
        s, e = divmod(int(index), scores.shape[1])
        if allowed[s] and allowed[e] and e >= s:
            spans.append((s, e, float(flat[index])))
        if len(spans) == top_k:
            break
    return spans


def _word_chars(encoded: Any, window: int, token: int) -> tuple[int, int]:
    word = encoded.token_to_word(window, token)
    span = encoded.word_to_chars(window, word, sequence_index=1)
    return span.start, span.end
