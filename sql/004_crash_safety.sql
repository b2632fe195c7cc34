-- Crash safety: a running round's text is checkpointed here about once a second, and on start
-- any row left behind (the process died mid-round) becomes an assistant message with the new
-- status 'interrupted'. SQLite cannot alter a CHECK, so messages is rebuilt (foreign keys are
-- off while migrations run; the runner checks them afterwards).

CREATE TABLE messages_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  INTEGER NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    role        TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
    content     TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'stopped', 'error', 'interrupted')),
    reasoning   TEXT    NULL,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    token_count INTEGER NULL,
    token_mode  TEXT    NULL
);
INSERT INTO messages_new (id, session_id, role, content, status, reasoning, created_at,
                          token_count, token_mode)
    SELECT id, session_id, role, content, status, reasoning, created_at, token_count, token_mode
    FROM messages;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_session ON messages (session_id, created_at, id);

CREATE TABLE round_checkpoints (
    session_id      INTEGER PRIMARY KEY REFERENCES chat_sessions (id) ON DELETE CASCADE,
    user_message_id INTEGER NOT NULL,
    regenerate      INTEGER NOT NULL DEFAULT 0 CHECK (regenerate IN (0, 1)),
    model           TEXT    NOT NULL,
    provider        TEXT    NULL,
    prompt_tokens   INTEGER NOT NULL,
    context_limit   INTEGER NOT NULL,
    content         TEXT    NOT NULL DEFAULT '',
    reasoning       TEXT    NULL,
    updated_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
