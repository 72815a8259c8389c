"""Start-up faults found before they become tracebacks: one line naming the setting and
the fix. `python -m bot run` and `check` share these; the CLI prints the line and exits 2.
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

from bot.config import ConfigError


class StartupError(ConfigError):
    """Parley cannot start; str() is the one line shown to the user."""


def _sqlite_error_line(path: str, error: sqlite3.Error) -> str:
    text = str(error)
    if "not a database" in text:
        return (
            f"PARLEY_DB: {path} is not a SQLite database ({text}): set PARLEY_DB to "
            "Parley's database or to a new file name"
        )
    if "readonly" in text or "read-only" in text:
        return (
            f"PARLEY_DB: {path} is read-only ({text}): make the file and its folder "
            "writable, or set PARLEY_DB to a writable path"
        )
    return (
        f"PARLEY_DB: cannot open the SQLite database at {path} ({text}): check the path "
        "and its permissions, or set PARLEY_DB to another file"
    )


def _probe_write(path: Path) -> None:
    """Open the database and write in a transaction rolled back: what every message will
    need. Raises sqlite3.Error."""
    with closing(sqlite3.connect(path, timeout=5)) as database:
        database.execute("PRAGMA schema_version")  # reads the header: "not a database"
        database.execute("BEGIN IMMEDIATE")
        try:
            database.execute("CREATE TABLE parley_write_probe (x)")
        finally:
            database.rollback()


def sqlite_problem(path: str) -> str | None:
    """Why the SQLite file at `path` cannot be used, in one line, or None when it can."""
    target = Path(path)
    if target.is_dir():
        return f"PARLEY_DB: {path} is a folder; name a file in it, e.g. {target / 'parley.db'}"
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return (
            f"PARLEY_DB: cannot create the folder {folder} for {path} ({error.strerror}): "
            "create it, or set PARLEY_DB to a writable path"
        )
    if not os.access(folder, os.W_OK):
        return (
            f"PARLEY_DB: the folder {folder} is read-only (SQLite writes its journal next "
            "to the database): make it writable, or set PARLEY_DB to a writable path"
        )
    if not target.exists():
        return None
    try:
        _probe_write(target)
    except sqlite3.Error as error:
        return _sqlite_error_line(path, error)
    return None


def port_problem(host: str, port: int) -> str | None:
    """Why the HTTP server cannot listen on host:port, or None when it can."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As the server will: a port in TIME_WAIT after a restart is not "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OverflowError:
        return f"PORT {port} is out of range: use a number from 1 to 65535"
    except OSError as error:
        return port_error_line(host, port, error)
    return None


def port_error_line(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return (
            f"PORT {port} is already in use on {host} (another Parley or program): stop it, "
            "or set PORT to a free port"
        )
    if error.errno == errno.EACCES:
        return f"PORT {port} needs privileges on {host}: set PORT to 1024 or above"
    return (
        f"PORT {port} on {host} (web.host) cannot be used ({error.strerror or error}): set "
        "web.host to an address of this machine, e.g. 127.0.0.1 (or 0.0.0.0 for all)"
    )


def _secret_flaw(value: str) -> str | None:
    """What in a pasted key cannot go in an HTTP header, or None."""
    for position, character in enumerate(value, start=1):
        if character.isspace():
            return f"a space or line break at character {position}"
        if not character.isascii() or not character.isprintable():
            return f"the character {character!r} at position {position} (not plain ASCII)"
    return None


def model_setting_problem() -> str | None:
    """Why OPENAI_BASE_URL or OPENAI_API_KEY cannot work as written, or None. Caught at
    start, they would otherwise fail every message with a misleading cause."""
    base_url = os.environ.get("OPENAI_BASE_URL", "").strip()
    if base_url:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return (
                f"OPENAI_BASE_URL {base_url!r} is not an http:// or https:// URL: write it "
                "whole, e.g. http://localhost:11434/v1"
            )
    flaw = _secret_flaw(os.environ.get("OPENAI_API_KEY", "").strip())
    if flaw:
        return f"OPENAI_API_KEY has {flaw}: copy the key again, exactly"
    return None


PLATFORM_SECRETS = {
    "slack": ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"),
    "discord": ("DISCORD_BOT_TOKEN",),
}


def token_problem(platform: str) -> str | None:
    """A platform token pasted with a space, line break or odd character, or None."""
    for name in PLATFORM_SECRETS.get(platform, ()):
        flaw = _secret_flaw(os.environ.get(name, "").strip())
        if flaw:
            return f"{name} has {flaw}: copy it again, exactly"
    return None
