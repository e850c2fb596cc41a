"""Read a sentence-transformers directory into a ``StChain``: what
``SentenceTransformer(dir)`` (or ``SparseEncoder``) builds, as data.

``modules.json`` lists the modules in order. Both of sentence-transformers'
formats are read: the legacy Pooling flags (``pooling_mode_cls_token`` ...)
and 5/6's ``pooling_mode`` string (or list); ``max_seq_length`` from the
legacy ``sentence_bert_config.json`` (6 keeps it in the tokenizer's
``model_max_length``, which the token limit reads anyway). A module type we
do not implement is a ``ModelLoadError`` naming it: a silently skipped head
would serve other vectors than the model's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ..errors import ModelLoadError

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# The legacy config's flags, in sentence-transformers' concatenation order.
_LEGACY_POOLING_FLAGS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
)
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")


@dataclass(frozen=True)
class PoolingSpec:
    modes: tuple[str, ...] = ("mean",)  # more than one: concatenated, in this order
    include_prompt: bool = True


@dataclass(frozen=True)
class HeadSpec:
    """A module after the pooling: ``dense``, ``layer_norm`` or ``normalize``."""

    kind: str
    path: str  # the module's folder
    config: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.config).get(key, default)


@dataclass(frozen=True)
class SpladeSpec:
    pooling: str = "max"  # or "sum"
    activation: str = "relu"  # or "log1p_relu"


@dataclass(frozen=True)
class StChain:
    pooling: PoolingSpec = PoolingSpec()
    heads: tuple[HeadSpec, ...] = ()
    splade: SpladeSpec | None = None
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: tuple[tuple[str, str], ...] = ()
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"
    top_k: int | None = None  # a sparse encoder's max_active_dims
    sentence_transformers: bool = False  # the directory has a modules.json

    @property
    def normalizes(self) -> bool:
        """Whether the chain ends in Normalize (then the client's ``normalize`` governs it)."""
        return bool(self.heads) and self.heads[-1].kind == "normalize"

    @property
    def sparse(self) -> bool:
        return self.splade is not None


def read_chain(model_dir: str) -> StChain:
    """The chain of ``model_dir``; a plain transformers model: mean pooling, no
    heads (and the prompts of a config_sentence_transformers.json beside it)."""
    modules_path = os.path.join(model_dir, "modules.json")
    if not os.path.isfile(modules_path):
        st_config = _json_if_there(os.path.join(model_dir, "config_sentence_transformers.json"))
        prompts = {str(k): str(v) for k, v in (st_config.get("prompts") or {}).items()}
        return StChain(prompts=tuple(sorted(prompts.items())))
    modules = _json(modules_path)
    if not isinstance(modules, list):
        raise ModelLoadError(f"{modules_path}: expected a list of modules")
    pooling: PoolingSpec | None = None
    heads: list[HeadSpec] = []
    splade: SpladeSpec | None = None
    for entry in modules:
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        folder = os.path.join(model_dir, entry.get("path") or "")
        if kind in ("Transformer", "MLMTransformer"):
            continue
        if kind == "Pooling":
            pooling = read_pooling(_json(os.path.join(folder, "config.json")))
        elif kind == "SpladePooling":
            config = _json(os.path.join(folder, "config.json"))
            splade = SpladeSpec(config.get("pooling_strategy", "max"), config.get("activation_function", "relu"))
        elif kind in ("Dense", "LayerNorm", "Normalize"):
            config = _json(os.path.join(folder, "config.json")) if kind != "Normalize" else {}
            # Only heads on the pooled vector are served: one on the token
            # vectors (before Pooling) or on SPLADE weights would be skipped.
            if pooling is None or splade is not None or config.get("module_input_name", "sentence_embedding") \
                    != "sentence_embedding":
                raise ModelLoadError(f"{modules_path}: module {entry.get('name', entry.get('idx'))!r} of type "
                                     f"{entry.get('type')!r} is not after a Pooling module on the sentence "
                                     "embedding; inferserve serves heads only there")
            snake = {"Dense": "dense", "LayerNorm": "layer_norm", "Normalize": "normalize"}[kind]
            heads.append(HeadSpec(snake, folder, tuple(sorted(config.items()))))
        elif kind == "Dropout":
            continue  # the identity at inference
        else:
            raise ModelLoadError(
                f"{modules_path}: module {entry.get('name', entry.get('idx'))!r} of type "
                f"{entry.get('type')!r} is not one inferserve implements (it serves Transformer, Pooling, "
                "Dense, LayerNorm, Normalize, Dropout, SpladePooling); refusing to serve other vectors "
                "than the model's"
            )
    sbert = _json_if_there(os.path.join(model_dir, "sentence_bert_config.json"))
    st_config = _json_if_there(os.path.join(model_dir, "config_sentence_transformers.json"))
    prompts = {str(k): str(v) for k, v in (st_config.get("prompts") or {}).items()}
    default_prompt = st_config.get("default_prompt_name")
    if default_prompt is not None and default_prompt not in prompts:
        raise ModelLoadError(f"default_prompt_name {default_prompt!r} is not one of the prompts {sorted(prompts)}")
    similarity = st_config.get("similarity_fn_name") or ("dot" if splade else "cosine")
    if similarity not in SIMILARITY_FUNCTIONS:
        raise ModelLoadError(f"similarity_fn_name {similarity!r} is not one of {SIMILARITY_FUNCTIONS}")
    top_k = st_config.get("max_active_dims")
    return StChain(
        pooling=pooling or PoolingSpec(),
        heads=tuple(heads),
        splade=splade,
        max_seq_length=sbert.get("max_seq_length"),
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        prompts=tuple(sorted(prompts.items())),
        default_prompt_name=default_prompt,
        similarity_fn_name=similarity,
        top_k=top_k if isinstance(top_k, int) and top_k > 0 else None,
        sentence_transformers=True,
    )


def read_pooling(config: dict[str, Any]) -> PoolingSpec:
    """A Pooling config in either format (``pooling_mode`` wins where both are)."""
    mode = config.get("pooling_mode")
    if mode is None:
        modes = tuple(name for flag, name in _LEGACY_POOLING_FLAGS if config.get(flag))
        modes = modes or ("mean",)  # sentence-transformers' own fallback
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown or not modes:
        raise ModelLoadError(f"unsupported pooling mode {unknown or modes}; known: {', '.join(POOLING_MODES)}")
    return PoolingSpec(modes=modes, include_prompt=bool(config.get("include_prompt", True)))


def _json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def _json_if_there(path: str) -> dict[str, Any]:
    return _json(path) if os.path.isfile(path) else {}
