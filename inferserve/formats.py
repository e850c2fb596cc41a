"""JSON response documents built in the worker (no torch, no HTTP).

The worker encodes responses so the front-end's event loop only copies
bytes; these functions say what each API's document looks like.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is only needed in the worker
    import numpy as np

import orjson


def _dumps(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def tei_embeddings(vectors: list[np.ndarray]) -> bytes:
    """``POST /embed``: a list of vectors (text-embeddings-inference's shape)."""
    import numpy as np

    return _dumps(np.stack(vectors))


def openai_embeddings(vectors: list[np.ndarray], model: str, prompt_tokens: int, encoding_format: str) -> bytes:
    """``POST /v1/embeddings``: OpenAI's embeddings response."""
    data = []
    for index, vector in enumerate(vectors):
        if encoding_format == "base64":
            # OpenAI's base64 format: little-endian float32 bytes.
            embedding: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return _dumps({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
