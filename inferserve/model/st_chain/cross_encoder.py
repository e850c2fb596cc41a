"""A sentence-transformers CrossEncoder's activation: what ``predict()``
applies to the logits. Read from ``config_sentence_transformers.json``
(``activation_fn``, sentence-transformers 5/6), else ``config.json``'s
``sentence_transformers.activation_fn`` (4.x) or
``sbert_ce_default_activation_function`` (older); sigmoid for one label
when none is named, the identity for more, as ``CrossEncoder`` does."""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from .heads import activation_module


def read_activation(model_dir: str, num_labels: int) -> torch.nn.Module:
    path = _activation_path(model_dir) if os.path.isdir(model_dir) else None
    # CrossEncoder, too, ignores a path outside torch (untrusted code) for its default.
    if path is None or not path.startswith("torch.nn"):
        return torch.nn.Sigmoid() if num_labels == 1 else torch.nn.Identity()
    return activation_module(path, model_dir)


def _activation_path(model_dir: str) -> str | None:
    st_config = _json(os.path.join(model_dir, "config_sentence_transformers.json"))
    if st_config.get("activation_fn"):
        return str(st_config["activation_fn"])
    config = _json(os.path.join(model_dir, "config.json"))
    nested = config.get("sentence_transformers") or {}
    if isinstance(nested, dict) and nested.get("activation_fn"):
        return str(nested["activation_fn"])
    legacy = config.get("sbert_ce_default_activation_function")
    return str(legacy) if legacy else None


def _json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    return document if isinstance(document, dict) else {}
