"""Search over a user's own messages and session titles (docs/api.md §11).

A query is its words (runs of characters between spaces and control characters); each word of
at least MIN_WORD characters must appear in a hit, anywhere, ignoring case (a substring: 世界
finds 你好世界, "data" finds "database"); shorter words are ignored. SQLite finds the hits with
its FTS5 trigram index (sql/014_search.sql), one rowid range per user; PostgreSQL with pg_trgm
GIN indexes and ILIKE (sql/postgres/008_search.sql). Both then rank them the same way, here.

The rank is BM25's term part: for each word, its count in the text, saturating (k1) and
normalised by the text's length (b, against AVERAGE_CHARS), summed; titles count TITLE_WEIGHT
times. BM25's other part, the words' rarity (IDF), is left out: FTS5's bm25() counts each word
over the whole index, every user's messages, on every query, which alone took 25-50 ms per
common word on a million messages (bench/SEARCH.md); and every hit holds every word anyway.
Ties, and everything past the ranked window, go newest first: titles, then messages by id.

Only the newest RANK_WINDOW hits are ranked (reading a hit's text costs microseconds, and a
heavy user's common word has tens of thousands): past them hits follow newest first. A user
with fewer hits, nearly every search, gets them all ranked. `total` is exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aichat.store.base import Database, Reader

MIN_WORD = 3  # a trigram index cannot look up less
MAX_QUERY = 200
RANK_WINDOW = 500
TITLE_WEIGHT = 2.0
K1, B, AVERAGE_CHARS = 1.2, 0.75, 300
# What separates words: Python's and JSON Schema's \s (which adds U+FEFF) and the control
# characters, so the OpenAPI pattern means the same (aichat/http/openapi_search.py).
SEPARATOR = r"\s\x00-\x1f\x7f-\x9f\ufeff"
_SEPARATORS = re.compile(f"[{SEPARATOR}]+")

# sql/014_search.sql's rowid layout: user_id * 2^39 + kind * 2^38 + id.
_USER_SHIFT, _KIND_SHIFT = 39, 38
_USERS = 1 << 24
_ID_MASK = (1 << _KIND_SHIFT) - 1


def words(query: str) -> list[str]:
    """The query's words of at least MIN_WORD characters, each once (ignoring case)."""
    found: dict[str, str] = {}
    for word in _SEPARATORS.split(query):
        if len(word) >= MIN_WORD:
            found.setdefault(word.casefold(), word)
    return list(found.values())


