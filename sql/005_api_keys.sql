-- Personal API keys for the OpenAI-compatible surface (/v1), stored as SHA-256 hashes only,
-- and one usage row per /v1 request (no chat session is created for those).

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    key_hash     TEXT    NOT NULL UNIQUE,
    expires_at   TEXT    NULL,
    last_used_at TEXT    NULL,
    created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX api_keys_user ON api_keys (user_id, created_at, id);

CREATE TABLE api_usage (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id        INTEGER NULL REFERENCES api_keys (id) ON DELETE SET NULL,
    model             TEXT    NOT NULL,
    provider          TEXT    NULL,
    status            TEXT    NOT NULL CHECK (status IN ('complete', 'stopped', 'error')),
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    estimated         INTEGER NOT NULL DEFAULT 0 CHECK (estimated IN (0, 1)),
    created_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX api_usage_user_created ON api_usage (user_id, created_at);
CREATE INDEX api_usage_key ON api_usage (api_key_id);
