"""Question answering and the seq2seq tasks (text2text-generation,
summarization, translation) through POST /.

transformers 5 has no pipeline for these any more, so each reference is
computed here from the model itself: generate() for seq2seq, and for
question answering a brute-force search over every (start, end) span.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import (
    ServerProcess, build_tiny_bart, build_tiny_bert, build_tiny_t5_translator, start_together, stop_all,
)

SERVER_ARGS = ["--max-batch-delay-ms", "50", "--batch-wait", "fixed"]
TEXTS = ["the quick brown fox", "hello world how are you today", "a b c"]
CONTEXTS = [
    {"question": "where does john live", "context": "john lives in paris and mary lives in london"},
    {"question": "what did the cat do", "context": "the cat sat on the mat all day long"},
]


async def _concurrent(url: str, documents: list[dict[str, Any]]) -> list[tuple[int, Any, int]]:
    async with aiohttp.ClientSession() as session:
        async def one(document: dict[str, Any]) -> tuple[int, Any, int]:
            async with session.post(url + "/", json=document) as resp:
                return resp.status, await resp.json(), int(resp.headers.get("X-Batch-Size", 0))

        return await asyncio.gather(*(one(d) for d in documents))


# ---- seq2seq -------------------------------------------------------------------

SEQ2SEQ = {
    # --task: (builder, key of the output, prefix the model's config adds)
    "text2text-generation": (build_tiny_bart, "generated_text", ""),
    "summarization": (build_tiny_bart, "summary_text", ""),
    "translation_en_to_de": (build_tiny_t5_translator, "translation_text", "translate English to German: "),
}
GENERATE = {"max_new_tokens": 6, "do_sample": False}


@pytest.fixture(scope="module")
def servers(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every seq2seq task's server and question answering's, started side by side."""
    logs = tmp_path_factory.mktemp("logs")
    started = {}
    for task, (build, _, _) in SEQ2SEQ.items():
        model_dir = build(models_dir / f"seq2seq-{build.__name__}")
        # text2text-generation without --task: inferred from the config (BartForConditionalGeneration).
        given = [] if task == "text2text-generation" else ["--task", task]
        started[task] = ServerProcess(["--model", str(model_dir), *given, *SERVER_ARGS], logs / f"{task}.log")
    # No --task: inferred from BertForQuestionAnswering.
    qa_model = build_tiny_bert(models_dir / "qa", "BertForQuestionAnswering")
    started["question-answering"] = ServerProcess(["--model", str(qa_model), *SERVER_ARGS], logs / "qa.log")
    start_together(list(started.values()))
    yield started
    stop_all(list(started.values()))


@pytest.fixture(scope="module", params=sorted(SEQ2SEQ))
def seq2seq(request, servers, models_dir: Path):
    import transformers

    task = request.param
    build, key, prefix = SEQ2SEQ[task]
    model_dir = models_dir / f"seq2seq-{build.__name__}"
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()

    def reference(text: str) -> str:
        import torch

        encoded = tokenizer(prefix + text, return_tensors="pt")
        encoded.pop("token_type_ids", None)
        with torch.inference_mode():
            ids = model.generate(**encoded, **GENERATE)
        return tokenizer.decode(ids[0], skip_special_tokens=True, clean_up_tokenization_spaces=False)

    return task, servers[task], key, reference


def test_seq2seq_single_and_list_match_generate(seq2seq) -> None:
    task, server, key, reference = seq2seq
    expected = [reference(text) for text in TEXTS]
    assert len(set(expected)) == len(expected), "the tiny model should answer each input differently"
    single = server.post_json({"inputs": TEXTS[0], "parameters": GENERATE})
    assert single.status == 200, single.body
    assert single.json() == [{key: expected[0]}]  # a lone input: a list of one, as the 4.x pipeline
    many = server.post_json({"inputs": TEXTS, "parameters": GENERATE})
    assert many.status == 200, many.body
    assert many.json() == [{key: text} for text in expected]
    assert server.get("/info").json()["task"] == task


def test_seq2seq_concurrent_requests_batch_and_stay_correct(seq2seq) -> None:
    _, server, key, reference = seq2seq
    documents = [{"inputs": text, "parameters": GENERATE} for text in TEXTS * 3]
    results = asyncio.run(_concurrent(server.url, documents))
    for document, (status, body, _) in zip(documents, results):
        assert status == 200
        assert body == [{key: reference(document["inputs"])}]
    assert max(size for _, _, size in results) > 1


def test_seq2seq_several_sequences_and_bad_parameters(seq2seq) -> None:
    _, server, key, _ = seq2seq
    beams = server.post_json({"inputs": TEXTS[0], "parameters": {
        "max_new_tokens": 4, "num_beams": 2, "num_return_sequences": 2, "do_sample": False}})
    assert beams.status == 200, beams.body
    assert len(beams.json()) == 2 and all(set(item) == {key} for item in beams.json())
    unknown = server.post_json({"inputs": TEXTS[0], "parameters": {"no_such_option": 1}})
    assert unknown.status == 422 and "no_such_option" in unknown.json()["error"]
    not_text = server.post_json({"inputs": {"question": "a", "context": "b"}})
    assert not_text.status == 422
    assert server.post_json({"inputs": TEXTS[1], "parameters": GENERATE}).status == 200


