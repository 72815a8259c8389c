"""OpenAI-compatible model client: streaming, retries, usage.

One AsyncOpenAI client is built and reused (a new one loads the CA bundle each
time), on the SDK's own aiohttp transport (DefaultAioHttpClient). The SDK builds the
request's headers once, at start; each call then sends a ready request on the SDK's
HTTP client (ModelClient._send): chat.completions.create() walks and transforms every
prompt message (about 0.15 ms per message), and even its low-level post() copies its
options, parses the URL and builds the headers again on every call (about a fifth of
the client's CPU per answer; see bench/). Statuses and transport failures become the
SDK's own exceptions, as its request() makes them.

Retries are tenacity's, not the SDK's (its max_retries is 0): 429 (honouring
Retry-After), 5xx, connection errors and timeouts are retried with exponential
backoff and jitter; other 4xx never are. Once any text has been streamed to the
user, a failure is final: retrying would repeat what they already saw.

Three clocks bound a call (bot/llm_deadline.py): the transport's timeout_seconds, each
wait for the next bytes; first_token_seconds, each attempt's wait for the first token;
deadline_seconds, the whole call with all its attempts and the waits between them.

The stream's bytes are read and split into events here (SSEBuffer), not by the SDK's
AsyncStream: its per-event machinery (four nested async generators, a line decoder, an
event object per line) cost more CPU per streamed chunk than the rest of Parley's path
together (bench/platform_bench.py). Chunks are read as plain dicts; any shape we cannot
read becomes a "malformed" ModelError, never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import httpx2
import openai
import orjson
from openai import AsyncOpenAI, DefaultAioHttpClient, Omit
from openai._base_client import make_request_options
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._models import FinalRequestOptions
from openai._utils._json import openapi_dumps
from openai._vendor.httpx_aiohttp.transport import map_aiohttp_exceptions
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from bot import model_errors
from bot.llm_deadline import Deadlines, FirstTokenLate, OutOfTime, within
from bot.model_errors import USER_MESSAGES as USER_MESSAGES  # re-exported
from bot.model_errors import ModelError as ModelError  # re-exported
from bot.sse import SSEBuffer
from bot.tokens import count_text
from bot.vision import content_tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text exactly as the model sent it; may be malformed

    def as_chat(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(slots=True)
class Completion:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str = ""
    attempts: int = 1


class _StreamBroken(Exception):
    """A failure after text reached the user: never retried."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def classify(error: BaseException, endpoint: str = "", model: str = "") -> ModelError:
    """Turn an SDK or parsing exception into a ModelError (bot/model_errors.py)."""
    if isinstance(error, _StreamBroken):
        error = error.cause
    return model_errors.classify(error, endpoint, model)


class _WorthRetrying:
    """Which failures to retry: 429 and 5xx (unless the server asks for a longer wait
    than we allow: retrying early would only burn attempts), connection errors,
    timeouts and a late first token. Never other 4xx, nor the call's own deadline."""

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait

    def __call__(self, error: BaseException) -> bool:
        if isinstance(error, openai.APIStatusError):
            told = _retry_after_seconds(error)
            if told is not None and told > self.max_wait:
                return False
            return error.status_code == 429 or error.status_code >= 500
        # APIConnectionError includes the transport's timeouts.
        return isinstance(error, openai.APIConnectionError | FirstTokenLate)


def _retry_after_seconds(error: BaseException | None) -> float | None:
    if not isinstance(error, openai.APIStatusError):
        return None
    headers = error.response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date, or garbage: fall back to our own backoff
        return None


class _WaitRetryAfter:
    """Exponential backoff with jitter, unless the server said how long to wait."""

    def __init__(self, max_wait: float) -> None:
        self.backoff = wait_random_exponential(multiplier=0.5, max=max_wait)

    def __call__(self, state: RetryCallState) -> float:
        outcome = state.outcome
        told = _retry_after_seconds(outcome.exception() if outcome else None)
        return told if told is not None else self.backoff(state)


