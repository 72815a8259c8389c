"""A fake OpenAI-compatible Chat Completions server for tests and benchmarks.

The real ``openai`` SDK talks to it over a real socket, so retries, timeouts, SSE parsing
and the ``.stream()`` helper are exercised exactly as in production. Responses are scripted
with small dataclasses consumed FIFO, one per request; with nothing scripted it answers
``default`` if set, else echoes the last user message. There are no sleeps except
Hang/Delay and a Text's ``interval`` (a paced stream, as real models send: a token or two
every 10-50 ms; a benchmark whose answer arrives in one burst reads every chunk in one go
and so never sees the per-chunk cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from aiohttp import web
from multidict import CIMultiDictProxy

JSON: TypeAlias = dict[str, Any]


@dataclass(frozen=True)
class Text:
    """A plain assistant reply. Token counts default to a deterministic estimate."""

    content: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # None: as OpenAI's prompt cache would (see _cached)
    chunks: int | None = None  # number of streamed content deltas; None = one per word
    interval: float = 0.0  # seconds before each streamed content delta; 0 = back to back


@dataclass(frozen=True)
class Call:
    """One tool call. A dict is JSON-encoded; a str is sent verbatim (may be malformed)."""

    name: str
    arguments: str | dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class ToolCalls:
    """An assistant turn with one or more (parallel) tool calls; finish_reason "tool_calls"."""

    calls: list[Call]
    content: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(frozen=True)
class Status:
    """An HTTP error in OpenAI's error shape, optionally with Retry-After."""

    code: int
    body: JSON | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Hang:
    """Sleep before answering (with the default echo), to exercise client timeouts."""

    seconds: float = 30


@dataclass(frozen=True)
class Malformed:
    """200 with an unparsable body (or an unparsable SSE data line when streaming)."""

    body: str = "this is not json"


@dataclass(frozen=True)
class Delay:
    """Sleep, then answer with ``then`` (default echo when None)."""

    seconds: float
    then: Response | None = None


@dataclass(frozen=True)
class Stall:
    """Streaming only: send the headers and a first empty chunk, then go silent."""

    seconds: float = 30


@dataclass(frozen=True)
class Cut:
    """Streaming only: stream ``content``, then drop the connection (no finish, no [DONE])."""

    content: str


Response: TypeAlias = Text | ToolCalls | Status | Hang | Malformed | Delay | Stall | Cut

MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)  # fmt: skip

# OpenAI's (type, code) for common statuses, so error-classifying code sees realistic bodies.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def _message_text(message: JSON) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep only the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _prompt_text(body: JSON) -> str:
    return "".join(_message_text(m) for m in body.get("messages", []))


