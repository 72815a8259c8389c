"""The PostgreSQL schema as numbered migrations, each applied once, in order.

Two replicas starting at once take turns under an advisory lock; the second finds
every migration recorded and applies nothing. Identifiers and keys use the "C"
collation: conversations are found by prefix ranges, which a language collation
(that skips punctuation when comparing) would break, and SQLite compares bytes too.
"""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# Any constant of our own: the advisory lock that serialises migrations.
MIGRATION_LOCK = 0x5041524C4559  # "PARLEY"

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "history",
        """
        CREATE TABLE messages (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            conversation text COLLATE "C" NOT NULL, role text NOT NULL,
            content text NOT NULL, tokens integer NOT NULL, group_id bigint NOT NULL,
            author text NOT NULL DEFAULT '', tool_calls text,
            tool_call_id text NOT NULL DEFAULT '', created_at double precision NOT NULL);
        CREATE INDEX messages_by_conversation ON messages (conversation, id);
        CREATE TABLE conversations (
            conversation text COLLATE "C" PRIMARY KEY,
            context_start bigint NOT NULL DEFAULT 0,
            trim_noticed boolean NOT NULL DEFAULT false);
        CREATE TABLE channel_settings (
            platform text COLLATE "C" NOT NULL, workspace text COLLATE "C" NOT NULL,
            channel text COLLATE "C" NOT NULL, system_prompt text, model text,
            PRIMARY KEY (platform, workspace, channel));
        CREATE TABLE deliveries (key text COLLATE "C" PRIMARY KEY,
            seen_at double precision NOT NULL);
        CREATE INDEX deliveries_by_age ON deliveries (seen_at);
        """,
    ),
    (
        2,
        "usage_and_limits",
        """
        CREATE TABLE usage (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            created_at double precision NOT NULL, day text COLLATE "C" NOT NULL,
            platform text COLLATE "C" NOT NULL, workspace text COLLATE "C" NOT NULL,
            channel text COLLATE "C" NOT NULL, user_key text COLLATE "C" NOT NULL,
            model text COLLATE "C" NOT NULL, prompt_tokens integer NOT NULL,
            completion_tokens integer NOT NULL, cached_tokens integer NOT NULL,
            tool_calls integer NOT NULL, cost_usd double precision,
            latency_ms double precision NOT NULL, status text NOT NULL);
        CREATE INDEX usage_by_time ON usage (created_at);
        CREATE TABLE daily_totals (
            user_key text COLLATE "C" NOT NULL, day text COLLATE "C" NOT NULL,
            tokens bigint NOT NULL DEFAULT 0, cost_usd double precision NOT NULL DEFAULT 0,
            PRIMARY KEY (user_key, day));
        CREATE TABLE limits (
            user_key text COLLATE "C" PRIMARY KEY, requests_per_minute bigint,
            tokens_per_day bigint, cost_per_day_usd double precision,
            blocked boolean NOT NULL DEFAULT false);
        CREATE TABLE admissions (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_key text COLLATE "C" NOT NULL, at double precision NOT NULL);
        CREATE INDEX admissions_by_user ON admissions (user_key, at);
        CREATE TABLE refusals (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at double precision NOT NULL, user_key text COLLATE "C" NOT NULL,
            kind text NOT NULL);
        CREATE INDEX refusals_by_time ON refusals (at);
        """,
    ),
    (
        3,
        "turns",
        """
        CREATE TABLE turns (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            conversation text COLLATE "C" NOT NULL, platform text COLLATE "C" NOT NULL,
            owner text NOT NULL, lease_until double precision NOT NULL,
            created_at double precision NOT NULL, admitted boolean NOT NULL DEFAULT false,
            payload text NOT NULL DEFAULT '');
        CREATE INDEX turns_by_conversation ON turns (conversation, id);
        CREATE INDEX turns_by_owner ON turns (owner);
        CREATE INDEX turns_by_lease ON turns (lease_until);
        """,
    ),
    (
        4,
        "one_round_trip_calls",
        # The store calls a message makes on every answer, each one round trip: a
        # function runs as one statement, atomic without BEGIN and COMMIT of its own.
        # The limit rules mirror bot.store.records.judge (the parametrised store tests
        # hold both to the same verdicts).
        """
        CREATE FUNCTION parley_begin_turn(p_keys text[], p_conversation text,
            p_platform text, p_owner text, p_lease_until double precision,
            p_now double precision, p_payload text)
        RETURNS TABLE (turn_id bigint, is_first boolean) LANGUAGE plpgsql AS $$
        DECLARE
            fresh integer;
        BEGIN
            WITH new AS (INSERT INTO deliveries (key, seen_at)
                SELECT DISTINCT unnest(p_keys), p_now ON CONFLICT DO NOTHING RETURNING 1)
            SELECT count(*) INTO fresh FROM new;
            IF fresh < (SELECT count(DISTINCT k) FROM unnest(p_keys) AS k) THEN
                RETURN;  -- a delivery seen before
            END IF;
            INSERT INTO turns (conversation, platform, owner, lease_until, created_at,
                payload) VALUES (p_conversation, p_platform, p_owner, p_lease_until, p_now,
                p_payload) RETURNING id INTO turn_id;
            is_first := NOT EXISTS (SELECT 1 FROM turns t WHERE t.conversation = p_conversation
                AND t.id < turn_id AND t.lease_until > p_now);
            RETURN NEXT;
        END $$;

        CREATE FUNCTION parley_admit(p_user text, p_exempt boolean, p_rpm bigint,
            p_tpd bigint, p_cost double precision, p_now double precision,
            p_window double precision, p_day text, p_next_day double precision,
            p_conversation text, p_text text, p_tokens integer, p_turn bigint)
        RETURNS TABLE (refused text, retry_at double precision) LANGUAGE plpgsql AS $$
        DECLARE
            own limits%ROWTYPE;
            used_tokens bigint := 0;
            used_cost double precision := 0;
            counted bigint := 0;
            oldest double precision;
        BEGIN
            refused := '';
            retry_at := 0;
            IF NOT p_exempt THEN
                -- Replicas deciding for one user take turns until this statement ends;
                -- what the previous holder committed is visible to the queries below.
                PERFORM pg_advisory_xact_lock(hashtextextended(p_user, 0));
                DELETE FROM admissions WHERE user_key = p_user AND at <= p_now - p_window;
                SELECT * INTO own FROM limits WHERE user_key = p_user;
                IF FOUND THEN
                    p_rpm := coalesce(own.requests_per_minute, p_rpm);
                    p_tpd := coalesce(own.tokens_per_day, p_tpd);
                    p_cost := coalesce(own.cost_per_day_usd, p_cost);
                END IF;
                SELECT coalesce(t.tokens, 0), coalesce(t.cost_usd, 0)
                    INTO used_tokens, used_cost
                    FROM daily_totals t WHERE t.user_key = p_user AND t.day = p_day;
                IF coalesce(own.blocked, false) THEN
                    refused := 'blocked';
                ELSIF coalesce(p_rpm, 0) > 0 THEN
                    SELECT count(*), min(at) INTO counted, oldest FROM (SELECT a.at
                        FROM admissions a WHERE a.user_key = p_user
                        ORDER BY a.at DESC LIMIT p_rpm) AS newest;
                    IF counted >= p_rpm THEN
                        refused := 'requests_per_minute';
                        retry_at := oldest + p_window;
                    END IF;
                END IF;
                IF refused = '' AND coalesce(p_tpd, 0) > 0
                        AND coalesce(used_tokens, 0) >= p_tpd THEN
                    refused := 'tokens_per_day';
                    retry_at := p_next_day;
                ELSIF refused = '' AND coalesce(p_cost, 0) > 0
                        AND coalesce(used_cost, 0) >= p_cost THEN
                    refused := 'cost_per_day';
                    retry_at := p_next_day;
                END IF;
                IF refused <> '' THEN
                    INSERT INTO refusals (at, user_key, kind) VALUES (p_now, p_user, refused);
                    RETURN NEXT;
                    RETURN;
                END IF;
                INSERT INTO admissions (user_key, at) VALUES (p_user, p_now);
            END IF;
            IF p_conversation IS NOT NULL THEN
                INSERT INTO messages (conversation, role, content, tokens, group_id, author,
                    created_at) VALUES (p_conversation, 'user', p_text, p_tokens, 0, p_user,
                    p_now);
                UPDATE turns SET admitted = true WHERE id = p_turn;
            END IF;
            RETURN NEXT;
        END $$;

        CREATE FUNCTION parley_finish_call(p_at double precision, p_day text,
            p_platform text, p_workspace text, p_channel text, p_user text, p_model text,
            p_prompt integer, p_completion integer, p_cached integer, p_tool_calls integer,
            p_cost double precision, p_latency double precision, p_status text,
            p_conversation text, p_answer text, p_answer_tokens integer, p_turn bigint)
        RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO usage (created_at, day, platform, workspace, channel, user_key,
                model, prompt_tokens, completion_tokens, cached_tokens, tool_calls,
                cost_usd, latency_ms, status) VALUES (p_at, p_day, p_platform,
                p_workspace, p_channel, p_user, p_model, p_prompt, p_completion, p_cached,
                p_tool_calls, p_cost, p_latency, p_status);
            INSERT INTO daily_totals AS d (user_key, day, tokens, cost_usd)
                VALUES (p_user, p_day, p_prompt + p_completion, coalesce(p_cost, 0))
                ON CONFLICT (user_key, day) DO UPDATE SET
                tokens = d.tokens + excluded.tokens, cost_usd = d.cost_usd + excluded.cost_usd;
            IF p_answer IS NOT NULL THEN
                INSERT INTO messages (conversation, role, content, tokens, group_id,
                    created_at) VALUES (p_conversation, 'assistant', p_answer,
                    p_answer_tokens, 0, extract(epoch from clock_timestamp()));
            END IF;
            IF p_turn IS NOT NULL THEN
                DELETE FROM turns WHERE id = p_turn;
            END IF;
        END $$;
        """,
    ),
    (
        5,
        "long_conversations",
        # kind: what a call was for ("chat", "summary"); parley_finish_call records it.
        # summaries: where a trimmed conversation's prompt starts and the rolling
        # summary of what came before (bot/summaries.py). response_cache: answers to
        # single-turn questions by a hash of all that shapes them (bot/prompting.py).
        """
        ALTER TABLE usage ADD COLUMN kind text NOT NULL DEFAULT 'chat';
        CREATE TABLE summaries (
            conversation text COLLATE "C" PRIMARY KEY, summary text NOT NULL,
            covers_up_to bigint NOT NULL, starts_after bigint NOT NULL,
            updated_at double precision NOT NULL);
        CREATE TABLE response_cache (
            key text COLLATE "C" PRIMARY KEY, channel text COLLATE "C" NOT NULL,
            answer text NOT NULL, expires_at double precision NOT NULL);
        CREATE INDEX response_cache_by_channel ON response_cache (channel);
        CREATE INDEX response_cache_by_expiry ON response_cache (expires_at);
        DROP FUNCTION parley_finish_call(double precision, text, text, text, text, text,
            text, integer, integer, integer, integer, double precision, double precision,
            text, text, text, integer, bigint);
        CREATE FUNCTION parley_finish_call(p_at double precision, p_day text,
            p_platform text, p_workspace text, p_channel text, p_user text, p_model text,
            p_prompt integer, p_completion integer, p_cached integer, p_tool_calls integer,
            p_cost double precision, p_latency double precision, p_status text,
            p_conversation text, p_answer text, p_answer_tokens integer, p_turn bigint,
            p_kind text)
        RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO usage (created_at, day, platform, workspace, channel, user_key,
                model, prompt_tokens, completion_tokens, cached_tokens, tool_calls,
                cost_usd, latency_ms, status, kind) VALUES (p_at, p_day, p_platform,
                p_workspace, p_channel, p_user, p_model, p_prompt, p_completion, p_cached,
                p_tool_calls, p_cost, p_latency, p_status, p_kind);
            INSERT INTO daily_totals AS d (user_key, day, tokens, cost_usd)
                VALUES (p_user, p_day, p_prompt + p_completion, coalesce(p_cost, 0))
                ON CONFLICT (user_key, day) DO UPDATE SET
                tokens = d.tokens + excluded.tokens, cost_usd = d.cost_usd + excluded.cost_usd;
            IF p_answer IS NOT NULL THEN
                INSERT INTO messages (conversation, role, content, tokens, group_id,
                    created_at) VALUES (p_conversation, 'assistant', p_answer,
                    p_answer_tokens, 0, extract(epoch from clock_timestamp()));
            END IF;
            IF p_turn IS NOT NULL THEN
                DELETE FROM turns WHERE id = p_turn;
            END IF;
        END $$;
        """,
    ),
    (
        6,
        "audit",
        # Admin actions and safety events; only audit.retain_days deletes rows. A
        # budget alert's key is claimed once, by whichever replica gets there first.
        """
        CREATE TABLE audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at double precision NOT NULL, actor text COLLATE "C" NOT NULL,
            platform text COLLATE "C" NOT NULL, workspace text COLLATE "C" NOT NULL,
            channel text COLLATE "C" NOT NULL, action text COLLATE "C" NOT NULL,
            target text COLLATE "C" NOT NULL, before text NOT NULL, after text NOT NULL);
        CREATE INDEX audit_by_time ON audit (at);
        CREATE TABLE budget_alerts (key text COLLATE "C" PRIMARY KEY,
            at double precision NOT NULL);
        ALTER TABLE channel_settings ADD COLUMN moderation text;
        """,
    ),
    (
        7,
        "access",
        # Numbers are taken per feature branch: a gap (5 not yet here) is fine,
        # migrate() applies whatever is missing, by number.
        """
        CREATE TABLE access (
            kind text COLLATE "C" NOT NULL, target text COLLATE "C" NOT NULL,
            list text NOT NULL, created_at double precision NOT NULL,
            PRIMARY KEY (kind, target));
        CREATE TABLE access_notices (key text COLLATE "C" PRIMARY KEY,
            at double precision NOT NULL);
        """,
    ),
    (
        8,
        "attachments",
        # A user message with images keeps its content parts (JSON, images as data:
        # URLs of the scaled copy) beside its text; NULL for every other message.
        "ALTER TABLE messages ADD COLUMN parts text;",
    ),
    (
        9,
        "turn_behind_stale",
        # A new turn also says whether an older one had run out of lease (its process
        # died): only then does the message look for stale turns to take over first,
        # instead of one more transaction on every message. A replica of the version
        # before reads the first two columns and is unaffected.
        """
        DROP FUNCTION parley_begin_turn(text[], text, text, text, double precision,
            double precision, text);
        CREATE FUNCTION parley_begin_turn(p_keys text[], p_conversation text,
            p_platform text, p_owner text, p_lease_until double precision,
            p_now double precision, p_payload text)
        RETURNS TABLE (turn_id bigint, is_first boolean, behind_stale boolean)
        LANGUAGE plpgsql AS $$
        DECLARE
            fresh integer;
        BEGIN
            WITH new AS (INSERT INTO deliveries (key, seen_at)
                SELECT DISTINCT unnest(p_keys), p_now ON CONFLICT DO NOTHING RETURNING 1)
            SELECT count(*) INTO fresh FROM new;
            IF fresh < (SELECT count(DISTINCT k) FROM unnest(p_keys) AS k) THEN
                RETURN;  -- a delivery seen before
            END IF;
            INSERT INTO turns (conversation, platform, owner, lease_until, created_at,
                payload) VALUES (p_conversation, p_platform, p_owner, p_lease_until, p_now,
                p_payload) RETURNING id INTO turn_id;
            is_first := NOT EXISTS (SELECT 1 FROM turns t WHERE t.conversation = p_conversation
                AND t.id < turn_id AND t.lease_until > p_now);
            behind_stale := EXISTS (SELECT 1 FROM turns t WHERE t.conversation = p_conversation
                AND t.id < turn_id AND t.lease_until <= p_now);
            RETURN NEXT;
        END $$;
        """,
    ),
]


async def migrate(connection: PoolConnectionProxy[asyncpg.Record]) -> list[str]:
    """Apply what is missing; the names applied now."""
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS parley_migrations (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await connection.fetch("SELECT version FROM parley_migrations")
        done = {row[0] for row in rows}
        applied: list[str] = []
        # By number, whatever order the list is in; a missing number is no obstacle
        # (branches take numbers ahead of time), and a later one applied first is
        # still followed by an earlier one that arrives after it.
        for version, name, sql in sorted(MIGRATIONS):
            if version in done:
                continue
            async with connection.transaction():
                await connection.execute(sql)
                await connection.execute(
                    "INSERT INTO parley_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
        return applied
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