class _ChunkAssembler:
    """Collects a streamed answer: text, tool-call fragments by index, usage."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.usage: Usage | None = None
        self.finish_reason = ""

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one raw chunk; returns its new text (may be empty)."""
        if chunk.get("usage"):
            self.usage = _usage_of(chunk["usage"])
        text = ""
        for choice in chunk.get("choices") or ():
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                self._add_call_fragment(call)
        if text:
            self.parts.append(text)
        return text

    @property
    def begun(self) -> bool:
        """The answer has begun: text, a tool call or a finish has come."""
        return bool(self.parts or self.calls or self.finish_reason)

    def _add_call_fragment(self, call: dict[str, Any]) -> None:
        slot = self.calls.setdefault(call.get("index", 0), {"id": "", "name": "", "arguments": ""})
        slot["id"] = call.get("id") or slot["id"]
        function = call.get("function") or {}
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""

    def result(self) -> Completion:
        calls = [
            ToolCall(slot["id"] or f"call_{index}", slot["name"], slot["arguments"])
            for index, slot in sorted(self.calls.items())
        ]
        return Completion("".join(self.parts), calls, self.usage, self.finish_reason)


def _usage_of(usage: dict[str, Any]) -> Usage:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(
        int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), int(cached)
    )


def _raise_if_error(chunk: dict[str, Any], request: httpx2.Request) -> None:
    """An error sent inside the stream, as the SDK reports it."""
    error = chunk.get("error")
    if not error:
        return
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    raise openai.APIError(message=message, request=request, body=error)


# Between two reads of a streamed answer the socket is left unread this long, so the
# chunks that arrive meanwhile are taken in one wake-up of the process rather than one
# each. A wake-up from idle costs about 110-150 us of CPU on this project's machines
# (bench/README.md), far more than the ~15 us Parley's code spends on a chunk; a model
# sends a chunk every 10-40 ms. The first chunk is read at once; later text reaches
# the user at most this much later, and Slack and Discord edits come at most every
# 0.5 and 1.5 seconds anyway.
READ_BATCH_SECONDS = 0.1


def _aiohttp_response(response: httpx2.Response) -> aiohttp.ClientResponse | None:
    """The aiohttp response under the SDK's transport; None with another transport."""
    inner = getattr(response.stream, "_stream", None)
    raw = getattr(inner, "_aiohttp_response", None)
    return raw if isinstance(raw, aiohttp.ClientResponse) else None


