"""Local terminal chat on the same engine (python -m bot chat).

Interactive: answers stream as they are generated. With stdin not a terminal, each
input line is one message and each reply is printed whole, so it works in scripts.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TextIO

from adapters.common import InFlight
from adapters.console_files import attach, is_attach
from bot.engine import Engine
from bot.messages import Attachment, Message, ReplyEvent, ReplyKind

PROMPT = "you> "
CLEAR_LINE = "\r\033[K"  # back to the line start and erase it: replaces the status


async def _read_line(stream: TextIO) -> str | None:
    line = await asyncio.to_thread(stream.readline)
    return line if line else None


def _save_picture(image: bytes, name: str) -> str:
    """A terminal cannot show a picture: keep it in a file the user can open."""
    suffix = Path(name).suffix or ".png"
    with tempfile.NamedTemporaryFile(prefix="parley-", suffix=suffix, delete=False) as file:
        file.write(image)
    return file.name


def _rest_of(final: str, shown: str) -> str | None:
    """What of the final text is not on screen yet; None: the screen shows other text."""
    shown = shown.lstrip()
    if final.startswith(shown):
        return final[len(shown) :]
    return "" if shown.rstrip() == final else None


class _Printer:
    """Writes one reply: streamed in place when interactive, whole otherwise."""

    def __init__(self, out: TextIO, stream: bool) -> None:
        self.out = out
        self.stream = stream
        self.streamed = False
        self.shown: list[str] = []

    def _start(self) -> str:
        # An interactive status line ("… thinking…") is erased before what replaces it.
        return CLEAR_LINE if self.stream and not self.streamed else ""

    def show(self, event: ReplyEvent) -> None:
        if event.kind is ReplyKind.DELTA and self.stream:
            self.out.write(self._start() + ("" if self.streamed else "parley> ") + event.text)
            self.streamed = True
            self.shown.append(event.text)
        elif event.kind is ReplyKind.FINAL and self.streamed:
            # The final text ends what streamed (its last words come only with it), or
            # replaces it (a withheld answer, say): a terminal cannot take back lines, so
            # a different final text is printed after it.
            rest = _rest_of(event.text, "".join(self.shown))
            self.out.write(f"\nparley> {event.text}\n" if rest is None else f"{rest}\n")
        elif event.kind is ReplyKind.FINAL:
            self.out.write(f"{self._start()}parley> {event.text}\n")
            if event.image:
                self.out.write(
                    f"(picture saved to {_save_picture(event.image, event.image_name)})\n"
                )
        elif event.kind is ReplyKind.ERROR:
            self.out.write(("\n" if self.streamed else self._start()) + f"parley! {event.text}\n")
        elif event.kind is ReplyKind.NOTICE:
            self.out.write(f"{self._start()}{event.text}\n")
        elif event.kind is ReplyKind.STATUS and self.stream and not self.streamed:
            self.out.write(f"{CLEAR_LINE}… {event.text}")
        self.out.flush()


# What people type to leave a terminal chat (end of input, Ctrl-D, does the same).
QUIT_COMMANDS = frozenset({"/quit", "/exit"})


async def answer(engine: Engine, message: Message, out: TextIO, *, stream: bool) -> None:
    """Print the engine's reply to one message."""
    printer = _Printer(out, stream)
    async for event in engine.handle(message):
        printer.show(event)


async def chat(
    engine: Engine, user: str, channel: str, stdin: TextIO, out: TextIO, *, owner: bool = False
) -> None:
    """Chat until the input ends, or until SIGTERM or SIGINT: then the answer in
    progress gets shutdown.grace_seconds to finish, and the chat ends normally. `owner`:
    the person at the terminal runs Parley, so is its admin (console:local)."""
    interactive = stdin.isatty()
    lines = _lines(stdin)
    stopping = _stop_signal()
    files: list[Attachment] = []  # /attach'ed, for the next message
    while True:
        if interactive:
            out.write(PROMPT)
            out.flush()
        line = await _first(lines.get(), stopping)
        if line is None:
            return
        text = line.rstrip("\n")
        command = text.strip()
        if command in QUIT_COMMANDS:
            return
        if is_attach(command):
            attached, said = attach(command)
            files += [attached] if attached else []
            out.write(f"{said}\n" if attached else f"parley! {said}\n")
            continue
        message = Message(
            "console",
            "local",
            channel,
            user,
            text,
            platform_admin=owner,
            attachments=tuple(files),
        )
        files = []
        answering = asyncio.create_task(answer(engine, message, out, stream=interactive))
        either: set[asyncio.Future[Any]] = {answering, stopping}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            await InFlight.finish(answering, engine.settings.shutdown_grace_seconds)
            return
        await answering


def _lines(stream: TextIO) -> asyncio.Queue[str | None]:
    """Lines of input as they come, None at the end. A daemon thread reads them: a
    thread blocked in readline() cannot be stopped, and must not hold up the exit."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        while True:
            try:
                line = stream.readline()
            except (OSError, ValueError):  # the terminal went away (EIO), or stdin closed
                line = ""
            loop.call_soon_threadsafe(queue.put_nowait, line or None)
            if not line:
                return

    threading.Thread(target=read, name="console-input", daemon=True).start()
    return queue


def _stop_signal() -> asyncio.Future[None]:
    """Done on SIGTERM or SIGINT (where this loop may handle signals)."""
    loop = asyncio.get_running_loop()
    stopping: asyncio.Future[None] = loop.create_future()

    def stop() -> None:
        if not stopping.done():
            stopping.set_result(None)

    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop)
    return stopping


async def _first(line: Awaitable[str | None], stopping: asyncio.Future[None]) -> str | None:
    """The next line, or None when the input ended or a stop signal came first."""
    reading = asyncio.ensure_future(line)
    waiting: set[asyncio.Future[Any]] = {reading, stopping}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not reading.done():
        reading.cancel()
        return None
    return reading.result()
