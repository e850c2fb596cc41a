"""The peer: a plain single-process Starlette/uvicorn server that batches with
an asyncio queue (the classic Starlette example, plus batching). The model runs
on a thread so the event loop stays free. Loopback only.

    python -m bench.peer_servers.starlette_server MODEL TASK PORT MAX_BATCH TIMEOUT_S
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def make_app(model: str, task: str, max_batch: int, timeout: float) -> Starlette:
    import transformers

    pipe = transformers.pipeline(task, model=model, device="cpu")
    queue: asyncio.Queue = asyncio.Queue()

    def run(texts: list[str]) -> list:
        return [pipe(texts[0])] if len(texts) == 1 else pipe(texts, batch_size=len(texts))

    async def batcher() -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            close_at = loop.time() + timeout
            while len(batch) < max_batch:
                remaining = close_at - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            outputs = await loop.run_in_executor(None, run, [text for text, _ in batch])
            for (_, future), output in zip(batch, outputs):
                future.set_result(output)

    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        future = asyncio.get_running_loop().create_future()
        await queue.put((body["inputs"], future))
        return JSONResponse(await future)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def lifespan(app: Starlette):
        task_ = asyncio.create_task(batcher())
        yield
        task_.cancel()

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health)],
                     lifespan=lifespan)


if __name__ == "__main__":
    model, task, port, max_batch, timeout = sys.argv[1:6]
    uvicorn.run(make_app(model, task, int(max_batch), float(timeout)), host="127.0.0.1", port=int(port),
                log_level="warning")