def _estimate_tokens(text: str) -> int:
    # ~4 chars per token, like OpenAI's rule of thumb; never 0 so usage asserts are meaningful.
    return max(1, len(text) // 4)


# OpenAI's prompt cache: prefixes of at least 1,024 tokens, counted in 128-token steps.
CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128
# Conversations (prompt_cache_key values) whose last prompt the fake remembers.
CACHE_KEYS = 1000


def _shared_chars(previous: JSON, body: JSON) -> int:
    """Characters of message text at the start of body's prompt that previous shares.

    Tool definitions come before the messages in the model's prompt: changed tools
    share nothing. Messages count whole while identical; the first that differs counts
    its common leading text if its role is the same.
    """
    if previous.get("tools") != body.get("tools"):
        return 0
    shared = 0
    for old, new in zip(previous.get("messages", []), body.get("messages", []), strict=False):
        old_text, new_text = _message_text(old), _message_text(new)
        if old == new:
            shared += len(new_text)
            continue
        if old.get("role") == new.get("role"):
            shared += next(
                (i for i, (a, b) in enumerate(zip(old_text, new_text, strict=False)) if a != b),
                min(len(old_text), len(new_text)),
            )
        break
    return shared


def _split(text: str, pieces: int | None) -> list[str]:
    if not text:
        return []
    if pieces is None:
        # A word plus its trailing whitespace per piece, so "".join() restores the text exactly.
        return re.findall(r"\S+\s*|\s+", text)
    n = max(1, min(pieces, len(text)))
    bounds = [len(text) * i // n for i in range(n + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(n)]


class FakeOpenAI:
    """In-process fake of ``POST /v1/chat/completions`` and ``GET /v1/models``."""

    def __init__(self, models: Sequence[str] = ("gpt-fake",)) -> None:
        self.models = list(models)
        self.requests: list[JSON] = []
        self.request_headers: list[CIMultiDictProxy[str]] = []  # case-insensitive
        self._queue: deque[Response] = deque()  # deque: appends are thread-safe
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()  # set by stop(); recreated by start() for its loop
        self._port = 0
        # The answer when nothing is scripted; None echoes the last user message.
        self.default: Text | None = None
        # How usage counts tokens in text; bench/long_conversation.py sets a real tokenizer.
        self.count_tokens: Callable[[str], int] = _estimate_tokens
        # Cut answers at max_completion_tokens (four characters a token), as a model stops.
        self.stop_at_max_tokens = False
        # False: a provider that never reports usage in a stream, even when asked.
        self.send_usage = True
        # Requests for these models get this answer, every time (not consumed).
        self.by_model: dict[str, Response] = {}
        # The last prompt of each prompt_cache_key (None: requests without one).
        self._last_prompt: OrderedDict[str | None, JSON] = OrderedDict()
        # /v1/moderations: a text containing one of these words gets its scores
        # (category -> 0..1; 0.5 or more is flagged), every other text passes.
        # moderation_status set: the route answers that HTTP error instead.
        self.moderation_words: dict[str, dict[str, float]] = {}
        self.moderation_status: int | None = None
        self.moderation_requests: list[JSON] = []

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/moderations", self._moderate)
        # Short shutdown_timeout: aiohttp otherwise waits up to 60s for in-flight handlers.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self._closing = asyncio.Event()
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._closing.set()  # wakes every Hang/Delay so shutdown doesn't wait for them
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextmanager
    def run_in_thread(self) -> Iterator[FakeOpenAI]:
        """Serve from a daemon thread's own loop, for sync clients or subprocess clients."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-openai", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)
            yield self
        finally:
            try:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=10)
                loop.close()

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeOpenAI is not started")
        return f"http://127.0.0.1:{self._port}/v1"

    def script(self, *responses: Response) -> None:
        self._queue.extend(responses)

    @property
    def request_count(self) -> int:
        return len(self.requests)

    @property
    def pending(self) -> int:
        """Scripted responses not consumed yet (assert 0 to prove a test used them all)."""
        return len(self._queue)

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _moderate(self, request: web.Request) -> web.Response:
        """OpenAI's moderation response: one result per input text."""
        body = json.loads(await request.read())
        self.moderation_requests.append(body)
        if self.moderation_status is not None:
            return _error(Status(self.moderation_status))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = []
        for text in inputs:
            scores = dict.fromkeys(MODERATION_CATEGORIES, 0.0)
            for word, word_scores in self.moderation_words.items():
                if word.lower() in str(text).lower():
                    scores.update(word_scores)
            flags = {category: score >= 0.5 for category, score in scores.items()}
            results.append({
                "flagged": any(flags.values()), "categories": flags, "category_scores": scores,
                "category_applied_input_types": {key: ["text"] for key in MODERATION_CATEGORIES},
            })  # fmt: skip
        model = body.get("model", "omni-moderation-latest")
        return web.json_response({"id": "modr-fake", "model": model, "results": results})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(Status(400, {"error": {"message": "invalid JSON body"}}))
        if not isinstance(body, dict):
            return _error(Status(400))
        self.requests.append(body)
        self.request_headers.append(request.headers)
        body = {**body, "_cached": self._cached(body)}  # computed on arrival, in order
        response = self.by_model.get(str(body.get("model")))
        if response is None and self._queue:
            response = self._queue.popleft()
        while isinstance(response, Hang | Delay):
            # Wait on the closing event, not sleep(), so stop() wakes hung handlers at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), response.seconds)
            if self._closing.is_set():
                return _error(Status(503))  # server is stopping; the client is going away
            response = response.then if isinstance(response, Delay) else None
        if response is None:
            response = self.default
        if response is None:
            users = [m for m in body.get("messages", []) if m.get("role") == "user"]
            response = Text("echo: " + (_message_text(users[-1]) if users else ""))
        if isinstance(response, Status):
            return _error(response)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if self.stop_at_max_tokens and isinstance(response, Text) and isinstance(limit, int):
            # A model stops at the token limit (about four characters a token here).
            response = replace(response, content=response.content[: limit * 4])
        if body.get("stream"):
            return await self._stream(request, body, response)
        if isinstance(response, Stall | Cut):
            return _error(Status(500))  # only streams can stall or be cut mid-way
        if isinstance(response, Malformed):
            return web.Response(text=response.body, content_type="application/json")
        return web.json_response(self._completion(body, response))

    def _usage(self, body: JSON, reply: Text | ToolCalls) -> JSON:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = self.count_tokens(_prompt_text(body))
        completion = reply.completion_tokens
        if completion is None:
            out = reply.content
            if isinstance(reply, ToolCalls):
                out += "".join(c.name + _args(c) for c in reply.calls)
            completion = _estimate_tokens(out)
        cached = reply.cached_tokens
        if cached is None:
            cached = min(prompt, int(body.get("_cached", 0)))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def _cached(self, body: JSON) -> int:
        """Cached prompt tokens as OpenAI reports them: the prefix this prompt shares
        with the previous one of the same prompt_cache_key, if at least
        CACHE_MIN_TOKENS, rounded down to CACHE_STEP_TOKENS (tokens counted as for
        prompt_tokens: four characters each, unless count_tokens is set)."""
        key = body.get("prompt_cache_key")
        previous = self._last_prompt.pop(key, None)
        self._last_prompt[key] = body
        while len(self._last_prompt) > CACHE_KEYS:
            self._last_prompt.popitem(last=False)
        shared = _shared_chars(previous, body) if previous is not None else 0
        tokens = self.count_tokens(_prompt_text(body)[:shared]) if shared else 0
        if tokens < CACHE_MIN_TOKENS:
            return 0
        return tokens - tokens % CACHE_STEP_TOKENS

    def _envelope(self, body: JSON, obj: str) -> JSON:
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": obj,
            "created": int(time.time()),
            "model": body.get("model", "gpt-fake"),
        }

    def _tool_calls(self, reply: ToolCalls) -> list[JSON]:
        return [
            {
                "id": c.id or f"call_fake_{next(self._ids)}",
                "type": "function",
                "function": {"name": c.name, "arguments": _args(c)},
            }
            for c in reply.calls
        ]

    def _completion(self, body: JSON, reply: Text | ToolCalls) -> JSON:
        message: JSON = {"role": "assistant", "content": reply.content, "refusal": None}
        finish = "stop"
        if isinstance(reply, ToolCalls):
            message["content"] = reply.content or None  # OpenAI sends null beside tool calls
            message["tool_calls"] = self._tool_calls(reply)
            finish = "tool_calls"
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        return {
            **self._envelope(body, "chat.completion"),
            "choices": [choice],
            "usage": self._usage(body, reply),
        }

    async def _stream(
        self, request: web.Request, body: JSON, reply: Text | ToolCalls | Malformed | Stall | Cut
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if isinstance(reply, Stall | Cut):
            return await self._break_off(request, resp, body, reply)
        if isinstance(reply, Malformed):
            await resp.write(f"data: {reply.body}\n\n".encode())
        else:
            interval = reply.interval if isinstance(reply, Text) else 0.0
            # All made first (the usage chunk counts the whole prompt): a long prompt's
            # counting must not hold back an answer's last chunks, as no real server's does.
            chunks = list(self._chunks(body, reply))
            loop = asyncio.get_running_loop()
            due = loop.time()
            for chunk in chunks:
                if interval and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    # Paced: each content delta is its own write, as from a real model, at
                    # a steady rate (a late write does not push back the later ones: 74
                    # sleeps' overshoot made a 3 s answer at 25 a second up to 0.1 s late).
                    due += interval
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), max(0.0, due - loop.time()))
                    if self._closing.is_set():
                        break
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _break_off(
        self, request: web.Request, resp: web.StreamResponse, body: JSON, reply: Stall | Cut
    ) -> web.StreamResponse:
        """A stream that never finishes: silent after its first chunk, or cut off."""
        chunks = list(self._chunks(body, Text(reply.content if isinstance(reply, Cut) else "")))
        sent = chunks[:-2] if isinstance(reply, Cut) else chunks[:1]  # no finish or usage
        for chunk in sent:
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if isinstance(reply, Stall):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.seconds)
        if request.transport is not None:
            request.transport.close()
        return resp

    def _chunks(self, body: JSON, reply: Text | ToolCalls) -> Iterator[JSON]:
        """Yield chunks in OpenAI's order: role, content, tool calls, finish, [usage]."""
        env = self._envelope(body, "chat.completion.chunk")  # one id for the whole stream
        options = body.get("stream_options") or {}
        with_usage = bool(options.get("include_usage")) and self.send_usage

        def chunk(delta: JSON, finish: str | None = None) -> JSON:
            out: JSON = {
                **env,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
            if with_usage:
                out["usage"] = None
            return out

        is_tools = isinstance(reply, ToolCalls)
        first_content = None if is_tools and not reply.content else ""
        yield chunk({"role": "assistant", "content": first_content, "refusal": None})
        pieces = _split(reply.content, reply.chunks if isinstance(reply, Text) else None)
        for piece in pieces:
            yield chunk({"content": piece})
        if isinstance(reply, ToolCalls):
            for index, call in enumerate(self._tool_calls(reply)):
                fn = call["function"]
                head = {**call, "index": index, "function": {"name": fn["name"], "arguments": ""}}
                yield chunk({"tool_calls": [head]})
                # OpenAI streams arguments in many fragments; 3 is enough to test reassembly.
                for fragment in _split(fn["arguments"], 3):
                    delta = {"index": index, "function": {"arguments": fragment}}
                    yield chunk({"tool_calls": [delta]})
        yield chunk({}, "tool_calls" if is_tools else "stop")
        if with_usage:
            yield {**env, "choices": [], "usage": self._usage(body, reply)}


def _args(call: Call) -> str:
    return call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)


def _error(status: Status) -> web.Response:
    kind, code = _ERROR_KINDS.get(status.code, ("api_error", None))
    body = status.body or {
        "error": {"message": f"fake error {status.code}", "type": kind, "param": None, "code": code}
    }
    headers: dict[str, str] = {}
    if status.retry_after is not None:
        # Both headers, as OpenAI sends; the SDK prefers -ms, other clients read Retry-After.
        headers["Retry-After"] = f"{status.retry_after:g}"
        headers["retry-after-ms"] = str(int(status.retry_after * 1000))
    return web.json_response(body, status=status.code, headers=headers)