def _like(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class _Source:
    """The caller's hits, newest first: `sql` as (is_title, id, text) rows, `keys_sql` as
    (is_title, id), `count_sql` their number; all three take `params`."""

    sql: str
    keys_sql: str
    count_sql: str
    params: list[Any]


def _sqlite(user_id: int, terms: list[str]) -> _Source:
    where = "search_index MATCH ? AND search_index.rowid BETWEEN ? AND ?"
    keys = (f"SELECT (search_index.rowid >> {_KIND_SHIFT}) & 1 AS is_title,"
            f" search_index.rowid & {_ID_MASK} AS id")
    low = user_id << _USER_SHIFT
    phrases = " AND ".join('"' + t.replace('"', '""') + '"' for t in terms)  # literal text
    # The text from FTS5's own copy (its shadow table search_index_content: id, c0), read by
    # rowid: half the cost of FTS5 handing out the `text` column row by row.
    return _Source(
        f"{keys}, c.c0 AS text FROM search_index"
        " JOIN search_index_content c ON c.id = search_index.rowid"
        f" WHERE {where} ORDER BY search_index.rowid DESC",
        f"{keys} FROM search_index WHERE {where} ORDER BY search_index.rowid DESC",
        f"SELECT COUNT(*) FROM search_index WHERE {where}",
        [phrases, low, low + (1 << _USER_SHIFT) - 1])


def _postgres(user_id: int, terms: list[str]) -> _Source:
    def matching(column: str) -> str:
        return " AND ".join(f"{column} ILIKE ?" for _ in terms)

    patterns = [_like(t) for t in terms]
    hits = (f"SELECT 1 AS is_title, s.id, s.title AS text FROM chat_sessions s"
            f" WHERE s.user_id = ? AND {matching('s.title')}"
            " UNION ALL"
            " SELECT 0, m.id, m.content FROM messages m"
            " JOIN chat_sessions s ON s.id = m.session_id"
            f" WHERE s.user_id = ? AND {matching('m.content')}")
    newest = f"FROM ({hits}) h ORDER BY is_title DESC, id DESC"
    return _Source(f"SELECT * {newest}", f"SELECT is_title, id {newest}",
                   f"SELECT COUNT(*) FROM ({hits}) h", [user_id, *patterns, user_id, *patterns])


def _ranked(source: _Source, terms: list[str]) -> str:
    """The window's hits, best first, each with `found`, the number in the window. Takes
    `source.params`, the window, each word with its length, limit and offset."""
    counts = ", ".join(
        f"(length(text) - length(replace(lower(text), lower(CAST(? AS TEXT)), ''))) / ? AS c{i}"
        for i in range(len(terms)))
    # A hit holds every word, but lower() may fold less than the index did (non-ASCII
    # capitals on SQLite): count such a word once.
    parts = [f"(CASE WHEN c{i} < 1 THEN 1 ELSE c{i} END)" for i in range(len(terms))]
    norm = f"{K1} * ({1 - B} + {B} * n / {AVERAGE_CHARS}.0)"
    score = " + ".join(f"{tf} * {K1 + 1} / ({tf} + {norm})" for tf in parts)
    # MATERIALIZED: each text is read, and each count made, once per hit (inlined, SQLite
    # would repeat them for every mention in the score).
    return (f"WITH recent AS MATERIALIZED ({source.sql} LIMIT ?),"
            f" counted AS MATERIALIZED (SELECT is_title, id, length(text) AS n, {counts}"
            " FROM recent)"
            " SELECT is_title, id, (SELECT COUNT(*) FROM recent) AS found FROM counted"
            f" ORDER BY (CASE is_title WHEN 1 THEN {TITLE_WEIGHT} ELSE 1.0 END) * ({score}) DESC,"
            " is_title DESC, id DESC LIMIT ? OFFSET ?")


_TITLES = ('SELECT 1 AS is_title, s.id, s.id AS "sessionId", s.title AS "sessionTitle",'
           ' NULL AS role, s.title AS text, s.created_at AS "createdAt" FROM chat_sessions s'
           " WHERE s.user_id = ? AND s.id IN ({})")
# CROSS JOIN: SQLite reads the messages by id, then their sessions, rather than every
# message of the user's sessions (the order a heavy user's user_id index suggests to it).
_MESSAGES = ('SELECT 0 AS is_title, m.id, m.session_id AS "sessionId",'
             ' s.title AS "sessionTitle", m.role, m.content AS text, m.created_at AS "createdAt"'
             " FROM messages m CROSS JOIN chat_sessions s"
             " WHERE s.id = m.session_id AND s.user_id = ? AND m.id IN ({})")


async def _details(db: Reader, user_id: int,
                   hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The page's hits with their session, role, time and text, in the page's order; a row
    deleted since it was ranked is left out."""
    parts, params = [], []
    for is_title, sql in ((0, _MESSAGES), (1, _TITLES)):
        ids = [hit["id"] for hit in hits if hit["is_title"] == is_title]
        if ids:
            parts.append(sql.format(", ".join("?" * len(ids))))
            params += [user_id, *ids]
    if not parts:
        return []
    rows = await db.all(" UNION ALL ".join(parts), params)
    found = {(row["is_title"], row["id"]): row for row in rows}
    return [found[key] for hit in hits if (key := (hit["is_title"], hit["id"])) in found]


async def search(db: Database, user_id: int, terms: list[str], page: int,
                 limit: int) -> tuple[list[dict[str, Any]], int]:
    """One page of the user's hits for `terms` (from `words`), and how many there are. Each
    hit: is_title, id, sessionId, sessionTitle, role (None for a title), text, createdAt."""
    if db.dialect == "sqlite" and user_id >= _USERS:
        return [], 0  # past sql/014's rowid layout: nothing of theirs is indexed
    source = (_sqlite if db.dialect == "sqlite" else _postgres)(user_id, terms)
    offset = (page - 1) * limit
    hits: list[dict[str, Any]] = []
    total = None
    if offset < RANK_WINDOW:
        lengths = [value for t in terms for value in (t, len(t))]
        hits = await db.all(_ranked(source, terms), [
            *source.params, RANK_WINDOW, *lengths, min(limit, RANK_WINDOW - offset), offset])
        if hits and hits[0]["found"] < RANK_WINDOW:
            total = hits[0]["found"]  # the window holds every hit
        elif not hits and offset == 0:
            total = 0
    if offset + limit > RANK_WINDOW:
        start = max(offset, RANK_WINDOW)
        hits += await db.all(f"{source.keys_sql} LIMIT ? OFFSET ?",
                             [*source.params, offset + limit - start, start])
    if total is None:
        total = await db.value(source.count_sql, source.params)
    return await _details(db, user_id, hits), total
