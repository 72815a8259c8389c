"""A real PostgreSQL for the tests: the server CI starts (.ci/postgres), one fresh
schema per test, dropped afterwards.

PARLEY_TEST_POSTGRES names the server (default: the local one, trust auth). asyncpg
passes a URL's unknown query parameters to the server as settings, so
?search_path=<schema> gives every connection of a store, a subprocess's included,
that schema.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_server_url() -> tuple[str, str]:
    """(url, "") when a server answers; ("", why not) otherwise."""
    url = os.environ.get("PARLEY_TEST_POSTGRES", DEFAULT_URL)

    async def probe() -> None:
        connection = await asyncpg.connect(url, timeout=5)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        return "", f"no PostgreSQL at {url} ({error}); .ci/run starts one"
    return url, ""


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextmanager
def postgres_schema_url(server: str) -> Iterator[str]:
    schema = "t_" + uuid.uuid4().hex[:12]
    asyncio.run(_execute(server, f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in server else "?"
    try:
        yield f"{server}{separator}search_path={schema}"
    finally:
        asyncio.run(_execute(server, f"DROP SCHEMA {schema} CASCADE"))
