"""What ``POST /`` (and SageMaker's ``/invocations``) takes, by the model
served: the inference API's pipeline body; on a sentence-transformers model
``/embed``'s or ``/similarity``'s; on a SPLADE model ``/embed_sparse``'s, as
TEI routes it. ``handlers.infer`` parses by it and ``openapi.py`` documents
it, so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ipc import WorkerReady
from . import tei_sparse
from .fields import Parser
from .inference_api import parse_pipeline
from .schemas import ref


@dataclass(frozen=True)
class RootBody:
    """One kind of model's ``POST /``: its parser and the schemas of its JSON
    body, its raw text body and its 200 answer."""

    parse: Parser
    request: str
    text: str
    answer: dict[str, Any]


ROOT_BODIES = {
    "pipeline": RootBody(parse_pipeline, "PipelineRequest", "TextBody", ref("PipelineOutput")),
    # Answered as the body was /embed's or /similarity's.
    "dense": RootBody(tei_sparse.parse_root, "RootSentenceModelRequest", "EmbedTextBody",
                      {"anyOf": [ref("EmbedResponse"), ref("SimilarityResponse")]}),
    "sparse": RootBody(tei_sparse.parse_root_sparse, "EmbedSparseRequest", "EmbedTextBody",
                       ref("EmbedSparseResponse")),
}


def root_kind(info: WorkerReady | None) -> str:
    """The ``ROOT_BODIES`` key of a model (its worker's ready message; None
    before one is ready: the pipeline's)."""
    if info is None or not info.facts.sentence_transformers:
        return "pipeline"
    return "sparse" if info.facts.sparse else "dense"
