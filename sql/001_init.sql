-- The data model of api.md §3. Timestamps are ISO 8601 UTC text with milliseconds, so they sort
-- as strings and reach the client unchanged.

CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reuse an id a token may still name
    username        TEXT    NOT NULL UNIQUE,
    hashed_password TEXT    NOT NULL,
    role            TEXT    NOT NULL DEFAULT 'USER' CHECK (role IN ('ADMIN', 'USER')),
    token_version   INTEGER NOT NULL DEFAULT 0,         -- bumped on password change
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE model_configs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- the key ciphertext is bound to it
    user_id         INTEGER NULL REFERENCES users (id) ON DELETE CASCADE,  -- NULL: system model
    name            TEXT    NOT NULL,
    api_url         TEXT    NOT NULL,
    api_key         TEXT    NOT NULL,
    supports_images INTEGER NOT NULL DEFAULT 0 CHECK (supports_images IN (0, 1)),
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE UNIQUE INDEX model_configs_personal_name ON model_configs (user_id, name);
CREATE UNIQUE INDEX model_configs_system_name ON model_configs (name) WHERE user_id IS NULL;

CREATE TABLE chat_sessions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model_config_id INTEGER NOT NULL REFERENCES model_configs (id) ON DELETE RESTRICT,
    title           TEXT    NOT NULL,
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX chat_sessions_user ON chat_sessions (user_id);

CREATE TABLE messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  INTEGER NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    role        TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
    content     TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'stopped', 'error')),
    reasoning   TEXT    NULL,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX messages_session ON messages (session_id, created_at, id);

CREATE TABLE usage_metrics (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id        INTEGER NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    message_id        INTEGER NULL REFERENCES messages (id) ON DELETE SET NULL,
    model             TEXT    NOT NULL,
    provider          TEXT    NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    context_limit     INTEGER NULL,
    created_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX usage_metrics_session ON usage_metrics (session_id);
CREATE INDEX usage_metrics_message ON usage_metrics (message_id);

CREATE TABLE system_settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE user_settings (
    user_id             INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    context_token_limit INTEGER NULL,
    theme               TEXT    NULL,
    created_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
