"""The route table: every route the server answers, one record each
(``route.Route``). ``http.create_app`` registers them, the middlewares
read each one's error family from them, ``/openapi.json`` describes them
and each parser gets its request schema from its record. Adding a route is
adding a record here (and its handler or parser). docs/design.md#routes.
"""

from __future__ import annotations

from . import handlers, openapi, tei, tei_sparse
from .cohere_api import parse_cohere_rerank_v1, parse_cohere_rerank_v2
from .inference_api import parse_pipeline
from .models import list_models, retrieve_model
from .openai_api import parse_openai_embeddings
from .route import COHERE, OPENAI, TEI, Route

_TEI_TAG = "text-embeddings-inference"

ROUTES: tuple[Route, ...] = (
    # ---- a model's routes: bare (the first model) and under /models/{name} ----
    Route("POST", "/", "The task's pipeline on a raw text body or the inference API's JSON (a "
          "sentence-transformers model: /embed's answer, or /similarity's to a sentence-similarity body)",
          "inference", "PipelineOutput", handler=handlers.infer, parse=parse_pipeline, request="PipelineRequest"),
    Route("POST", "/invocations", "POST / at SageMaker's path, as TEI serves it", "inference", "PipelineOutput",
          handler=handlers.infer, parse=parse_pipeline, request="PipelineRequest"),
    Route("POST", "/embed", "Sentence embeddings (TEI)", _TEI_TAG, "EmbedResponse",
          parse=tei.parse_embed, request="EmbedRequest", family=TEI),
    Route("POST", "/embed_all", "Every token's vector (TEI)", _TEI_TAG, "EmbedAllResponse",
          parse=tei.parse_embed_all, request="EmbedAllRequest", family=TEI),
    Route("POST", "/embed_sparse", "Sparse embeddings of a SPLADE model: non-zero weights (TEI)", _TEI_TAG,
          "EmbedSparseResponse", parse=tei_sparse.parse_embed_sparse, request="EmbedSparseRequest", family=TEI),
    Route("POST", "/similarity", "Similarity of a source sentence to each sentence (TEI)", _TEI_TAG,
          "SimilarityResponse", parse=tei_sparse.parse_similarity, request="SimilarityRequest", family=TEI),
    Route("POST", "/tokenize", "Tokens, offsets in UTF-8 bytes (TEI)", _TEI_TAG, "TokenizeResponse",
          parse=tei.parse_tokenize, request="TokenizeRequest", family=TEI),
    Route("POST", "/decode", "Token ids to text (TEI)", _TEI_TAG, "DecodeResponse",
          parse=tei.parse_decode, request="DecodeRequest", family=TEI),
    Route("POST", "/rerank", "Rank texts against a query with a cross-encoder (TEI)", _TEI_TAG, "RerankResponse",
          parse=tei.parse_rerank, request="RerankRequest", family=TEI),
    Route("POST", "/predict", "Classify a text or a text pair (TEI)", _TEI_TAG, "PredictResponse",
          parse=tei.parse_predict, request="PredictRequest", family=TEI),
    Route("POST", "/v1/embeddings", "Embeddings (OpenAI)", "openai", "OpenAICompatResponse",
          parse=parse_openai_embeddings, request="OpenAICompatRequest", family=OPENAI,
          named_by=handlers.embed_model_name),
    Route("POST", "/embeddings", "Embeddings (OpenAI) without the /v1 prefix, as TEI serves them", "openai",
          "OpenAICompatResponse", parse=parse_openai_embeddings, request="OpenAICompatRequest", family=OPENAI,
          named_by=handlers.embed_model_name),
    Route("POST", "/v1/rerank", "Rerank (Cohere v1, Jina)", "rerank", "CohereRerankResponse",
          parse=parse_cohere_rerank_v1, request="CohereRerankRequest", family=COHERE,
          named_by=handlers.rerank_model_name),
    Route("POST", "/v2/rerank", "Rerank (Cohere v2)", "rerank", "CohereRerankResponse",
          parse=parse_cohere_rerank_v2, request="CohereRerankRequest", family=COHERE,
          named_by=handlers.rerank_model_name),
    Route("GET", "/ready", "Readiness: 200 once the model (every model) is loaded and warmed up", "server", "Ready",
          handler=handlers.ready, statuses=(503,), per_model=True, public=True),
    Route("GET", "/info", "The model, its task, device and limits, versions; TEI's Info fields", "server", "Info",
          handler=handlers.info, per_model=True),
    # ---- the server's ----
    Route("GET", "/health", "Liveness: 200 while the process lives", "server", "Health",
          handler=handlers.health, public=True),
    Route("GET", "/ping", "Liveness at SageMaker's path, as /health", "server", "Health",
          handler=handlers.health, public=True),
    Route("GET", "/metrics", "Prometheus metrics", "server", "Text", handler=handlers.metrics,
          ok_type="text/plain"),
    Route("GET", "/v1/models", "The models served (OpenAI)", "openai", "ModelList", handler=list_models,
          family=OPENAI),
    Route("GET", "/v1/models/{model}", "One model (OpenAI)", "openai", "Model", handler=retrieve_model,
          family=OPENAI, statuses=(404,), pattern="/v1/models/{model:.+}"),
    Route("GET", "/openapi.json", "This document", "server", "OpenAPIDocument", handler=openapi.openapi_json,
          public=True),
    Route("GET", "/docs", "This document as a web page (Swagger UI, served from here)", "server", "Text",
          handler=openapi.docs, ok_type="text/html", public=True),
    Route("GET", "/docs/swagger-ui-bundle.js", "Swagger UI's script, which /docs loads (package swagger-ui-bundle)",
          "server", "Text", handler=openapi.docs_asset, ok_type="text/javascript", public=True),
    Route("GET", "/docs/swagger-ui.css", "Swagger UI's style sheet, which /docs loads (package swagger-ui-bundle)",
          "server", "Text", handler=openapi.docs_asset, ok_type="text/css", public=True),
)
