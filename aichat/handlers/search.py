"""GET /api/search: the caller's own messages and session titles, ranked (docs/api.md §11).

Each hit's `snippet` is plain text made safe for HTML: up to SNIPPET_CHARS characters around
the first match, whitespace runs as one space, `…` where the text was cut, everything
HTML-escaped except the `<mark>` and `</mark>` around each occurrence of a query word.
"""

from __future__ import annotations

import html
import re
from typing import Any

from aiohttp import web

from aichat.http.appkeys import db_key, user_key
from aichat.http.errors import ApiError, ok
from aichat.http.validate import Paging, pagination
from aichat.store import search

routes = web.RouteTableDef()

SEARCH_PAGE = Paging(default_limit=20, max_limit=100)
Q_RULE = (f"q must be {search.MIN_WORD} to {search.MAX_QUERY} characters with a word of at "
          f"least {search.MIN_WORD}")
SNIPPET_CHARS = 160
_BEFORE = 40  # characters kept before the first match
_SPACES = re.compile(r"\s+")


def _query(request: web.Request) -> list[str]:
    q = request.query.get("q", "")
    terms = search.words(q) if len(q) <= search.MAX_QUERY else []
    if not terms:
        raise ApiError(400, Q_RULE)
    return terms


def _safe(text: str) -> str:
    return html.escape(_SPACES.sub(" ", text))


def matcher(terms: list[str]) -> re.Pattern[str]:
    """Any of the terms, ignoring case; the longest first where one holds another."""
    return re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)),
                      re.IGNORECASE)


def snippet(text: str, pattern: re.Pattern[str]) -> str:
    """`text` around its first match, HTML-escaped, each match in <mark>."""
    first = pattern.search(text)
    start = 0
    if first is not None and first.start() > _BEFORE:
        start = first.start() - _BEFORE
        space = _SPACES.search(text, start, first.start())  # begin at a word, if any
        start = space.end() if space else start
    end = min(len(text), start + SNIPPET_CHARS)
    pieces: list[str] = []
    at = start
    for match in pattern.finditer(text, start):
        if match.start() >= end:
            break
        end = max(end, match.end())
        pieces += [_safe(text[at:match.start()]), f"<mark>{html.escape(match.group())}</mark>"]
        at = match.end()
    if end < len(text):  # end after a word, if any
        last_space = max(text.rfind(c, at, end) for c in " \n\t")
        end = last_space if last_space > at else end
    pieces.append(_safe(text[at:end]))
    shown = "".join(pieces).strip()
    return ("…" if start > 0 else "") + shown + ("…" if end < len(text) else "")


def _hit(row: dict[str, Any], pattern: re.Pattern[str]) -> dict[str, Any]:
    return {"sessionId": row["sessionId"], "sessionTitle": row["sessionTitle"],
            "messageId": None if row["is_title"] else row["id"], "role": row["role"],
            "createdAt": row["createdAt"], "snippet": snippet(row["text"], pattern)}


@routes.get("/api/search")
async def search_messages(request: web.Request) -> web.Response:
    terms = _query(request)
    page, limit = SEARCH_PAGE.read(request)
    rows, total = await search.search(request.app[db_key], request[user_key].id, terms, page,
                                      limit)
    pattern = matcher(terms)
    return ok({"hits": [_hit(row, pattern) for row in rows],
               "pagination": pagination(page, limit, total)})
