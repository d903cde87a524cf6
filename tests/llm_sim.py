"""An OpenAI-compatible model server simulator, for the gateway's tests and benchmarks.

Modelled on how vLLM behaves (as llm-d's inference simulator models it): requests wait in a
queue for one of `max_seqs` sequence slots and for room in the KV cache; an engine loop runs
steps, each prefilling up to `step_tokens` prompt tokens of admitted sequences and decoding one
token for every sequence past its prefill, and takes `step_ms` plus `prefill_us` per prefilled
token. The KV cache has `cache_blocks` blocks of 16 tokens (hashed in a chain): those running
sequences hold, and cached prefixes in the rest (least recently used evicted first), so only
the uncached part of a prompt is prefilled. Tokens are words. Streams are Server-Sent Events
(`data: {...}` per token, then `data: [DONE]`), as OpenAI's. `/metrics` serves vLLM's names:
`vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:gpu_cache_usage_perc` (blocks
held by running sequences over the cache's size), `vllm:prefix_cache_queries_total` and
`..._hits_total` (tokens). A client that goes away frees its sequence.

    python -m tests.llm_sim --port 9001 --port 9002 --model llama-3-8b [--max-seqs 8] ...

prints `serving PORT` for each port once it serves; each port is an engine of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiohttp import web

BLOCK = 16


class Settings(msgspec.Struct, frozen=True):
    models: tuple[str, ...] = ("sim-model",)
    max_seqs: int = 8
    step_ms: float = 4.0
    prefill_us: float = 40.0  # per uncached prompt token
    step_tokens: int = 2048  # prompt tokens prefilled in one step at most
    cache_blocks: int = 2048
    max_tokens: int = 16  # default output length


class Sequence:
    def __init__(self, tokens: list[str], output: int) -> None:
        self.tokens = tokens
        self.blocks = block_hashes(tokens)
        self.output = output
        self.to_prefill = len(tokens)
        self.produced = 0
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.cancelled = False


def block_hashes(tokens: list[str]) -> list[int]:
    hashes, previous = [], 0
    for start in range(0, len(tokens) - len(tokens) % BLOCK, BLOCK):
        previous = hash((previous, *tokens[start : start + BLOCK]))
        hashes.append(previous)
    return hashes


class Engine:
    """vLLM's scheduling, in miniature: the KV cache holds `cache_blocks` blocks, those of running
    sequences (a shared prefix once) and, in what is left, cached prefixes, least recently used
    evicted first; a waiting sequence is admitted, in order, when a slot is free and the blocks it
    needs beyond its cached prefix fit. Hits are counted when a sequence is admitted."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self.cache: dict[int, None] = {}  # blocks with content, least recently used first
        self.wake = asyncio.Event()
        self.stats = {"requests": 0, "cancelled": 0, "prompt_tokens": 0, "cached_tokens": 0, "completed": 0}

    def held(self) -> set[int]:
        return {block for s in self.running for block in s.blocks}

    def _admit(self, sequence: Sequence, held: set[int]) -> bool:
        cached = 0
        for block in sequence.blocks:
            if block not in self.cache:
                break
            cached += 1
        generated = sum(s.produced // BLOCK + 1 for s in self.running)
        needed = len(sequence.blocks) - cached + sequence.output // BLOCK + 1
        if len(held) + generated + needed > self.settings.cache_blocks and self.running:
            return False
        for block in sequence.blocks[:cached]:
            self.cache[block] = self.cache.pop(block)  # most recently used
        sequence.to_prefill = max(len(sequence.tokens) - cached * BLOCK, 1)
        self.stats["prompt_tokens"] += len(sequence.tokens)
        self.stats["cached_tokens"] += len(sequence.tokens) - sequence.to_prefill
        self.running.append(sequence)
        held.update(sequence.blocks)
        return True

    def _remember(self, sequence: Sequence) -> None:
        for block in sequence.blocks:
            self.cache.pop(block, None)
            self.cache[block] = None
        if len(self.cache) > self.settings.cache_blocks:
            held = self.held()
            for block in [b for b in self.cache if b not in held][: len(self.cache) - self.settings.cache_blocks]:
                del self.cache[block]

    def submit(self, tokens: list[str], output: int) -> Sequence:
        sequence = Sequence(tokens, output)
        self.stats["requests"] += 1
        self.waiting.append(sequence)
        self.wake.set()
        return sequence

    def cancel(self, sequence: Sequence) -> None:
        if not sequence.cancelled and sequence.produced < sequence.output:
            sequence.cancelled = True
            self.stats["cancelled"] += 1

    def kv_usage(self) -> float:
        """Blocks running sequences hold (a shared prefix once) over the cache's size."""
        held = len(self.held()) + sum(s.produced // BLOCK + 1 for s in self.running)
        return min(held / self.settings.cache_blocks, 1.0)

    async def run(self) -> None:
        s = self.settings
        while True:
            self.running = [q for q in self.running if not q.cancelled]
            held = self.held()
            while self.waiting and len(self.running) < s.max_seqs:
                if self.waiting[0].cancelled or self._admit(self.waiting[0], held):
                    self.waiting.popleft()
                else:
                    break  # the first in line waits for room, and everyone behind it
            if not self.running:
                self.wake.clear()
                await self.wake.wait()
                continue
            budget = s.step_tokens
            prefilled = 0
            decoding = []
            for sequence in self.running:
                if sequence.to_prefill > 0:
                    take = min(sequence.to_prefill, budget)
                    sequence.to_prefill -= take
                    budget -= take
                    prefilled += take
                    if sequence.to_prefill == 0:
                        self._remember(sequence)
                else:
                    decoding.append(sequence)
            await asyncio.sleep((s.step_ms + prefilled * s.prefill_us / 1000) / 1000)
            for sequence in decoding:
                sequence.produced += 1
                sequence.queue.put_nowait(sequence.produced)
                if sequence.produced >= sequence.output:
                    sequence.queue.put_nowait(None)
                    self.running.remove(sequence)
                    self.stats["completed"] += 1

    def metrics(self) -> str:
        stats = self.stats
        return (
            f'vllm:num_requests_running{{model_name="{self.settings.models[0]}"}} {len(self.running)}\n'
            f'vllm:num_requests_waiting{{model_name="{self.settings.models[0]}"}} {len(self.waiting)}\n'
            f'vllm:gpu_cache_usage_perc{{model_name="{self.settings.models[0]}"}} {self.kv_usage()}\n'
            f"vllm:prefix_cache_queries_total {stats['prompt_tokens']}\n"
            f"vllm:prefix_cache_hits_total {stats['cached_tokens']}\n"
        )


def _prompt(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(f"{message.get('role', '')}: {content}")
        return "\n".join(parts)
    prompt = body.get("prompt", body.get("input", ""))
    return " ".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": "model", "code": code}}
    return web.json_response(body, status=status)


class Simulator:
    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.engine = Engine(settings)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.complete)
        app.router.add_post("/v1/completions", self.complete)
        app.router.add_post("/v1/embeddings", self.embed)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health", self.health)
        app.router.add_get("/stats", self.stats)
        return app

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        body = msgspec.json.decode(await request.read())
        if body.get("model") not in self.settings.models:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "model_not_found")
        return body  # type: ignore[no-any-return]

    async def complete(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        chat = request.path.endswith("chat/completions")
        sequence = self.engine.submit(_prompt(body).split(), int(body.get("max_tokens") or self.settings.max_tokens))
        try:
            if body.get("stream"):
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Served-By": self.name})
                await response.prepare(request)
                async for produced in self._tokens(sequence):
                    delta = {"delta": {"content": f"t{produced} "}} if chat else {"text": f"t{produced} "}
                    chunk = {"object": "chat.completion.chunk", "model": body["model"], "choices": [delta]}
                    await response.write(b"data: " + msgspec.json.encode(chunk) + b"\n\n")
                await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
                return response
            text = "".join([f"t{produced} " async for produced in self._tokens(sequence)])
            choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            usage = {"prompt_tokens": len(sequence.tokens), "completion_tokens": sequence.produced}
            answer = {"object": "chat.completion", "model": body["model"], "choices": [choice], "usage": usage}
            return web.json_response(answer, headers={"X-Served-By": self.name})
        finally:
            self.engine.cancel(sequence)

    async def _tokens(self, sequence: Sequence) -> AsyncIterator[int]:
        while (produced := await sequence.queue.get()) is not None:
            yield produced

    async def embed(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        sequence = self.engine.submit(_prompt(body).split(), 1)
        try:
            async for _ in self._tokens(sequence):
                pass
        finally:
            self.engine.cancel(sequence)
        return web.json_response(
            {"object": "list", "data": [{"object": "embedding", "embedding": [0.1, 0.2], "index": 0}]},
            headers={"X-Served-By": self.name},
        )

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in self.settings.models]}
        )

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.engine.metrics())

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.engine.stats, "cache_blocks": len(self.engine.cache)})


async def serve(ports: list[int], settings: Settings) -> None:
    runners = []
    for port in ports:
        simulator = Simulator(settings, f"sim-{port}")
        runner = web.AppRunner(simulator.app(), access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append((runner, asyncio.ensure_future(simulator.engine.run())))
        print(f"serving {port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--model", action="append")
    defaults = Settings()
    for field in ("max_seqs", "step_ms", "prefill_us", "step_tokens", "cache_blocks", "max_tokens"):
        default = getattr(defaults, field)
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args()
    settings = Settings(
        models=tuple(args.model or defaults.models),
        **{
            f: getattr(args, f)
            for f in ("max_seqs", "step_ms", "prefill_us", "step_tokens", "cache_blocks", "max_tokens")
        },
    )
    try:
        import uvloop

        uvloop.run(serve(args.port, settings))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
