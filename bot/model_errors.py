"""Why a model call failed, said once for the user and once for the log.

Each failure becomes one ModelError whose `kind` names the cause. The user is told the
cause and the setting that fixes it (never the endpoint's address: a Slack channel may
hold people who are not admins); the log line has the URL and the underlying error.
"""

from __future__ import annotations

import socket

import aiohttp
import openai

from bot.llm_deadline import CallTooLong, FirstTokenLate

# What ModelError.kind can be, with what the user is told. {model} is the model asked for.
USER_MESSAGES = {
    "no_key": "No model is set up yet: an admin should set OPENAI_API_KEY (for OpenAI) or "
    "OPENAI_BASE_URL (a local or other OpenAI-compatible server such as Ollama, LM Studio "
    "or vLLM), then restart Parley.",
    "auth": "The model endpoint refused Parley's key; an admin should check OPENAI_API_KEY.",
    "no_host": "Parley cannot find the model endpoint's host; an admin should check "
    "OPENAI_BASE_URL and the network.",
    "refused": "Nothing answers at the model endpoint (connection refused); an admin should "
    "start the model server or fix OPENAI_BASE_URL.",
    "model_missing": "The model endpoint has no model named {model}; an admin should set "
    "PARLEY_MODEL to a model it serves.",
    "wrong_url": "The model endpoint has no chat API at its URL; an admin should "
    "check OPENAI_BASE_URL (it usually ends in /v1).",
    "rate_limited": "The model provider is rate limiting Parley right now. "
    "Please try again in a minute.",
    "unavailable": "The model is unavailable right now. Please try again shortly.",
    "timeout": "The model took too long to answer. Please try again.",
    "bad_request": "The model rejected this request. If the conversation is long, try /reset.",
    "malformed": "The model sent an answer Parley could not read. Please try again.",
}


class ModelError(Exception):
    """The model call failed for good. `kind` is one of USER_MESSAGES' keys; str() is
    the log line (kind, endpoint, underlying error)."""

    def __init__(self, kind: str, detail: str = "", model: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.model = model

    @property
    def user_message(self) -> str:
        return USER_MESSAGES[self.kind].format(model=self.model or "that")


def _causes(error: BaseException) -> list[BaseException]:
    """The error and everything it was raised from (a chain can loop on itself)."""
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and all(seen is not known for known in chain):
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _connection_kind(error: BaseException) -> str | None:
    """ "no_host" or "refused" when the chain holds a failure to connect, else None."""
    for cause in _causes(error):
        if isinstance(cause, aiohttp.ClientConnectorDNSError | socket.gaierror):
            return "no_host"
        if isinstance(cause, aiohttp.ClientConnectorError | ConnectionRefusedError):
            return "refused"
    return None


def _underlying(error: BaseException) -> str:
    """The innermost error's own words, for the log."""
    inner = _causes(error)[-1]
    return f"{type(inner).__name__}: {inner}"


def _status_kind(error: openai.APIStatusError) -> str:
    status = error.status_code
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 404:
        # OpenAI, Ollama, vLLM and LM Studio all answer an unknown model with 404 and
        # an error that names the model; a wrong path (a base URL without /v1) gets a
        # bare "Not Found" page or an "Invalid URL" error instead.
        return "model_missing" if "model" in str(error.body).lower() else "wrong_url"
    if status == 405:  # POST refused: the URL is some web page, not the chat API
        return "wrong_url"
    if 300 <= status < 400:  # a redirect the client could not follow: a web page's login?
        return "wrong_url"
    if status >= 500:
        return "unavailable"
    return "bad_request"


def classify(error: BaseException, endpoint: str = "", model: str = "") -> ModelError:
    """Turn an SDK, transport or parsing exception into a ModelError."""
    if isinstance(error, ModelError):
        return error
    where = f" at {endpoint}" if endpoint else ""
    if isinstance(error, CallTooLong | FirstTokenLate):
        return ModelError("timeout", f"{model}{where}: {error}", model)
    if isinstance(error, openai.APIStatusError):
        detail = f"HTTP {error.status_code}{where} for model {model}: {error.message}"
        return ModelError(_status_kind(error), detail, model)
    if isinstance(error, openai.APIConnectionError):
        # The aiohttp transport reports a refused connection as a connect timeout.
        kind = _connection_kind(error) or (
            "timeout" if isinstance(error, openai.APITimeoutError) else "unavailable"
        )
        return ModelError(kind, f"{where.strip()}: {_underlying(error)}", model)
    return ModelError("malformed", f"{where.strip()}: {type(error).__name__}: {error}", model)
