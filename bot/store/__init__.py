"""Where Parley keeps history, settings, deliveries, usage and limits.

`open_store(url)` picks the database from PARLEY_DB: a path or sqlite:///path is the
embedded SQLite store; postgresql://... is PostgreSQL, for several replicas.
"""

from __future__ import annotations

from bot.history import StoredMessage, Window
from bot.store.base import Store
from bot.store.records import (
    Admission,
    Answer,
    ConversationSummary,
    Turn,
    UsageRecord,
    UserLimits,
)
from bot.store.url import StoreAddress, open_store, parse_store_url

__all__ = [
    "Admission",
    "Answer",
    "ConversationSummary",
    "Store",
    "StoreAddress",
    "StoredMessage",
    "Turn",
    "UsageRecord",
    "UserLimits",
    "Window",
    "open_store",
    "parse_store_url",
]
