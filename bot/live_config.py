"""Settings that change without a restart: the config file is re-read when it changes.

The running process re-reads the config file (and the prices file it names) when it
changes: on Linux the kernel tells it (inotify on the files' folders, so an idle process
is not woken to look), elsewhere it looks every `reload.poll_seconds` (default 2 s) by
modification time and size. `reload.poll_seconds = 0` turns watching off; SIGHUP
re-reads at once in any case. Environment variables and command-line
flags apply on top again, as at start. A file that does not load (bad TOML, a bad
value) is refused with one log line naming the setting, and the last good settings
stay in force.

What applies live: model name and prompt sizes, the system prompt, limits defaults,
admins, access lists, tool sets, prices, reply chains and summaries. What needs a
restart (the change is logged and ignored until then): the database, the HTTP
address and defences, the model endpoint's timeouts and retries, plugins and MCP
servers, Discord sharding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError, Settings, load_settings
from bot.engine import Engine
from bot.ratelimit import default_limits
from bot.usage import Prices

if TYPE_CHECKING:
    from asyncinotify import Inotify, Mask, Watch

log = logging.getLogger(__name__)

LIVE = frozenset(
    {
        "model", "context_tokens", "reply_tokens", "history_messages", "system_prompt",
        "max_input_chars", "requests_per_minute", "tokens_per_day", "cost_per_day_usd",
        "admins_exempt", "admins", "platform_admin_workspaces", "tools", "tool_channels",
        "tool_timeout_seconds", "max_tool_rounds", "prices_path", "recovery_max_age",
        "access_allow_users", "access_block_users", "access_allow_channels",
        "access_block_channels", "access_allow_roles", "access_block_roles", "access_dms",
        "access_refusal", "discord_reply_chain_depth", "summarize_max_messages",
        "reload_poll_seconds",
    }
)  # fmt: skip
IDLE_SECONDS = 1.0  # how often to look at reload_poll_seconds when polling is off
# With the kernel watching, the files are still looked at this often: what inotify does
# not see (the folder replaced, a symlink swapped, a network filesystem) is picked up
# too, for one wake-up every half minute instead of every 2 s.
BACKSTOP_SECONDS = 30.0

Stamp = tuple[tuple[int, int], ...]


def apply(engine: Engine, settings: Settings, prices: Prices) -> None:
    """Hand new settings to every part that reads them per message."""
    engine.settings = settings
    # Parts that keep settings of their own; what they read and LIVE leaves out is
    # kept unchanged by merge(), so handing them the new object is safe.
    parts = (engine.commands, engine.limiter, engine.prompts, engine.answers)
    for part in (*parts, getattr(engine.prompts, "summarizer", None)):
        if part is not None and hasattr(part, "settings"):
            part.settings = settings
    engine.limiter.defaults = default_limits(settings)
    engine.prices = prices
    summarizer = getattr(engine.prompts, "summarizer", None)
    if summarizer is not None and hasattr(summarizer, "prices"):
        summarizer.prices = prices


def merge(old: Settings, new: Settings) -> Settings:
    """The new settings, except those that only a restart can change."""
    kept = {}
    for field in fields(Settings):
        if field.name in LIVE or field.name in ("config_path", "cli_overrides"):
            continue
        if getattr(new, field.name) != getattr(old, field.name):
            log.warning("config: %s changed; it takes effect after a restart", field.name)
        kept[field.name] = getattr(old, field.name)
    return replace(new, **kept)


def _stamp(*paths: str) -> Stamp:
    stamps = []
    for path in paths:
        try:
            status = Path(path).stat()
            stamps.append((status.st_mtime_ns, status.st_size))
        except OSError:
            stamps.append((0, -1))
    return tuple(stamps)


class LiveSettings:
    """Watches the config file for one engine, from start() until stop()."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stamp = self._current_stamp()
        self._task: asyncio.Task[None] | None = None

    def _current_stamp(self) -> Stamp:
        settings = self.engine.settings
        return _stamp(settings.config_path, settings.prices_path)

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="live-settings")
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _folders(self) -> set[Path]:
        settings = self.engine.settings
        folders = set()
        for path in (settings.config_path, settings.prices_path):
            if path:
                folders.add(Path(path).absolute().parent)
                folders.add(Path(path).resolve().parent)  # a symlinked file changes there
        return folders

    async def _watch(self) -> None:
        changes = _kernel_changes(self._folders)
        if changes is None:
            await self._poll()
            return
        self._reload_if_changed()  # an edit made before the watch was in place
        try:
            async for _ in changes:
                self._reload_if_changed()
        except OSError as error:
            log.warning("config: the kernel's watch failed (%s); looking at the files", error)
            await self._poll()

    def _reload_if_changed(self) -> None:
        if self.engine.settings.reload_poll_seconds and self._current_stamp() != self.stamp:
            self.reload()

    async def _poll(self) -> None:
        """Where the kernel cannot tell: look at the files' stamps now and then."""
        while True:
            interval = self.engine.settings.reload_poll_seconds
            await asyncio.sleep(interval or IDLE_SECONDS)
            if interval and self._current_stamp() != self.stamp:
                self.reload()

    def reload(self) -> bool:
        """Read the config file again; True if the new settings are in force."""
        old = self.engine.settings
        self.stamp = self._current_stamp()  # a refused edit is not retried until the next
        try:
            new = merge(old, load_settings(old.config_path, overrides=dict(old.cli_overrides)))
            prices = Prices.load(new.prices_path)
        except ConfigError as error:
            log.error("config: edit refused, the last good settings stay in force: %s", error)
            return False
        changed = sorted(
            f.name for f in fields(Settings) if getattr(new, f.name) != getattr(old, f.name)
        )
        apply(self.engine, new, prices)
        self.stamp = self._current_stamp()
        log.info(
            "config: reloaded %s (changed: %s)", old.config_path, ", ".join(changed) or "nothing"
        )
        return True


