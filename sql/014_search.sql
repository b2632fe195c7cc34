-- Search (docs/api.md §11): an FTS5 index of every non-empty message and every session title,
-- with the trigram tokenizer (substrings of 3+ characters, any script, case-folded), so that
-- Chinese, which has no spaces between words, is found as well as English.
--
-- A row's rowid says whose it is: user_id * 2^39 + kind * 2^38 + id (kind 1: a session's
-- title, id its session id; kind 0: a message, id its message id). A user's rows are one rowid
-- range, which FTS5 seeks to, so a search reads the caller's matches only, not every user's;
-- within it the titles come last and messages in id order, so `rowid DESC` is newest first.
-- Rows past that layout (a user id of 2^24 or more, an id of 2^38 or more) are not indexed.
--
-- The index keeps its own copy of the text: a plain DELETE by rowid then removes a row, which
-- the triggers below can always compute while the session row exists. No column sizes
-- (columnsize=0): they serve bm25(), and aichat/store/search.py ranks without it. A session's rows go
-- before it does (BEFORE DELETE: its messages' own triggers run after it is gone, also when a
-- deleted user takes their sessions along, and then find nothing left to delete).
--
-- A later migration that rebuilds messages or chat_sessions (CREATE new, copy, DROP, RENAME)
-- drops these triggers with the old table: it must create them again.

CREATE VIRTUAL TABLE search_index USING fts5(text, tokenize = 'trigram', columnsize = 0);

-- The rows already stored, in rowid order: FTS5 writes out what it holds each time a rowid is
-- lower than the one before, so unsorted this took 2.5 times as long (251 s against 107 s for
-- a million messages, bench/SEARCH.md). Then one merge into a single segment (17 s there),
-- which made searches of that data 2 to 8 times faster.
INSERT INTO search_index (rowid, text)
    SELECT (user_id << 39) + (1 << 38) + id, title FROM chat_sessions
    WHERE title <> '' AND user_id < (1 << 24) AND id < (1 << 38)
    ORDER BY 1;
INSERT INTO search_index (rowid, text)
    SELECT (s.user_id << 39) + m.id, m.content
    FROM messages m JOIN chat_sessions s ON s.id = m.session_id
    WHERE m.content <> '' AND s.user_id < (1 << 24) AND m.id < (1 << 38)
    ORDER BY 1;
INSERT INTO search_index (search_index) VALUES ('optimize');

CREATE TRIGGER search_message_insert AFTER INSERT ON messages WHEN NEW.content <> ''
BEGIN
    INSERT INTO search_index (rowid, text)
        SELECT (user_id << 39) + NEW.id, NEW.content FROM chat_sessions
        WHERE id = NEW.session_id AND user_id < (1 << 24) AND NEW.id < (1 << 38);
END;

-- A streamed reply is inserted empty and gets its text here, when its round ends.
CREATE TRIGGER search_message_update AFTER UPDATE OF content ON messages
BEGIN
    DELETE FROM search_index WHERE rowid =
        (SELECT (user_id << 39) + OLD.id FROM chat_sessions WHERE id = OLD.session_id);
    INSERT INTO search_index (rowid, text)
        SELECT (user_id << 39) + NEW.id, NEW.content FROM chat_sessions
        WHERE id = NEW.session_id AND NEW.content <> '' AND user_id < (1 << 24)
              AND NEW.id < (1 << 38);
END;

CREATE TRIGGER search_message_delete AFTER DELETE ON messages
BEGIN
    DELETE FROM search_index WHERE rowid =
        (SELECT (user_id << 39) + OLD.id FROM chat_sessions WHERE id = OLD.session_id);
END;

CREATE TRIGGER search_session_insert AFTER INSERT ON chat_sessions WHEN NEW.title <> ''
BEGIN
    INSERT INTO search_index (rowid, text)
        SELECT (NEW.user_id << 39) + (1 << 38) + NEW.id, NEW.title
        WHERE NEW.user_id < (1 << 24) AND NEW.id < (1 << 38);
END;

CREATE TRIGGER search_session_rename AFTER UPDATE OF title ON chat_sessions
BEGIN
    DELETE FROM search_index WHERE rowid = (OLD.user_id << 39) + (1 << 38) + OLD.id;
    INSERT INTO search_index (rowid, text)
        SELECT (NEW.user_id << 39) + (1 << 38) + NEW.id, NEW.title
        WHERE NEW.title <> '' AND NEW.user_id < (1 << 24) AND NEW.id < (1 << 38);
END;

CREATE TRIGGER search_session_delete BEFORE DELETE ON chat_sessions
BEGIN
    DELETE FROM search_index WHERE rowid = (OLD.user_id << 39) + (1 << 38) + OLD.id;
    DELETE FROM search_index WHERE rowid IN
        (SELECT (OLD.user_id << 39) + id FROM messages WHERE session_id = OLD.id);
END;