async def _read_all_there(raw: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
    """Whatever of the body has arrived, at each read: the SDK's stream hands it on in
    16 KiB pieces, and a pause gathers more than that from a fast model (a second piece
    would be one more platform edit). Errors as the SDK maps them."""
    with map_aiohttp_exceptions():
        async for data in raw.content.iter_any():
            yield data


def _byte_chunks(response: httpx2.Response) -> AsyncIterator[bytes]:
    raw = _aiohttp_response(response)
    if raw is None:  # another transport: its own chunks
        return aiter(cast(httpx2.AsyncByteStream, response.stream))
    return _read_all_there(raw)


def _socket_of(response: httpx2.Response) -> asyncio.ReadTransport | None:
    """The socket transport under the SDK's aiohttp response, to pause reading it; None
    with another transport (then every chunk is read as it comes)."""
    raw = _aiohttp_response(response)
    connection = getattr(raw, "connection", None)  # None once the body has ended
    transport = getattr(connection, "transport", None)
    return transport if isinstance(transport, asyncio.ReadTransport) else None


async def _arrived_meanwhile(response: httpx2.Response) -> bytes:
    """What of the body has reached this host but not yet the stream, read without
    waiting: an answer sent whole often comes in several packets a few microseconds
    apart, and showing its first words on their own would cost a platform call more
    (a Slack stream started then stopped, where one message would do). Two turns of
    the loop: in the first it sees the socket readable, in the second it has read it."""
    raw = _aiohttp_response(response)
    if raw is None:
        return b""
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    if raw.content.exception() is not None:
        return b""  # the stream broke: the next read says so, after what came before
    with map_aiohttp_exceptions():
        return raw.content.read_nowait()


async def _gather_more(response: httpx2.Response, seconds: float) -> None:
    """Leave the socket unread for `seconds`: what arrives meanwhile is read at once.

    Then two turns of the loop (in the first the loop reads the socket, after this
    task's own step; in the second this task goes on), so that the next read takes what
    the socket gathered together with what the stream held from before the pause: else
    that read would hand on only the older bytes (often one word, read just after the
    last read) and the rest a read later, a platform call more."""
    transport = _socket_of(response)
    if transport is None or not transport.is_reading():
        return
    transport.pause_reading()
    try:
        await asyncio.sleep(seconds)
    finally:
        if not transport.is_closing():
            transport.resume_reading()
    await asyncio.sleep(0)
    await asyncio.sleep(0)


# How long to wait, after [DONE], for the rest of the body: read to its end, the
# connection is reused; a server that leaves it open costs at most this (as in the SDK).
DRAIN_SECONDS = 0.1


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in chunks:
                pass


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


# The SDK tells every server the host's OS, CPU and Python versions in headers of
# its own. Parley leaves them out: some OpenAI-compatible gateways reject unknown
# X-Stainless-* headers, a self-hosted bot has no reason to describe its host, and
# each header costs time per call. (Omit() removes a header; the SDK's signature
# admits only strings, hence the cast where it is passed.)
WITHOUT_PLATFORM_HEADERS: dict[str, str | Omit] = {
    name: Omit()
    for name in (
        "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS",
        "X-Stainless-Arch", "X-Stainless-Runtime", "X-Stainless-Runtime-Version",
        "X-Stainless-Async",
    )
}  # fmt: skip


class ModelClient:
    """Streams chat completions from one OpenAI-compatible endpoint."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        timeout_seconds: float,
        max_attempts: int,
        retry_max_wait_seconds: float,
        first_token_seconds: float | None = None,
        deadline_seconds: float | None = None,
        batch_seconds: float = READ_BATCH_SECONDS,
        configured: bool = True,
    ) -> None:
        """timeout_seconds bounds each wait for bytes (connecting, each read),
        first_token_seconds each attempt's wait for its first token, deadline_seconds
        the whole call with its retries; None: no such bound."""
        self.batch_seconds = batch_seconds
        self.configured = configured
        self.first_token_seconds = first_token_seconds
        self.deadline_seconds = deadline_seconds
        self.client = AsyncOpenAI(
            # The SDK's aiohttp transport: it halves the CPU of a streamed call compared
            # with the default httpx2 one (bench/engine_bench.py: 4.7 -> 2.6 ms/message).
            # Local servers (Ollama, vLLM, LM Studio) take any key; the SDK needs one.
            api_key=api_key or "not-needed",
            base_url=base_url or None,
            max_retries=0,
            timeout=timeout_seconds,
            http_client=DefaultAioHttpClient(timeout=timeout_seconds),
            default_headers=cast(Mapping[str, str], WITHOUT_PLATFORM_HEADERS),
        )
        self.timeout_seconds = timeout_seconds
        self.request_options = make_request_options(
            timeout=timeout_seconds, security={"bearer_auth": True}
        )
        # Absolute, joined once as the SDK joins a relative path (onto the base URL's
        # path, which it ends with "/"), which it would otherwise parse and merge again
        # on every call (~0.1 ms each).
        base = self.client.base_url
        self.completions_url = str(base.copy_with(raw_path=base.raw_path + b"chat/completions"))
        self.template = self._request_template()
        self.max_attempts = max_attempts
        self.wait = _WaitRetryAfter(retry_max_wait_seconds)
        self.worth_retrying = _WorthRetrying(retry_max_wait_seconds)

    def _request_template(self) -> httpx2.Request:
        """The request of every call, as the SDK builds it (URL, key, headers, timeout),
        without a body; _send copies it with each call's body."""
        options = FinalRequestOptions.construct(
            method="post", url=self.completions_url, **self.request_options
        )
        template = self.client._build_request(options)
        del template.headers["Content-Length"]
        # The stream's bytes are read as they come, beneath the SDK's decoders (see
        # _byte_chunks): a compressed event stream would be unreadable.
        template.headers["Accept-Encoding"] = "identity"
        return template

    async def _send(self, body: bytes) -> httpx2.Response:
        """POST one body on the SDK's client, the response's body left to stream; an
        error status or a transport failure raised as the SDK's request() raises it."""
        template = self.template
        request = httpx2.Request(
            "POST", template.url, headers=template.headers, content=body,
            extensions=template.extensions,
        )  # fmt: skip
        cookies = self.client._client.cookies  # a server's, as the SDK's requests carry
        if cookies:
            cookies.set_cookie_header(request)
        try:
            response = await self.client._send_request(request, stream=True)
        except timeout_exceptions() as error:
            raise openai.APITimeoutError(request=request) from error
        except openai.OpenAIError:
            raise
        except request_exceptions() as error:
            raise openai.APIConnectionError(request=request) from error
        if not response.is_success:  # 4xx, 5xx, or a redirect that was not followed
            await response.aread()  # the error's body, for its message; closes it
            raise self.client._make_status_error_from_response(response)
        return response

    async def close(self) -> None:
        await self.client.close()

    async def stream(
        self,
        model: str,
        messages: Sequence[dict[str, Any]],
        *,
        tools: Sequence[dict[str, Any]] = (),
        max_tokens: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        batch_seconds: float | None = None,
    ) -> AsyncGenerator[Delta | Completion, None]:
        """Yield Delta for each piece of text, then one Completion. Raises ModelError.
        `extra_body`: fields beside the standard ones (prompt_cache_key);
        `batch_seconds`: how long the socket is left unread between two reads of the
        answer (None: the client's own; see READ_BATCH_SECONDS)."""
        if not self.configured:  # no key and no base URL: fail at once, and say why
            raise ModelError("no_key", "neither OPENAI_API_KEY nor OPENAI_BASE_URL is set")
        deadlines = Deadlines(self.deadline_seconds, self.first_token_seconds)
        pause = self.batch_seconds if batch_seconds is None else batch_seconds
        retrying = AsyncRetrying(
            retry=retry_if_exception(self.worth_retrying),
            wait=self.wait,
            stop=stop_after_attempt(self.max_attempts) | OutOfTime(deadlines),
            reraise=True,
        )
        try:
            body = _encoded(
                {**_request_body(model, messages, tools, max_tokens), **(extra_body or {})}
            )
            async for attempt in retrying:
                with attempt:
                    assembler = _ChunkAssembler()
                    deadlines.start_attempt()
                    reading = self._attempt(body, assembler, deadlines, pause)
                    async with aclosing(reading) as texts:
                        async for text in texts:
                            yield Delta(text)
                    completion = assembler.result()
                    completion.attempts = attempt.retry_state.attempt_number
                    yield completion
        except Exception as error:  # every failure becomes one ModelError
            raise classify(error, str(self.client.base_url), model) from error

    async def _attempt(
        self,
        body: bytes,
        assembler: _ChunkAssembler,
        deadlines: Deadlines,
        pause: float,
    ) -> AsyncGenerator[str, None]:
        response = await within(deadlines.first_token, deadlines, self._send(body))
        # What the socket has delivered, at each read: no decoding layers.
        chunks = _byte_chunks(response)
        events = SSEBuffer()
        emitted = done = False
        due = deadlines.first_token  # then, once the answer has begun, the call's
        try:
            try:
                while (data := await within(due, deadlines, anext(chunks, None))) is not None:
                    if not emitted:
                        data += await _arrived_meanwhile(response)
                    texts = []  # one Delta for all the text of one read
                    for event in events.feed(data):
                        if event.startswith(b"[DONE]"):
                            done = True
                            break
                        chunk = orjson.loads(event)
                        if not isinstance(chunk, dict):
                            raise ValueError(f"a stream chunk is not an object: {chunk!r:.80}")
                        _raise_if_error(chunk, response.request)
                        text = assembler.add(chunk)
                        if text:
                            texts.append(text)
                    if done and not assembler.calls:
                        # The answer's last words come only with its Completion, so that
                        # a platform gets them with its closing call: one call, not two.
                        texts.clear()
                    if texts:  # all the text of one read as one Delta
                        emitted = True
                        yield "".join(texts)
                    if done:
                        break
                    if due != deadlines.call and assembler.begun:
                        due = deadlines.call
                    if emitted and pause:
                        await _gather_more(response, pause)
            except httpx2.TimeoutException as error:
                raise openai.APITimeoutError(request=response.request) from error
            except httpx2.RequestError as error:
                raise openai.APIConnectionError(request=response.request) from error
            if done:
                await _drain(chunks)
        except Exception as error:
            if emitted:
                raise _StreamBroken(error) from error
            raise
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
            await response.aclose()


def _encoded(body: dict[str, Any]) -> bytes:
    """The request body as JSON bytes, once per call rather than once per attempt.

    orjson: at 100 history messages it takes 5 us where the SDK's json.dumps took 141
    (1.66 ms -> 57 us at 1,000). Anything it cannot encode goes to the SDK's encoder.
    """
    try:
        return orjson.dumps(body)
    except TypeError:
        return openapi_dumps(body)


def _request_body(
    model: str,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]],
    max_tokens: int | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": list(messages),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if max_tokens:
        body["max_completion_tokens"] = max_tokens
    if tools:
        body["tools"] = list(tools)
    return body


def estimate_usage(prompt: Sequence[dict[str, Any]], completion: Completion) -> Usage:
    """A call's usage counted by us, for a server that sent none: recording nothing
    would make the call free (past token limits and spend caps)."""
    prompt_tokens = sum(content_tokens(m.get("content")) for m in prompt)
    return Usage(prompt_tokens, count_text(completion.text))
