"""The OpenAPI operations of search (handlers/search.py)."""

from __future__ import annotations

from aichat.handlers.search import SEARCH_PAGE, SNIPPET_CHARS
from aichat.http.openapi_ops import Operation, op, paged, paged_by, query
from aichat.http.schema import ID, STRING, enum, nullable, obj, ref
from aichat.store import search


def search_ops() -> list[Operation]:
    hit = obj({
        "sessionId": ID, "sessionTitle": STRING,
        "messageId": {**nullable(ID), "description": "null: the session's title matched."},
        "role": nullable(enum(("user", "assistant"))),
        "createdAt": {**ref("Timestamp"), "description": "The message's, or the session's "
                                                         "for a title."},
        "snippet": {**STRING, "description": (
            f"Up to about {SNIPPET_CHARS} characters around the first match, HTML-escaped, "
            "each occurrence of a query word in <mark>…</mark>, `…` where the text was cut.")}})
    q = {"type": "string", "minLength": search.MIN_WORD, "maxLength": search.MAX_QUERY,
         "pattern": f"[^{search.SEPARATOR}]{{{search.MIN_WORD}}}"}
    return [
        ("get", "/api/search", op(
            "search", "sessions", "Search the caller's messages and session titles",
            params=(query("q", q, f"Words separated by spaces; each of at least "
                                  f"{search.MIN_WORD} characters must appear (a substring, "
                                  "any case), shorter ones are ignored.", required=True),
                    *paged_by(SEARCH_PAGE)),
            data=paged("hits", hit),
            description="Best first (term frequency, normalised by length; titles weigh "
                        f"double) among the newest {search.RANK_WINDOW} hits, then newest "
                        "first. Empty messages and replies still streaming are not found.")),
    ]