def _kernel_changes(folders: Callable[[], set[Path]]) -> AsyncIterator[None] | None:
    """Something may have changed in one of the folders (as they are now): as the
    kernel reports it, and every BACKSTOP_SECONDS in any case; None where the kernel
    cannot tell (not Linux, out of inotify instances, or no folder could be watched)."""
    try:
        from asyncinotify import Inotify, Mask  # Linux only: the import fails elsewhere

        inotify = Inotify()
    except Exception as error:  # ImportError, OSError, or a libc without inotify
        log.info("config: watching by modification time (%s)", error)
        return None
    # A file in the folder written and closed (an editor, cp), renamed into place (atomic
    # writers, a Kubernetes ConfigMap's ..data link), touched or removed; the folder
    # itself moved away. Not CREATE or MODIFY: the file may still be half written then.
    mask = Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.ATTRIB | Mask.DELETE | Mask.MOVE_SELF
    watched = _add_watches(inotify, mask, folders(), {})
    if not any(watched.values()):
        inotify.close()
        return None
    return _changes(inotify, mask, folders, watched)


def _add_watches(
    inotify: Inotify, mask: Mask, folders: set[Path], watched: dict[Path, Watch | None]
) -> dict[Path, Watch | None]:
    for folder in folders - watched.keys():
        if not folder.is_dir():
            continue  # gone for now (a folder being swapped): watched once it is back
        try:
            watched[folder] = inotify.add_watch(folder, mask)
        except OSError as error:  # no permission, no watches left: it would fail again
            log.warning(
                "config: cannot watch %s for changes (%s); it is looked at every %.0f s",
                folder, error, BACKSTOP_SECONDS,
            )  # fmt: skip
            watched[folder] = None
    return watched


async def _changes(
    inotify: Inotify,
    mask: Mask,
    folders: Callable[[], set[Path]],
    watched: dict[Path, Watch | None],
) -> AsyncIterator[None]:
    from asyncinotify import Mask

    with inotify:
        while True:
            try:
                event = await asyncio.wait_for(inotify.get(), BACKSTOP_SECONDS)
            except TimeoutError:
                event = None
            gone = Mask.IGNORED | Mask.MOVE_SELF  # the folder deleted, or moved away
            if event is not None and event.mask & gone and event.watch is not None:
                for folder, watch in list(watched.items()):
                    if watch is event.watch:
                        del watched[folder]  # watched anew below, if it is back
                        if event.mask & Mask.MOVE_SELF:
                            inotify.rm_watch(watch)
            yield None
            # A reload may have named a prices file in another folder.
            _add_watches(inotify, mask, folders(), watched)
