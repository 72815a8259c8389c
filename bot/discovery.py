"""Which model Parley will use, said first; a local server found when none is set.

With no OPENAI_API_KEY and no OPENAI_BASE_URL, Parley asks the usual local
OpenAI-compatible servers (Ollama, LM Studio, llama.cpp's server, vLLM) for their models,
uses the first that answers and says so. PARLEY_LOCAL_MODEL_URLS replaces the list
(comma separated; empty turns the search off).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, replace

import aiohttp

from bot.config import Settings, secret

LOCAL_SERVERS = (
    ("Ollama", "http://127.0.0.1:11434/v1"),
    ("LM Studio", "http://127.0.0.1:1234/v1"),
    ("llama.cpp server", "http://127.0.0.1:8080/v1"),
    ("vLLM", "http://127.0.0.1:8000/v1"),
)
PROBE_SECONDS = 0.5
THREE_WAYS = (
    "No model endpoint is set (neither OPENAI_API_KEY nor OPENAI_BASE_URL). Set one of:\n"
    "  OPENAI_API_KEY=sk-...                     OpenAI itself\n"
    "  OPENAI_BASE_URL=http://localhost:11434/v1 a local server (Ollama, LM Studio, "
    "llama.cpp, vLLM)\n"
    "  OPENAI_BASE_URL=<any OpenAI-compatible URL>/v1 (and OPENAI_API_KEY if it needs one)"
)

# The same, on one line (`check`, the status page).
WAYS_IN_ONE_LINE = (
    "not set: set OPENAI_API_KEY (OpenAI), or OPENAI_BASE_URL for a local server "
    "(Ollama: http://localhost:11434/v1) or any OpenAI-compatible URL"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where model calls go. base_url "" means the SDK's default (OpenAI)."""

    base_url: str
    model: str
    configured: bool
    found: str = ""  # the local server's name, when discovery chose it
    searched: tuple[str, ...] = ()  # the local servers asked, none answering

    @property
    def shown(self) -> str:
        return self.base_url or "OpenAI (https://api.openai.com/v1)"


def configured_endpoint(settings: Settings) -> Endpoint:
    base_url = os.environ.get("OPENAI_BASE_URL", "").strip()
    configured = bool(base_url or secret("OPENAI_API_KEY"))
    return Endpoint(base_url, settings.model, configured)


def candidates() -> list[tuple[str, str]]:
    told = os.environ.get("PARLEY_LOCAL_MODEL_URLS")
    if told is None:
        return list(LOCAL_SERVERS)
    return [("a server", url.strip()) for url in told.split(",") if url.strip()]


async def _models(session: aiohttp.ClientSession, base_url: str) -> list[str] | None:
    """The model ids a server lists at /models, or None when nothing answers there."""
    try:
        async with session.get(base_url.rstrip("/") + "/models") as response:
            if response.status != 200:
                return None
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]


async def discover(settings: Settings) -> Endpoint:
    """The configured endpoint, or the first local server that answers, or the
    unconfigured default (whose calls fail at once with what to set)."""
    endpoint = configured_endpoint(settings)
    if endpoint.configured or not settings.discover_local_models:
        return endpoint
    servers = candidates()
    timeout = aiohttp.ClientTimeout(total=PROBE_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        found = await asyncio.gather(*(_models(session, url) for _, url in servers))
    for (name, url), models in zip(servers, found, strict=True):
        if models is not None:
            # Keep the configured model when the server has it; else its first one.
            model = settings.model if settings.model in models or not models else models[0]
            return Endpoint(url, model, configured=True, found=name)
    return replace(endpoint, searched=tuple(url for _, url in servers))


def describe(endpoint: Endpoint) -> str:
    """The start-up line(s) about the model: what is used, or how to set one."""
    if not endpoint.configured:
        asked = ", ".join(endpoint.searched)
        searched = f"\nNo local server answered at {asked}." if asked else ""
        return "Warning: " + THREE_WAYS + searched
    if endpoint.found:
        return (
            f"Model: found {endpoint.found} at {endpoint.base_url}, using model "
            f"{endpoint.model} (set OPENAI_BASE_URL and PARLEY_MODEL to choose another)"
        )
    return f"Model: {endpoint.model} at {endpoint.shown}"
