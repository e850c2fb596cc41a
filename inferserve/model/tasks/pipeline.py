"""The pipeline task: a transformers pipeline, batched one stage at a time.

``pipeline(list, batch_size=n)`` pads a batch and hands back padded outputs
(feature-extraction then returns pad-token vectors a single call would not).
For the text tasks below we run the pipeline's own stages ourselves:
``preprocess`` per item (as each request is read, before its batch forms),
pad-collate, one ``forward``, then slice each item back to its own length
and ``postprocess`` it, so every output equals ``pipeline(text)``.
Other tasks go through the pipeline's own list call.

A failing batch is bisected so only the guilty item fails (this also halves
a batch that ran out of memory). Why stage by stage: docs/design.md#staged-batching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch
from transformers.pipelines.base import pad_collate_fn

from ...ipc import Call
from ..errors import InputRejected, ParametersRejected, too_long
from ..tokens import token_limit
from .base import Prepared, PreparesOneByOne, TaskPlan, run_isolated
from ..pipelines.base import OwnPipeline
from .parameters import accepted_parameters, check_parameters

# Tasks whose pipeline is a plain preprocess -> forward -> postprocess chain
# over a tokenizer, which we batch stage by stage.
STAGED_TASKS = frozenset({"fill-mask", "feature-extraction", "text-classification"})
# Tasks whose outputs carry one vector per token: trim them to the item's length.
PER_TOKEN_OUTPUT_TASKS = frozenset({"feature-extraction"})
# Parameters that let each task run a tiny warm-up batch.
_WARMUP_PARAMS: dict[str, dict[str, Any]] = {
    "zero-shot-classification": {"candidate_labels": ["a", "b"]},
    "text-generation": {"max_new_tokens": 1, "do_sample": False},
}
_GENERATE_ONE_TOKEN = {"max_new_tokens": 1}


@dataclass(frozen=True, slots=True)
class PipelineParams:
    raw: dict[str, Any]
    preprocess: dict[str, Any]
    forward: dict[str, Any]
    postprocess: dict[str, Any]


class PipelineTask(PreparesOneByOne):
    """``POST /``: what ``pipeline(inputs, **parameters)`` returns, batched."""

    def __init__(self, pipe: Any, task: str, truncate: bool = True) -> None:
        self._pipe = pipe
        self.task = task
        self._own = pipe if isinstance(pipe, OwnPipeline) else None  # a task transformers 5 dropped
        self._truncate = truncate
        tokenizer = getattr(self._pipe, "tokenizer", None)
        self._staged = task in STAGED_TASKS and tokenizer is not None
        self._can_pad = tokenizer is not None and tokenizer.pad_token_id is not None
        self._pad_right = tokenizer is None or tokenizer.padding_side != "left"
        self._collate = (
            pad_collate_fn(tokenizer, getattr(self._pipe, "feature_extractor", None))
            if self._staged and self._can_pad
            else None
        )
        self.max_tokens = token_limit(tokenizer, self._pipe.model.config)
        self._accepted = accepted_parameters(pipe)

    # ---- per request, as it arrives ----------------------------------------

    def plan(self, call: Call) -> TaskPlan:
        params = self.parse_params(call.params)
        # Only requests computed the same way may share a batch.
        return TaskPlan(params, orjson.dumps(call.params, option=orjson.OPT_SORT_KEYS))

    def parse_params(self, params: dict[str, Any]) -> PipelineParams:
        # Strict: a name the pipeline does not take is a 422, not silently ignored.
        check_parameters(params, self._accepted)
        try:
            pre, fwd, post = self._pipe._sanitize_parameters(**params)
        except (TypeError, ValueError, KeyError) as exc:
            raise ParametersRejected(_public_message(exc)) from exc
        return PipelineParams(
            raw=params,
            preprocess={**self._pipe._preprocess_params, **pre},
            forward={**self._pipe._forward_params, **fwd},
            postprocess={**self._pipe._postprocess_params, **post},
        )

    def prepare(self, value: Any, params: PipelineParams) -> Prepared:
        if not self._staged:
            if self._own is not None:
                self._own.check_input(value)
            return Prepared(value=value, features=value, tokens=_rough_tokens(value))
        features = self._preprocess(value, params.preprocess)
        tokens = int(features["input_ids"].shape[-1])
        if self.max_tokens is not None and tokens > self.max_tokens:
            if not self._truncate:
                raise too_long(tokens, self.max_tokens)
            features = self._preprocess(value, self._truncating(params.preprocess))
            tokens = int(features["input_ids"].shape[-1])
        return Prepared(value=value, features=features, tokens=tokens)

    def encode(self, outputs: list[Any], call: Call, params: PipelineParams, tokens: int) -> bytes:
        finals = [self._finalize(out, value, params) for out, value in zip(outputs, call.inputs)]
        document = finals[0] if call.single else self._combine(finals)
        return orjson.dumps(document, default=_to_jsonable, option=orjson.OPT_SERIALIZE_NUMPY)

    def _finalize(self, output: Any, value: Any, params: PipelineParams) -> Any:
        """Give a single input the exact shape ``pipeline(value)`` returns."""
        if self._staged and self.task == "text-classification":
            # TextClassificationPipeline.__call__ wraps a lone string's result
            # in a list unless top_k was given (its "legacy" behaviour).
            if isinstance(value, str) and "top_k" not in params.raw:
                return [output]
        return output

    def _combine(self, outputs: list[Any]) -> list[Any]:
        """The answer to a list request, from each input's own output."""
        return self._own.combine(outputs) if self._own is not None else outputs

    # ---- per batch (model thread) ----------------------------------------

    def run(self, batch: list[Prepared], params: PipelineParams) -> list[Any]:
        """One output per item, or the exception that item raised."""
        # inference_mode, not a pipeline's no_grad: the same numbers, less
        # dispatch per op (docs/design.md#inference-mode).
        with torch.inference_mode():
            return run_isolated(batch, lambda part: self._run_once(part, params))

    def _run_once(self, batch: list[Prepared], params: PipelineParams) -> list[Any]:
        if self._staged:
            return self._run_staged(batch, params)
        return self._run_pipeline_call(batch, params)

    def _run_staged(self, batch: list[Prepared], params: PipelineParams) -> list[Any]:
        if len(batch) == 1:
            outputs = _in_float32(self._pipe.forward(batch[0].features, **params.forward))
            return [self._postprocess(outputs, params)]
        if self._collate is None:  # no pad token: one item at a time
            return [self._run_staged([item], params)[0] for item in batch]
        padded = max(item.tokens for item in batch)
        outputs = _in_float32(self._pipe.forward(self._collate([i.features for i in batch]), **params.forward))
        return [
            self._postprocess(self._unbatch(outputs, i, item.tokens, padded), params)
            for i, item in enumerate(batch)
        ]

    def _run_pipeline_call(self, batch: list[Prepared], params: PipelineParams) -> list[Any]:
        values = [item.features for item in batch]
        if len(values) == 1:
            # pipeline([x]) can return the inner result instead of [result]
            # (fill-mask does): call it with the bare value instead.
            return [self._pipe(values[0], **params.raw)]
        batch_size = len(values) if self._can_pad and self._pads_generation_safely() else 1
        outputs = self._pipe(values, batch_size=batch_size, **params.raw)
        if len(outputs) != len(values):
            raise RuntimeError(f"pipeline returned {len(outputs)} outputs for {len(values)} inputs")
        return list(outputs)

    def _pads_generation_safely(self) -> bool:
        # A decoder-only model continues from the last position: right padding
        # would put pad tokens between the prompt and its continuation.
        return self.task != "text-generation" or not self._pad_right

    def _postprocess(self, outputs: Any, params: PipelineParams) -> Any:
        try:
            if self.task == "feature-extraction" and not params.postprocess.get("return_tensors"):
                # What the pipeline's postprocess does (outputs[0].tolist()),
                # as a float64 array: orjson writes the same bytes, faster.
                return outputs[0].numpy().astype(np.float64)
            return self._pipe.postprocess(outputs, **params.postprocess)
        except Exception as exc:  # noqa: BLE001 - this item alone fails
            return exc

    def _unbatch(self, outputs: Any, index: int, length: int, padded: int) -> Any:
        """Item ``index`` of a batched model output, shaped as a batch of one."""
        trim = self.task in PER_TOKEN_OUTPUT_TASKS and length < padded
        item: dict[str, Any] = {}
        for key, value in outputs.items():
            if isinstance(value, torch.Tensor):
                value = value[index : index + 1]
                if trim and value.ndim >= 3 and value.shape[1] == padded:
                    value = value[:, :length] if self._pad_right else value[:, padded - length :]
            elif isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
                value = tuple(t[index : index + 1] for t in value)
            elif isinstance(value, list):
                value = value[index]
            item[key] = value
        return outputs.__class__(item)

    def _preprocess(self, value: Any, preprocess_params: dict[str, Any]) -> Any:
        try:
            return self._pipe.preprocess(value, **preprocess_params)
        except Exception as exc:  # noqa: BLE001 - tokenizers raise many kinds
            raise InputRejected(str(exc)) from exc

    def _truncating(self, preprocess_params: dict[str, Any]) -> dict[str, Any]:
        limits = {"truncation": True, "max_length": self.max_tokens}
        if self.task == "fill-mask":
            kwargs = {**(preprocess_params.get("tokenizer_kwargs") or {}), **limits}
            return {**preprocess_params, "tokenizer_kwargs": kwargs}
        return {**preprocess_params, **limits}

    # ---- start-up ----------------------------------------------------------

    def _generates(self) -> bool:
        return self._own is not None and self._own.generates

    def warmup_input(self) -> Any:
        mask = getattr(getattr(self._pipe, "tokenizer", None), "mask_token", None)
        if self.task == "fill-mask" and mask:
            return f"hello {mask}"
        if self.task == "question-answering":
            return {"question": "what?", "context": "hello world"}
        return "hello world"

    def warmup(self) -> None:
        """Run one dummy batch so the first client does not pay for lazy init."""
        params = self.parse_params(_WARMUP_PARAMS.get(self.task, _GENERATE_ONE_TOKEN if self._generates() else {}))
        prepared = self.prepare(self.warmup_input(), params)
        # Two items exercise the collate path as well as the single-item one.
        for result in self.run([prepared, prepared], params):
            if isinstance(result, Exception):
                raise result


def _public_message(exc: BaseException) -> str:
    # "FillMaskPipeline._sanitize_parameters() got an unexpected keyword
    # argument 'x'" names our internals; say what the client did instead.
    unknown = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
    if unknown:
        return f"unsupported parameter {unknown.group(1)!r}"
    return str(exc) or type(exc).__name__


def _rough_tokens(value: Any) -> int:
    # Only used to cost a batch for the token budget where we do not tokenize
    # ahead: about four characters a token.
    text = value if isinstance(value, str) else str(value)
    return max(1, len(text) // 4)


def _in_float32(outputs: Any) -> Any:
    """A model output with its reduced-precision tensors in float32: numpy has
    no bfloat16, and softmaxes and pooling are more exact in float32."""
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
            outputs[key] = value.float()
    return outputs


def _to_jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # torch tensors
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__}")
