"""Which request parameters a transformers pipeline takes, derived from its code.

Several pipelines' ``_sanitize_parameters`` end in ``**kwargs`` and drop
(or pass on to a tokenizer that ignores) any name they do not know, so a
misspelt ``top_kk`` would silently do nothing. A pipeline takes:

- the named parameters of its ``_sanitize_parameters``;
- where that ends in ``**kwargs``, what those kwargs reach by name: the
  named parameters of its ``preprocess``, ``_forward`` and ``postprocess``
  (zero-shot-classification's ``candidate_labels``, ``multi_label``, ...);
  a tokenizer's call parameters when they are ``**tokenizer_kwargs``
  (text-classification); the ``GenerationConfig`` fields when they are
  ``**generate_kwargs`` (text-generation).

Anything else is refused with ``unsupported parameter 'name'`` (422).
Our own pipelines (``OwnPipeline``) check their parameters themselves.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import ParametersRejected
from ..pipelines.base import OwnPipeline

_TEXT_ARGUMENTS = frozenset({"text", "text_pair", "text_target", "text_pair_target", "return_tensors"})
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def accepted_parameters(pipe: Any) -> frozenset[str] | None:
    """The parameter names ``pipe`` takes; None where it checks them itself."""
    if isinstance(pipe, OwnPipeline) or not hasattr(pipe, "_sanitize_parameters"):
        return None
    names, rest = _signature_names(pipe._sanitize_parameters, skip_first=False)
    if rest is None:
        return frozenset(names)
    for stage in ("preprocess", "_forward", "postprocess"):
        method = getattr(pipe, stage, None)
        if method is not None:
            names |= _signature_names(method, skip_first=True)[0]
    if "token" in rest and getattr(pipe, "tokenizer", None) is not None:  # **tokenizer_kwargs, **tokenize_kwargs
        names |= _signature_names(pipe.tokenizer.__call__, skip_first=False)[0] - _TEXT_ARGUMENTS
    if "generate" in rest:  # **generate_kwargs
        import transformers

        names |= {name for name in transformers.GenerationConfig().to_dict()
                  if not name.startswith("_") and name != "transformers_version"}
    return frozenset(names)


def check_parameters(params: dict[str, Any], accepted: frozenset[str] | None) -> None:
    """``ParametersRejected`` naming the first parameter ``accepted`` lacks."""
    if accepted is None:
        return
    for name in params:
        if name not in accepted:
            raise ParametersRejected(f"unsupported parameter {name!r}")


def _signature_names(method: Callable[..., Any], skip_first: bool) -> tuple[set[str], str | None]:
    """(named parameters, the name of its ``**kwargs`` or None), private ones left out."""
    try:
        parameters = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return set(), None
    if skip_first and parameters:
        parameters = parameters[1:]  # the stage's input
    names = {p.name for p in parameters if p.kind in _NAMED and not p.name.startswith("_")}
    rest = next((p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    return names, rest
