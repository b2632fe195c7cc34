-- Replies that survive a reload (docs/api.md §5.9): a streamed round stores its assistant
-- message as it starts, with the new status 'streaming', and updates that same row when it
-- ends; a reloaded page lists it with the text so far. SQLite cannot alter a CHECK, so
-- messages is rebuilt as in 004 (foreign keys are off while migrations run; the runner checks
-- them afterwards). The partial index finds the rows left streaming by a crash at start.

CREATE TABLE messages_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  INTEGER NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    role        TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
    content     TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'stopped', 'error', 'interrupted', 'streaming')),
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
CREATE INDEX messages_streaming ON messages (session_id) WHERE status = 'streaming';

-- The running round's stream id (docs/api.md §5.9), for a follower on a second instance.
ALTER TABLE round_checkpoints ADD COLUMN generation TEXT NULL;
