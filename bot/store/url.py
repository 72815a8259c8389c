"""PARLEY_DB -> which store, and opening it with one clear line when that fails."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from bot.config import ConfigError
from bot.startup import StartupError, sqlite_problem
from bot.store.base import Store

POSTGRES_SCHEMES = ("postgresql", "postgres")
FORMS = "a file path, sqlite:///path or postgresql://user@host:port/database"


@dataclass(frozen=True, slots=True)
class StoreAddress:
    kind: str  # "sqlite" or "postgresql"
    target: str  # a file path, or the PostgreSQL URL as given (password included)

    @property
    def shown(self) -> str:
        """The address as logs and errors may show it: never a password."""
        return redact_url(self.target) if self.kind == "postgresql" else self.target


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal goes back in brackets
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def parse_store_url(value: str) -> StoreAddress:
    value = value.strip()
    if not value:
        raise ConfigError(f"PARLEY_DB is empty: set {FORMS}")
    scheme, separator, rest = value.partition("://")
    if not separator:
        return StoreAddress("sqlite", value)
    scheme = scheme.lower()
    if scheme in POSTGRES_SCHEMES:
        return StoreAddress("postgresql", value)
    if scheme == "sqlite":
        # sqlite:///data/parley.db is relative, sqlite:////var/parley.db absolute.
        path = rest[1:] if rest.startswith("/") else rest
        if not path:
            raise ConfigError(f"PARLEY_DB {value!r} names no file: use {FORMS}")
        return StoreAddress("sqlite", path)
    raise ConfigError(f"PARLEY_DB: {scheme}:// is not a database Parley can use; use {FORMS}")


async def open_store(value: str) -> Store:
    """The store PARLEY_DB names, created or migrated; ConfigError naming the
    setting when it cannot be opened."""
    address = parse_store_url(value)
    if address.kind == "postgresql":
        from bot.store.postgres import open_postgres

        return await open_postgres(address)
    from bot.store.sqlite import SqliteStore

    problem = sqlite_problem(address.target)
    if problem:  # a folder, not a database, read-only: said before any message fails
        raise StartupError(problem)
    try:
        return SqliteStore(address.target)
    except (sqlite3.Error, OSError) as error:
        raise ConfigError(
            f"PARLEY_DB: cannot use the SQLite database at {address.target}: {error}"
        ) from None