def test_seq2seq_task_is_inferred_from_the_config(servers) -> None:
    server = servers["text2text-generation"]  # started without --task
    assert server.get("/info").json()["task"] == "text2text-generation"
    answer = server.post_text("hello there")
    assert answer.status == 200 and set(answer.json()[0]) == {"generated_text"}


# ---- question answering -----------------------------------------------------


def _reference_answers(model: Any, tokenizer: Any, question: str, context: str,
                       top_k: int = 1, max_answer_len: int = 15) -> list[dict[str, Any]]:
    """Every span scored p(start) x p(end), softmax over context tokens + CLS."""
    import torch

    encoded = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0].tolist()
    with torch.inference_mode():
        out = model(**encoded)
    sequence = encoded.sequence_ids(0)
    scored = [i for i, sid in enumerate(sequence) if sid == 1 or i == 0]
    p_start = torch.softmax(out.start_logits[0, scored].double(), dim=0)
    p_end = torch.softmax(out.end_logits[0, scored].double(), dim=0)
    spans = []
    for a, s in enumerate(scored):
        for b, e in enumerate(scored):
            if sequence[s] == 1 and sequence[e] == 1 and s <= e < s + max_answer_len:
                start, end = offsets[s][0], offsets[e][1]
                spans.append({"score": float(p_start[a] * p_end[b]), "start": start, "end": end,
                              "answer": context[start:end]})
    return sorted(spans, key=lambda x: -x["score"])[:top_k]


@pytest.fixture(scope="module")
def qa(servers, models_dir: Path):
    import transformers

    model_dir = models_dir / "qa"
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    return servers["question-answering"], lambda item, **kw: _reference_answers(
        model, tokenizer, item["question"], item["context"], **kw)


def _assert_answer(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert {k: got[k] for k in ("start", "end", "answer")} == {k: expected[k] for k in ("start", "end", "answer")}
    assert got["score"] == pytest.approx(expected["score"], rel=1e-4)


def test_question_answering_finds_the_best_span(qa) -> None:
    server, reference = qa
    assert server.get("/info").json()["task"] == "question-answering"
    single = server.post_json({"inputs": CONTEXTS[0]})
    assert single.status == 200, single.body
    _assert_answer(single.json(), reference(CONTEXTS[0])[0])
    many = server.post_json({"inputs": CONTEXTS, "parameters": {"top_k": 3}})
    assert many.status == 200, many.body
    for got, item in zip(many.json(), CONTEXTS):
        expected = reference(item, top_k=3)
        assert len(got) == 3
        for g, e in zip(got, expected):
            _assert_answer(g, e)
    short = server.post_json({"inputs": CONTEXTS[1], "parameters": {"max_answer_len": 1, "top_k": 2}})
    for g, e in zip(short.json(), reference(CONTEXTS[1], top_k=2, max_answer_len=1)):
        _assert_answer(g, e)
        assert " " not in g["answer"]


def test_question_answering_reads_a_context_longer_than_the_model_in_windows(qa) -> None:
    server, _ = qa
    words = [f"word{i % 50}" for i in range(400)] + ["paris"]  # ~800 tokens; the model takes 128
    context = " ".join(words)
    answer = server.post_json({"inputs": {"question": "where", "context": context}, "parameters": {"top_k": 5}})
    assert answer.status == 200, answer.body
    for item in answer.json():
        assert context[item["start"]:item["end"]] == item["answer"] and item["answer"]
    # Spans come from windows all over the context, not only from the first
    # (which holds ~60 of its 401 words, under 500 characters).
    assert max(item["end"] for item in answer.json()) > 600


def test_question_answering_batches_concurrent_requests(qa) -> None:
    server, reference = qa
    documents = [{"inputs": item} for item in CONTEXTS * 4]
    results = asyncio.run(_concurrent(server.url, documents))
    for document, (status, body, _) in zip(documents, results):
        assert status == 200
        _assert_answer(body, reference(document["inputs"])[0])
    assert max(size for _, _, size in results) > 1


def test_question_answering_rejects_bad_inputs(qa) -> None:
    server, _ = qa
    assert server.post_json({"inputs": "no question here"}).status == 422
    assert server.post_json({"inputs": {"question": "x"}}).status == 422
    assert server.post_json({"inputs": CONTEXTS[0], "parameters": {"top_k": 0}}).status == 422
    assert server.post_json({"inputs": CONTEXTS[0], "parameters": {"nope": 1}}).status == 422
    assert server.post_json({"inputs": CONTEXTS[0]}).status == 200
