-- Checkpoints append instead of rewriting: each second a running round adds only the text it
-- streamed since its last checkpoint, so the cost of checkpointing a long reply stays linear
-- (rewriting the whole text each second was quadratic in the reply's length). The head row in
-- round_checkpoints keeps the round's metadata; its content column holds what an older version
-- wrote before this migration.

CREATE TABLE round_checkpoint_parts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES round_checkpoints (session_id) ON DELETE CASCADE,
    content    TEXT    NOT NULL DEFAULT '',
    reasoning  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX round_checkpoint_parts_session ON round_checkpoint_parts (session_id, id);
