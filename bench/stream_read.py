"""What reading one streamed chunk costs the model client, without wake-ups.

    python bench/stream_read.py [--answers 500]

A bare asyncio server (no aiohttp, no JSON work of its own: each answer is one bytes
object made in advance) answers every request with the same 68-word answer as an
OpenAI-compatible event stream, either in one event or in 74 (a word each, as from a
real model), all written at once; `ModelClient.stream` reads it. The difference in CPU
(process time) between the two, divided by the 73 extra events, is what the client's
path costs per chunk when nothing has to wake up for it: aiohttp's HTTP parser and
stream, the SSE split, orjson and the assembler. bench/platform_bench.py measures the
same chunks as they come, paced, in a whole bot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.llm import ModelClient

WORDS = [f"word{index} " for index in range(74)]
PROMPT = [{"role": "user", "content": "How should we roll out the new billing service?"}]


def _event(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
            "model": "bench", "choices": [choice], "usage": None}  # fmt: skip


def response(words: list[str]) -> bytes:
    """The whole HTTP response: role, a content event per item of `words`, finish,
    usage and [DONE], each its own HTTP chunk as a real server sends them."""
    events = [_event({"role": "assistant", "content": ""})]
    events += [_event({"content": word}) for word in words]
    events.append(_event({}, "stop"))
    usage = {"prompt_tokens": 12, "completion_tokens": 74, "total_tokens": 86}
    events.append({**_event({}), "choices": [], "usage": usage})
    datas = [b"data: " + json.dumps(event).encode() + b"\n\n" for event in events]
    datas.append(b"data: [DONE]\n\n")
    body = b"".join(b"%x\r\n%s\r\n" % (len(data), data) for data in datas) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked"
    return head + b"\r\n\r\n" + body


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            writer.write(answer)
    except asyncio.IncompleteReadError:  # the client closed its connection
        writer.close()


async def seconds_per_answer(answer: bytes, answers: int) -> float:
    """Process time per answer read by the client, warm."""
    server = await asyncio.start_server(
        lambda reader, writer: serve(reader, writer, answer), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    client = ModelClient(
        api_key="bench", base_url=f"http://127.0.0.1:{port}/v1", timeout_seconds=5,
        max_attempts=1, retry_max_wait_seconds=0.1,
    )  # fmt: skip
    try:
        for _ in range(answers // 10):  # warm up: the connection, caches
            async for _ in client.stream("bench", PROMPT):
                pass
        started = time.process_time()
        for _ in range(answers):
            async for _ in client.stream("bench", PROMPT):
                pass
        return (time.process_time() - started) / answers
    finally:
        await client.close()
        server.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--answers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    whole, chunked = response(["".join(WORDS)]), response(WORDS)
    per_chunk = []
    for _ in range(arguments.rounds):  # interleaved: a slow spell falls on both
        one = await seconds_per_answer(whole, arguments.answers)
        many = await seconds_per_answer(chunked, arguments.answers)
        per_chunk.append((many - one) / (len(WORDS) - 1) * 1e6)
        print(f"one event {one * 1e6:.0f} µs, 74 events {many * 1e6:.0f} µs per answer: "
              f"{per_chunk[-1]:.1f} µs per further chunk", flush=True)  # fmt: skip
    print(f"median {statistics.median(per_chunk):.1f} µs per chunk "
          f"({min(per_chunk):.1f}-{max(per_chunk):.1f})")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
