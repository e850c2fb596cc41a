from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from helpers import ServerProcess, build_tiny_bert, start_together, stop_all


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """load_model sets torch's thread count for its process (a worker's: one
    beside an exported engine); a test that loads in-process puts it back."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else os.cpu_count() or 1
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def fill_mask_model(models_dir: Path) -> Path:
    return build_tiny_bert(models_dir / "tiny-fill-mask", "BertForMaskedLM")


@pytest.fixture(scope="session")
def embedding_model(models_dir: Path) -> Path:
    return build_tiny_bert(models_dir / "tiny-bert", "BertModel")


@pytest.fixture
def server_factory(tmp_path: Path):
    """Start real servers; every one is stopped (and checked for leftovers) at the end."""
    started: list[ServerProcess] = []

    def start(*args: str, wait_ready: bool = True) -> ServerProcess:
        server = ServerProcess(list(args), tmp_path / f"server-{len(started)}.log")
        started.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def shared_servers(fill_mask_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The servers many modules read from without changing: started once, side by side."""
    logs = tmp_path_factory.mktemp("logs")
    servers = {
        "fill-mask": ServerProcess(
            ["--model", str(fill_mask_model), "--max-batch-size", "4", "--max-batch-delay-ms", "20",
             "--max-body-bytes", "4096", "--max-inputs", "16"], logs / "fill-mask.log"),
        # The embedded all-MiniLM-L6-v2, served with no --model (as a newcomer does).
        "default": ServerProcess(["--max-batch-size", "8"], logs / "default.log"),
    }
    start_together(list(servers.values()))
    yield servers
    stop_all(list(servers.values()))


@pytest.fixture(scope="session")
def fill_mask_server(shared_servers: dict[str, ServerProcess]) -> ServerProcess:
    return shared_servers["fill-mask"]


@pytest.fixture(scope="session")
def default_model_server(shared_servers: dict[str, ServerProcess]) -> ServerProcess:
    return shared_servers["default"]


@pytest.fixture(scope="session")
def splade_model(models_dir: Path) -> Path:
    """A tiny SPLADE model saved by sentence-transformers' SparseEncoder (tests/st_models.py)."""
    from st_models import build_splade

    return build_splade(models_dir / "tiny-splade", build_tiny_bert(models_dir / "tiny-mlm", "BertForMaskedLM", seed=4))


@pytest.fixture(scope="session")
def splade_server(splade_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One SPLADE server for the modules that read from it (sparse routes, TEI's contract)."""
    server = ServerProcess(["--model", str(splade_model)], tmp_path_factory.mktemp("logs") / "splade.log").start()
    yield server
    server.stop()
