"""The peer: the same transformers pipeline behind LitServe, with its own
dynamic batching set like ours (max batch size, batch timeout). Loopback only.

    python -m bench.peer_servers.litserve_server MODEL TASK PORT MAX_BATCH TIMEOUT_S
"""

from __future__ import annotations

import sys

import litserve as ls


class PipelineAPI(ls.LitAPI):
    def __init__(self, model: str, task: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_path = model
        self.task = task

    def setup(self, device: str) -> None:
        import transformers

        self.pipe = transformers.pipeline(self.task, model=self.model_path, device="cpu")

    def decode_request(self, request: dict) -> str:
        return request["inputs"]

    def batch(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def predict(self, texts: list[str]) -> list:
        if len(texts) == 1:
            return [self.pipe(texts[0])]
        return self.pipe(texts, batch_size=len(texts))

    def unbatch(self, outputs: list) -> list:
        return list(outputs)

    def encode_response(self, output):
        return output


if __name__ == "__main__":
    model, task, port, max_batch, timeout = sys.argv[1:6]
    api = PipelineAPI(model, task, max_batch_size=int(max_batch), batch_timeout=float(timeout))
    ls.LitServer(api, accelerator="cpu", workers_per_device=1).run(
        host="127.0.0.1", port=int(port), generate_client_file=False
    )
