-- Indexes for the list queries at scale (10 000 sessions, 1 000 000 messages): the sidebar's
-- newest-first page, the model-in-use checks, and one usage row per message at most.

DROP INDEX chat_sessions_user;
CREATE INDEX chat_sessions_user_created ON chat_sessions (user_id, created_at, id);
CREATE INDEX chat_sessions_model ON chat_sessions (model_config_id);

DROP INDEX usage_metrics_message;
CREATE UNIQUE INDEX usage_metrics_message ON usage_metrics (message_id)
    WHERE message_id IS NOT NULL;
