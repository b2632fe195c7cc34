-- One usage table for chat rounds (session set) and /v1 requests (no session), each row with its
-- user, so that per-user sums over a time range (quotas) read one index across both. Every
-- existing row is kept: usage_metrics rows keep their ids and take their user from their session
-- and their status from their message (NULL when they have none); api_usage rows follow.
-- Cascades as before: a deleted session or user deletes its rows, a deleted message or a
-- revoked key leaves the row with NULL in its place.

CREATE TABLE usage_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           INTEGER NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id        INTEGER NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    message_id        INTEGER NULL REFERENCES messages (id) ON DELETE SET NULL,
    api_key_id        INTEGER NULL REFERENCES api_keys (id) ON DELETE SET NULL,
    model             TEXT    NOT NULL,
    provider          TEXT    NULL,
    status            TEXT    NULL
                      CHECK (status IN ('complete', 'stopped', 'error', 'interrupted')),
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    context_limit     INTEGER NULL,
    estimated         INTEGER NOT NULL DEFAULT 0 CHECK (estimated IN (0, 1)),
    created_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- user_id is NULL only until the trigger below fills it from the session.
    CHECK (user_id IS NOT NULL OR session_id IS NOT NULL),
    CHECK (session_id IS NULL OR api_key_id IS NULL)
);

INSERT INTO usage_new (id, user_id, session_id, message_id, model, provider, status,
                       prompt_tokens, completion_tokens, total_tokens, context_limit, estimated,
                       created_at)
    SELECT u.id, s.user_id, u.session_id, u.message_id, u.model, u.provider, m.status,
           u.prompt_tokens, u.completion_tokens, u.total_tokens, u.context_limit, u.estimated,
           u.created_at
    FROM usage_metrics u
    LEFT JOIN chat_sessions s ON s.id = u.session_id
    LEFT JOIN messages m ON m.id = u.message_id
    ORDER BY u.id;

INSERT INTO usage_new (user_id, api_key_id, model, provider, status, prompt_tokens,
                       completion_tokens, total_tokens, estimated, created_at)
    SELECT user_id, api_key_id, model, provider, status, prompt_tokens, completion_tokens,
           total_tokens, estimated, created_at
    FROM api_usage
    ORDER BY id;

DROP TABLE usage_metrics;
DROP TABLE api_usage;
ALTER TABLE usage_new RENAME TO usage_metrics;

-- Per session (totals, the newest round), per message (its usage), per user and time (daily
-- sums, quotas), per key (revoking one sets its rows' key to NULL).
CREATE INDEX usage_metrics_session_created ON usage_metrics (session_id, created_at, id);
CREATE UNIQUE INDEX usage_metrics_message ON usage_metrics (message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX usage_metrics_user_created ON usage_metrics (user_id, created_at);
CREATE INDEX usage_metrics_key ON usage_metrics (api_key_id) WHERE api_key_id IS NOT NULL;

-- A chat row's user is its session's owner: set here, so no writer can get it wrong.
CREATE TRIGGER usage_metrics_session_user AFTER INSERT ON usage_metrics
    WHEN NEW.user_id IS NULL
BEGIN
    UPDATE usage_metrics SET user_id = (SELECT user_id FROM chat_sessions
                                        WHERE id = NEW.session_id)
    WHERE id = NEW.id;
END;
