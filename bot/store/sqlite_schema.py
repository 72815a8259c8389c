"""The database schema as sqlite-utils migrations: each one runs once, in order."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATIONS = Migrations("parley")


@MIGRATIONS()
def history(db: Database) -> None:
    db.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation TEXT NOT NULL,"
        " role TEXT NOT NULL, content TEXT NOT NULL, tokens INTEGER NOT NULL,"
        " group_id INTEGER NOT NULL, user TEXT NOT NULL DEFAULT '', tool_calls TEXT,"
        " tool_call_id TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL)"
    )
    # Every history read is "the newest rows of one conversation".
    db.execute("CREATE INDEX messages_by_conversation ON messages (conversation, id)")
    db.execute(
        "CREATE TABLE conversations (conversation TEXT PRIMARY KEY,"
        " context_start INTEGER NOT NULL DEFAULT 0, trim_noticed INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute(
        "CREATE TABLE channel_settings (platform TEXT NOT NULL, workspace TEXT NOT NULL,"
        " channel TEXT NOT NULL, system_prompt TEXT, model TEXT,"
        " PRIMARY KEY (platform, workspace, channel))"
    )
    db.execute("CREATE TABLE deliveries (key TEXT PRIMARY KEY, seen_at REAL NOT NULL)")
    db.execute("CREATE INDEX deliveries_by_age ON deliveries (seen_at)")


@MIGRATIONS()
def usage_and_limits(db: Database) -> None:
    db.execute(
        "CREATE TABLE usage (id INTEGER PRIMARY KEY, created_at REAL NOT NULL,"
        " day TEXT NOT NULL, platform TEXT NOT NULL, workspace TEXT NOT NULL,"
        " channel TEXT NOT NULL, user_key TEXT NOT NULL, model TEXT NOT NULL,"
        " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
        " cached_tokens INTEGER NOT NULL, tool_calls INTEGER NOT NULL, cost_usd REAL,"
        " latency_ms REAL NOT NULL, status TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX usage_by_time ON usage (created_at)")
    # One row per user and UTC day, updated with each call, so the daily token and
    # cost checks read one row however busy the user has been.
    db.execute(
        "CREATE TABLE daily_totals (user_key TEXT NOT NULL, day TEXT NOT NULL,"
        " tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0,"
        " PRIMARY KEY (user_key, day))"
    )
    db.execute(
        "CREATE TABLE limits (user_key TEXT PRIMARY KEY, requests_per_minute INTEGER,"
        " tokens_per_day INTEGER, cost_per_day_usd REAL, blocked INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute(
        "CREATE TABLE admissions (id INTEGER PRIMARY KEY, user_key TEXT NOT NULL, at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX admissions_by_user ON admissions (user_key, at)")
    db.execute(
        "CREATE TABLE refusals (id INTEGER PRIMARY KEY, at REAL NOT NULL,"
        " user_key TEXT NOT NULL, kind TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX refusals_by_time ON refusals (at)")


@MIGRATIONS()
def history_search(db: Database) -> None:
    # An external-content FTS5 index over messages, kept in step by triggers.
    db.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages',"
        " content_rowid='id')"
    )
    db.execute(
        "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN"
        " INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content); END"
    )
    db.execute(
        "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN"
        " INSERT INTO messages_fts (messages_fts, rowid, content)"
        " VALUES ('delete', old.id, old.content); END"
    )
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")


@MIGRATIONS()
def lazy_history_index(db: Database) -> None:
    # Indexing every message as it is stored cost more than storing it; search is rare,
    # so Store.search_channel indexes what is new, in bulk, just before it searches.
    db.execute("DROP TRIGGER messages_fts_insert")
    db.execute(
        "CREATE TABLE fts_state (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " last_indexed INTEGER NOT NULL)"
    )
    db.execute(
        "INSERT INTO fts_state (id, last_indexed) SELECT 1, coalesce(max(id), 0) FROM messages"
    )


@MIGRATIONS()
def turns(db: Database) -> None:
    # One row per claimed message until it is answered: its place in the
    # conversation's queue (replicas answer in id order) and the lease of the process
    # answering it. payload is the neutral message, for answering it after a crash.
    # admitted: the message passed the limits and is stored in history. A turn whose
    # lease ran out (its process died, or it let go at shutdown) is answered by
    # whichever process runs that platform's adapter next.
    db.execute(
        "CREATE TABLE turns (id INTEGER PRIMARY KEY, conversation TEXT NOT NULL,"
        " platform TEXT NOT NULL, owner TEXT NOT NULL, lease_until REAL NOT NULL,"
        " created_at REAL NOT NULL, admitted INTEGER NOT NULL DEFAULT 0,"
        " payload TEXT NOT NULL DEFAULT '')"
    )
    db.execute("CREATE INDEX turns_by_conversation ON turns (conversation, id)")
    db.execute("CREATE INDEX turns_by_owner ON turns (owner)")
    db.execute("CREATE INDEX turns_by_lease ON turns (lease_until)")


@MIGRATIONS()
def audit(db: Database) -> None:
    # Admin actions and safety events, one row each. Only audit.retain_days deletes.
    db.execute(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL,"
        " platform TEXT NOT NULL, workspace TEXT NOT NULL, channel TEXT NOT NULL,"
        " action TEXT NOT NULL, target TEXT NOT NULL, before TEXT NOT NULL,"
        " after TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX audit_by_time ON audit (at)")
    # A budget alert sent for one level, scope and period: the primary key lets one
    # replica's claim win, so admins hear of it once.
    db.execute("CREATE TABLE budget_alerts (key TEXT PRIMARY KEY, at REAL NOT NULL)")
    # An admin's moderation override for a channel (/moderation off).
    db.execute("ALTER TABLE channel_settings ADD COLUMN moderation TEXT")


@MIGRATIONS()
def long_conversations(db: Database) -> None:
    # What a call was for ("chat", "summary"), so reports can tell them apart.
    db.execute("ALTER TABLE usage ADD COLUMN kind TEXT NOT NULL DEFAULT 'chat'")
    # One row per conversation once it has been trimmed: where its prompt starts and
    # the rolling summary of what came before (bot/summaries.py).
    db.execute(
        "CREATE TABLE summaries (conversation TEXT PRIMARY KEY, summary TEXT NOT NULL,"
        " covers_up_to INTEGER NOT NULL, starts_after INTEGER NOT NULL,"
        " updated_at REAL NOT NULL)"
    )
    # Answers to single-turn questions, by a hash of everything that shapes the answer.
    db.execute(
        "CREATE TABLE response_cache (key TEXT PRIMARY KEY, channel TEXT NOT NULL,"
        " answer TEXT NOT NULL, expires_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX response_cache_by_channel ON response_cache (channel)")
    db.execute("CREATE INDEX response_cache_by_expiry ON response_cache (expires_at)")


@MIGRATIONS()
def access(db: Database) -> None:
    # Admins' allow and block entries (python -m bot access, /access), beside what
    # [access] in the config file sets: one row per target, on one list at a time.
    db.execute(
        "CREATE TABLE access (kind TEXT NOT NULL, target TEXT NOT NULL,"
        " list TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (kind, target))"
    )
    # Where Parley has said why it does not answer (access.refusal = "once"): kept in
    # the database so the once holds across restarts and replicas.
    db.execute("CREATE TABLE access_notices (key TEXT PRIMARY KEY, at REAL NOT NULL)")


@MIGRATIONS()
def attachments(db: Database) -> None:
    # A user message with images keeps its content parts (JSON, images as data: URLs of
    # the scaled copy) beside its text; NULL for every other message.
    db.execute("ALTER TABLE messages ADD COLUMN parts TEXT")
