-- The process that runs a round, for PostgreSQL's several instances (sql/postgres/); one
-- SQLite process is always instance 0. Keeps the checkpoint queries the same on both.
ALTER TABLE round_checkpoints ADD COLUMN instance_id INTEGER NOT NULL DEFAULT 0;
