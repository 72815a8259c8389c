"""An example plugin module for tests/test_tools_registry.py: marked functions.

A plugin may instead define `register(registry)`; see tests/test_tools_registry.py.
"""

from __future__ import annotations

from bot.tools.registry import tool


@tool
def reverse(text: str) -> str:
    """Reverse a piece of text.

    Args:
        text: The text to reverse.
    """
    return text[::-1]


@tool(name="word_count", description="Count the words in a text.")
def count_words(text: str) -> int:
    return len(text.split())


def helper(text: str) -> str:
    """Not marked, so not a tool."""
    return text
