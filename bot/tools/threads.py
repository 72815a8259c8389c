"""The threads sync tools run on: a bounded pool of their own.

asyncio.to_thread would use the loop's default executor, which aiohttp's
ThreadedResolver also uses to resolve the model endpoint's name: a sync tool that
hangs (it cannot be killed on timeout) would hold those threads, and every model call
of every user would wait behind it. Here hung tools can only fill their own pool; a
sync tool call then waits for a thread and times out per its tool timeout.

The threads are daemon threads: ThreadPoolExecutor's workers are joined when the
interpreter exits, so one hung tool would stop Parley from ever exiting on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

TOOL_THREADS = 8
_Work = tuple[Future[Any], Callable[[], Any]]


class DaemonThreadPool(Executor):
    """At most `workers` daemon threads, started on first use, taking work in order."""

    def __init__(self, workers: int, name: str) -> None:
        self._work: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._workers, self._name = workers, name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._work.put((future, functools.partial(fn, *args, **kwargs)))
        with self._lock:
            if len(self._threads) < self._workers:
                number = len(self._threads)
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}_{number}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _serve(self) -> None:
        while True:
            future, call = self._work.get()
            if not future.set_running_or_notify_cancel():
                continue  # its caller timed out while it waited for a thread
            try:
                result = call()
            except BaseException as error:  # handed to the caller, as an executor does
                future.set_exception(error)
            else:
                future.set_result(result)


_pool = DaemonThreadPool(TOOL_THREADS, "parley-tool")


async def run_in_tool_thread(function: Callable[..., Any], /, **arguments: Any) -> Any:
    """Call a sync function on the tool pool, with the caller's context variables."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, function, **arguments)
    return await loop.run_in_executor(_pool, call)
