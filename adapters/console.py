"""Local terminal chat on the same engine (python -m bot chat).

Interactive: answers stream as they are generated. With stdin not a terminal, each
input line is one message and each reply is printed whole, so it works in scripts.
"""

from __future__ import annotations

import asyncio
from typing import TextIO

from bot.engine import Engine
from bot.messages import Message, ReplyKind

PROMPT = "you> "


async def _read_line(stream: TextIO) -> str | None:
    line = await asyncio.to_thread(stream.readline)
    return line if line else None


async def answer(engine: Engine, message: Message, out: TextIO, *, stream: bool) -> None:
    """Print the engine's reply to one message."""
    streamed = False
    async for event in engine.handle(message):
        if event.kind is ReplyKind.DELTA and stream:
            if not streamed:
                out.write("parley> ")
            out.write(event.text)
            out.flush()
            streamed = True
        elif event.kind is ReplyKind.FINAL:
            out.write("\n" if streamed else f"parley> {event.text}\n")
        elif event.kind is ReplyKind.ERROR:
            out.write(("\n" if streamed else "") + f"parley! {event.text}\n")
        elif event.kind is ReplyKind.NOTICE:
            out.write(f"{event.text}\n")
        elif event.kind is ReplyKind.STATUS and stream and not streamed:
            out.write(f"… {event.text}\r")
    out.flush()


async def chat(engine: Engine, user: str, channel: str, stdin: TextIO, out: TextIO) -> None:
    interactive = stdin.isatty()
    while True:
        if interactive:
            out.write(PROMPT)
            out.flush()
        line = await _read_line(stdin)
        if line is None:
            return
        text = line.rstrip("\n")
        message = Message("console", "local", channel, user, text)
        await answer(engine, message, out, stream=interactive)
