-- sql/014_search.sql for PostgreSQL: search (docs/api.md §11) with pg_trgm instead of FTS5.
--
-- GIN trigram indexes on the text itself find the rows whose content or title contains each
-- word (ILIKE '%word%'): the same substring semantics as SQLite's trigram tokenizer, in any
-- script, and nothing to keep in step (no triggers: a streamed reply is found once its UPDATE
-- sets the text; deleted rows leave the index with them). tsvector was not used: its parsers
-- split words on spaces and stem English, so Chinese would need a second index and the two
-- stores would find different things. The ranking is the store's own formula over the
-- matches (aichat/store/search.py), as on SQLite.
--
-- pg_trgm ships with PostgreSQL (Debian's postgresql-15 includes it) and is a trusted
-- extension (PostgreSQL 13+): the database's owner, or any role with CREATE on the database,
-- may create it. Where the migration role may not, a superuser runs
-- `CREATE EXTENSION pg_trgm;` in the database once, before aichat starts. pg_trgm takes its
-- trigrams from letters and digits as the database's LC_CTYPE defines them: under a UTF-8
-- locale (C.UTF-8, en_US.UTF-8, ...) Chinese is indexed; under the C locale a Chinese search
-- is still answered correctly but reads every one of the user's messages.

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX messages_content_trgm ON messages USING gin (content gin_trgm_ops);
CREATE INDEX chat_sessions_title_trgm ON chat_sessions USING gin (title gin_trgm_ops);
