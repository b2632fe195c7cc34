-- sql/012_streaming_replies.sql for PostgreSQL: a CHECK is altered in place.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('complete', 'stopped', 'error', 'interrupted', 'streaming'));
CREATE INDEX messages_streaming ON messages (session_id) WHERE status = 'streaming';
ALTER TABLE round_checkpoints ADD COLUMN generation TEXT NULL;
