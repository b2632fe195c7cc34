-- Quotas (docs/api.md §9): per-user overrides of the system's default limits (NULL: the
-- default), an API key's own monthly token limit, and what the limits are checked against.
ALTER TABLE users ADD COLUMN requests_per_minute INTEGER NULL;
ALTER TABLE users ADD COLUMN tokens_per_day INTEGER NULL;
ALTER TABLE users ADD COLUMN tokens_per_month INTEGER NULL;
ALTER TABLE users ADD COLUMN cost_per_month_micros INTEGER NULL;
ALTER TABLE users ADD COLUMN max_concurrent_streams INTEGER NULL;
ALTER TABLE api_keys ADD COLUMN tokens_per_month INTEGER NULL;

-- Tokens and cost per user, UTC day and key (0: not through a key), kept by the trigger
-- below in the commit that stores each usage row. A month is at most 31 rows per key, and
-- deleting a session (which deletes its usage rows) does not give its tokens back.
CREATE TABLE quota_days (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day        TEXT    NOT NULL,
    api_key_id INTEGER NOT NULL DEFAULT 0,
    tokens     INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day, api_key_id)
);

INSERT INTO quota_days (user_id, day, api_key_id, tokens, cost_nanos)
    SELECT user_id, substr(created_at, 1, 10), COALESCE(api_key_id, 0), SUM(total_tokens),
           COALESCE(SUM(cost_nanos), 0)
    FROM usage_metrics WHERE user_id IS NOT NULL
    GROUP BY user_id, substr(created_at, 1, 10), COALESCE(api_key_id, 0);

CREATE TRIGGER usage_metrics_quota AFTER INSERT ON usage_metrics
BEGIN
    INSERT INTO quota_days (user_id, day, api_key_id, tokens, cost_nanos)
    VALUES (COALESCE(NEW.user_id, (SELECT user_id FROM chat_sessions WHERE id = NEW.session_id)),
            substr(NEW.created_at, 1, 10), COALESCE(NEW.api_key_id, 0), NEW.total_tokens,
            COALESCE(NEW.cost_nanos, 0))
    ON CONFLICT (user_id, day, api_key_id) DO UPDATE SET
        tokens = tokens + excluded.tokens, cost_nanos = cost_nanos + excluded.cost_nanos;
END;

-- Requests in the user's current UTC minute: one row per user.
CREATE TABLE quota_minutes (
    user_id  INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    minute   TEXT    NOT NULL,
    requests INTEGER NOT NULL
);

-- Rounds in flight: each holds its prompt's tokens and cost until its usage row is stored.
-- instance_id: the PostgreSQL instance running it (0 on SQLite, where a start clears them).
CREATE TABLE quota_holds (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id  INTEGER NOT NULL DEFAULT 0,
    instance_id INTEGER NOT NULL DEFAULT 0,
    tokens      INTEGER NOT NULL,
    cost_nanos  INTEGER NOT NULL
);
CREATE INDEX quota_holds_user ON quota_holds (user_id);
