-- The chat engine: each message keeps its token count (and the tokenizer mode that made it), so
-- building a context never re-encodes the history; usage rows say whether they are estimates.

ALTER TABLE messages ADD COLUMN token_count INTEGER NULL;
ALTER TABLE messages ADD COLUMN token_mode TEXT NULL;
ALTER TABLE usage_metrics ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0
    CHECK (estimated IN (0, 1));

-- Per-session totals, the newest round and daily sums read usage by session and time.
DROP INDEX usage_metrics_session;
CREATE INDEX usage_metrics_session_created ON usage_metrics (session_id, created_at, id);
