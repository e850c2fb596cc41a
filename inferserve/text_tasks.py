"""Text tasks that transformers 5 no longer ships as pipelines.

transformers 5 removed the question-answering, text2text-generation,
summarization and translation pipelines; the models (``AutoModelFor
QuestionAnswering``, ``AutoModelForSeq2SeqLM``) remain. Users still deploy
those models and their clients still parse the 4.x output shapes (the
Hugging Face inference API's), so these small classes give them back:
same parameters, same outputs, with the pipeline surface the BatchRunner
drives (``_sanitize_parameters``, ``__call__`` over a list with
``batch_size``). Imported only in the worker process.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
import transformers

from .model import token_limit
from .rejections import InputRejected

SEQ2SEQ_OUTPUT_KEYS = {
    "text2text-generation": "generated_text",
    "summarization": "summary_text",
    "translation": "translation_text",
}


def own_task_family(task: str) -> str | None:
    """Which of our implementations serves ``task``, if any."""
    if task in ("question-answering", "text2text-generation", "summarization"):
        return task
    if task == "translation" or (task.startswith("translation_") and "_to_" in task):
        return "translation"  # translation_en_to_de names its languages
    return None


def build_own_pipeline(task: str, model: str, device: str, dtype: Any) -> Any:
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


class _OwnPipeline:
    """What BatchRunner uses of a transformers Pipeline."""

    task: str

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = model.device
        self._preprocess_params: dict[str, Any] = {}
        self._forward_params: dict[str, Any] = {}
        self._postprocess_params: dict[str, Any] = {}
        self._token_limit = token_limit(tokenizer, model.config)


def _unexpected(name: str) -> TypeError:
    # Same wording as a pipeline's, which the runner turns into a 422.
    return TypeError(f"_sanitize_parameters() got an unexpected keyword argument '{name}'")


def _positive_int(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


# ---- question answering ------------------------------------------------------


class ExtractiveQuestionAnswering(_OwnPipeline):
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
                raise _unexpected(name)
        settings = {**self._DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
        for name in ("top_k", "doc_stride", "max_answer_len", "max_seq_len", "max_question_len"):
            _positive_int(settings, name, self._DEFAULTS[name])
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


# ---- sequence to sequence ----------------------------------------------------


class Seq2SeqGeneration(_OwnPipeline):
    """Encoder-decoder generation: text2text-generation, summarization, translation.

    Outputs ``[{"generated_text" | "summary_text" | "translation_text": ...}]``
    per input (one entry per returned sequence), as the 4.x pipelines did.
    A ``task_specific_params`` entry in the model's config (T5's
    "summarize: " prefix, its generation defaults) applies as it did there.
    """

    _OWN_PARAMS = frozenset({"clean_up_tokenization_spaces", "truncation", "src_lang", "tgt_lang"})

    def __init__(self, task: str, model: Any, tokenizer: Any) -> None:
        super().__init__(model, tokenizer)
        self.task = task
        family = own_task_family(task) or task
        self._key = SEQ2SEQ_OUTPUT_KEYS[family]
        specific = (getattr(model.config, "task_specific_params", None) or {}).get(task, {})
        self._prefix = specific.get("prefix") or getattr(model.config, "prefix", None) or ""
        self._generate_defaults = {k: v for k, v in specific.items() if k != "prefix"}
        self._generation_names = set(transformers.GenerationConfig().to_dict())
        # Multilingual tokenizers (mBART, M2M100, NLLB) build translation
        # inputs themselves: source language tag, forced target BOS token.
        self._multilingual = family == "translation" and hasattr(tokenizer, "_build_translation_inputs")
        parts = task.split("_")  # translation_en_to_fr names both languages
        self._languages = {"src_lang": parts[1], "tgt_lang": parts[3]} if len(parts) == 4 else {}

    def _sanitize_parameters(self, **params: Any) -> tuple[dict, dict, dict]:
        for name in params:
            if name not in self._OWN_PARAMS and name not in self._generation_names:
                raise _unexpected(name)
        if ("src_lang" in params or "tgt_lang" in params) and not self._multilingual:
            raise ValueError("src_lang/tgt_lang need a multilingual translation model (mBART, M2M100, NLLB)")
        if "num_return_sequences" in params:
            _positive_int(params, "num_return_sequences", 1)
        return {}, dict(params), {}

    def __call__(self, inputs: Any, batch_size: int | None = None, **params: Any) -> Any:
        self._sanitize_parameters(**params)
        if isinstance(inputs, list):
            size = max(1, batch_size or 1)
            outputs: list[Any] = []
            for first in range(0, len(inputs), size):
                outputs.extend(self._generate(inputs[first:first + size], params))
            return outputs
        return self._generate([inputs], params)[0]

    def check_input(self, value: Any) -> None:
        if not isinstance(value, str):
            raise InputRejected(f"{self.task} takes a string")

    def _generate(self, texts: list[str], params: dict[str, Any]) -> list[list[dict[str, str]]]:
        for text in texts:
            self.check_input(text)
        settings = dict(params)
        clean = settings.pop("clean_up_tokenization_spaces", False)
        truncate = settings.pop("truncation", True)
        languages = {name: settings.pop(name, self._languages.get(name)) for name in ("src_lang", "tgt_lang")}
        limit = self._token_limit
        tokenize = dict(padding=True, return_tensors="pt",
                        truncation=bool(truncate and limit), max_length=limit if truncate else None)
        prefixed = [self._prefix + text for text in texts]
        if self._multilingual:  # as the 4.x TranslationPipeline did
            encoded = self.tokenizer._build_translation_inputs(prefixed, **languages, **tokenize)
        else:
            encoded = self.tokenizer(prefixed, **tokenize)
        encoded.pop("token_type_ids", None)  # encoder-decoder models take none
        encoded = encoded.to(self.device)
        with torch.inference_mode():
            generated = self.model.generate(**encoded, **{**self._generate_defaults, **settings})
        per_input = generated.shape[0] // len(texts)
        decoded = self.tokenizer.batch_decode(
            generated, skip_special_tokens=True, clean_up_tokenization_spaces=clean
        )
        return [
            [{self._key: text} for text in decoded[i * per_input:(i + 1) * per_input]]
            for i in range(len(texts))
        ]

    @staticmethod
    def as_list_output(outputs: list[Any]) -> list[Any]:
        """A list request's answer: one dict per input when each has one
        sequence (the 4.x pipelines flattened it the same way)."""
        if all(isinstance(out, list) and len(out) == 1 for out in outputs):
            return [out[0] for out in outputs]
        return outputs
