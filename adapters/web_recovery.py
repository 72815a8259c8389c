"""The web chat's view of answers recovered after a restart.

A browser page reconnects by itself a moment after Parley restarts, often while the
restarted process is already answering the question the dead one left: the page then
joins a stream it missed the start of. What was sent so far is kept, with streamed
pieces merged into one, so a page joining late is shown the apology and the text so
far before the rest streams in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

Frame = dict[str, object]
Send = Callable[[str, Frame], Awaitable[None]]  # (session id, frame) -> to its open pages


class RecoveredAnswers:
    def __init__(self) -> None:
        # Per session: the frames of the answer being recovered now (one at a time each).
        self._so_far: dict[str, list[Frame]] = {}
        # Recovered answers finished so far: a page that read its history while one
        # finished reads it again (the answer was stored after the first read).
        self.finished = 0

    def so_far(self, session: str) -> list[Frame]:
        """What a page of `session` connecting now must be shown to catch up."""
        return list(self._so_far.get(session, ()))

    async def stream(self, session: str, frames: AsyncIterator[Frame], send: Send) -> None:
        kept = self._so_far.setdefault(session, [])
        try:
            async for frame in frames:
                _keep(kept, frame)
                await send(session, frame)
            await send(session, {"type": "done"})
        finally:
            self._so_far.pop(session, None)
            self.finished += 1


def _keep(kept: list[Frame], frame: Frame) -> None:
    last = kept[-1] if kept else None
    if frame.get("type") == "delta" and last is not None and last.get("type") == "delta":
        kept[-1] = {**last, "text": f"{last.get('text', '')}{frame.get('text', '')}"}
    else:
        kept.append(frame)
