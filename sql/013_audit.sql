-- The audit log (docs/api.md "Audit log"): one row per security-relevant event, never a
-- secret. Who acted is kept in plain columns, not foreign keys: the trail must outlive what it
-- names. ON DELETE CASCADE would erase a deleted user's history with them, and SET NULL would
-- erase who deleted them; ids are never reused (AUTOINCREMENT), so a stale id still means that
-- one account, and actor_name keeps the username it had.
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    actor_type    TEXT    NOT NULL
                  CHECK (actor_type IN ('user', 'api_key', 'system', 'anonymous')),
    actor_user_id INTEGER NULL,  -- the acting user (also set for actor_type 'api_key')
    actor_key_id  INTEGER NULL,  -- the API key the action was made with
    actor_name    TEXT    NULL,  -- the acting user's username at the time
    address       TEXT    NULL,  -- the client address; NULL for the command line
    action        TEXT    NOT NULL,
    target        TEXT    NULL,
    detail        TEXT    NOT NULL DEFAULT '{}'  -- a JSON object of at most 2000 characters
);
-- The list's filters, each ending in its order (newest first): time, actor, action. The
-- sweep deletes by time.
CREATE INDEX audit_log_time ON audit_log (created_at, id);
CREATE INDEX audit_log_actor ON audit_log (actor_user_id, created_at, id);
CREATE INDEX audit_log_action ON audit_log (action, created_at, id);
