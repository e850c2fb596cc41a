from __future__ import annotations

from pathlib import Path

import pytest

from helpers import ServerProcess, build_tiny_bert


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


@pytest.fixture(scope="module")
def fill_mask_server(fill_mask_model: Path, tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess(
        ["--model", str(fill_mask_model), "--max-batch-size", "4", "--max-batch-delay-ms", "20",
         "--max-body-bytes", "4096", "--max-inputs", "16"],
        tmp_path_factory.mktemp("logs") / "fill-mask.log",
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def default_model_server(tmp_path_factory: pytest.TempPathFactory):
    """The embedded all-MiniLM-L6-v2, served with no --model (as a newcomer does)."""
    server = ServerProcess(["--max-batch-size", "8"], tmp_path_factory.mktemp("logs") / "default.log").start()
    yield server
    server.stop()
