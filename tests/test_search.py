"""GET /api/search (docs/api.md §11): the caller's own messages and session titles, found by
substrings of 3+ characters in English and Chinese, any case, ranked, paged, each hit with a
safe snippet; the index follows every write (a streamed reply once it ends, regenerate, clear,
rename, delete a session or a user) and covers the rows of a database from before it."""

from __future__ import annotations

from typing import Any

import pytest

from aichat.store import search as store

from .fake_upstream import Reply
from .helpers import Api, Chat, SSEStream, User

SEARCH = "/api/search"


async def say(chat: Chat, content: str, reply: str = "Noted.", *,
              session_id: int | None = None, user: User | None = None) -> None:
    """One chat round: `content` from the user, `reply` from the model."""
    chat.upstream.queue(Reply(tokens=[reply]))
    stream = await chat.stream(content, session_id=session_id, user=user)
    assert stream.types()[-1] == "complete", stream.events


async def find(api: Api, user: User | str | None, q: str, **params: str) -> dict[str, Any]:
    return await api.ok("GET", SEARCH, user, params={"q": q, **params})


async def snippets(api: Api, user: User | str, q: str) -> list[str]:
    return [hit["snippet"] for hit in (await find(api, user, q))["hits"]]


async def new_session(chat: Chat, title: str, user: User | None = None) -> int:
    session = await chat.api.ok("POST", "/api/sessions", user or chat.user, json={
        "modelConfigId": chat.model["id"], "title": title})
    return session["id"]


async def index_matches_the_tables(api: Api) -> None:
    """SQLite: the index holds exactly the titles and non-empty messages there are."""
    if api.db.dialect != "sqlite":
        return
    indexed = {row[0] for row in await api.rows("SELECT rowid FROM search_index")}
    titles = await api.rows("SELECT (user_id << 39) + (1 << 38) + id FROM chat_sessions")
    messages = await api.rows(
        "SELECT (s.user_id << 39) + m.id FROM messages m"
        " JOIN chat_sessions s ON s.id = m.session_id WHERE m.content <> ''")
    assert indexed == {row[0] for row in titles + messages}


# --- what is found, and how it is shown ---

async def test_hits_are_ranked_with_their_session_role_time_and_snippet(chat):
    api, alice = chat.api, chat.user
    await say(chat, "python guide", "Sure.")
    await say(chat, "A long message that mentions python only once, among a great many other "
                    "words about cooking, gardening, travel plans and the weather this week.")
    await say(chat, "python python python tips", "Here are the python tips.")
    titled = await new_session(chat, "Python notes")
    data = await find(api, alice, "PYTHON")
    hits = data["hits"]
    assert [h["snippet"].count("<mark>") for h in hits] == [1, 3, 1, 1, 1]
    assert hits[0] == {"sessionId": titled, "sessionTitle": "Python notes", "messageId": None,
                       "role": None, "createdAt": hits[0]["createdAt"],
                       "snippet": "<mark>Python</mark> notes"}
    assert hits[1]["snippet"] == "<mark>python</mark> <mark>python</mark> <mark>python</mark> tips"
    # Same count: the shorter text first; then the reply (shorter than the long message).
    assert hits[2]["snippet"] == "<mark>python</mark> guide"
    assert hits[3]["snippet"] == "Here are the <mark>python</mark> tips."
    assert hits[4]["snippet"].startswith("A long message that mentions <mark>python</mark>")
    listed = {m["id"]: m for m in await chat.messages()}
    for hit in hits[1:]:
        message = listed[hit["messageId"]]
        assert (hit["sessionId"], hit["sessionTitle"]) == (chat.session_id, "Test")
        assert (hit["role"], hit["createdAt"]) == (message["role"], message["createdAt"])
    assert data["pagination"] == {"page": 1, "limit": 20, "total": 5, "totalPages": 1}


async def test_every_word_must_appear_and_short_words_are_ignored(chat):
    api, alice = chat.api, chat.user
    await say(chat, "the database server is down", "Restart the server.")
    await say(chat, "my database is slow", "Add an index.")
    assert len((await find(api, alice, "server"))["hits"]) == 2
    assert await snippets(api, alice, "data  SERVER") == [
        "the <mark>data</mark>base <mark>server</mark> is down"]
    assert await snippets(api, alice, "is my slow") == ["my database is <mark>slow</mark>"]
    assert (await find(api, alice, "nowhere"))["hits"] == []


async def test_chinese_is_found_by_any_three_characters(chat):
    api, alice = chat.api, chat.user
    await say(chat, "你好世界，今天天气很好", "Hello, world!")
    await say(chat, "我们讨论一下数据库的设计", "好的，数据库设计如下。")
    assert await snippets(api, alice, "你好世") == ["<mark>你好世</mark>界，今天天气很好"]
    assert await snippets(api, alice, "好世界") == ["你<mark>好世界</mark>，今天天气很好"]
    assert await snippets(api, alice, "数据库") == ["好的，<mark>数据库</mark>设计如下。",
                                                  "我们讨论一下<mark>数据库</mark>的设计"]
    assert await snippets(api, alice, "数据库 设计如") == [
        "好的，<mark>数据库</mark><mark>设计如</mark>下。"]
    # Mixed with English in one query, and English in a Chinese reply.
    assert await snippets(api, alice, "hello 世界 world") == [
        "<mark>Hello</mark>, <mark>world</mark>!"]
    await api.error("GET", SEARCH, alice, 400, "q must be 3 to 200 characters",
                    params={"q": "世界"})


async def test_snippets_are_html_escaped_and_cut_around_the_match(chat):
    api, alice = chat.api, chat.user
    await say(chat, '<b>Tom & Jerry</b> say "hi" about CATS\nand <script>x</script>')
    assert await snippets(api, alice, "cats") == [
        "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt; say &quot;hi&quot; about <mark>CATS</mark> and "
        "&lt;script&gt;x&lt;/script&gt;"]
    long = " ".join(f"word{i}" for i in range(100)) + " needle " + " ".join(
        f"tail{i}" for i in range(100))
    await say(chat, long)
    [cut] = await snippets(api, alice, "needle")
    assert cut.startswith("…word9") and cut.endswith("…") and "<mark>needle</mark>" in cut
    assert len(cut) <= 200 and "  " not in cut
    # A match's own text is escaped too.
    await say(chat, "AT&T's network")
    assert await snippets(api, alice, "t&t") == ["A<mark>T&amp;T</mark>&#x27;s network"]


# --- whose hits ---

async def test_only_the_callers_own_hits(chat):
    api, alice = chat.api, chat.user
    await say(chat, "alice keeps a secret recipe")
    bob = await api.register("bob")
    model = await api.ok("POST", "/api/models", bob, json={
        "name": "bob-model", "apiUrl": chat.upstream.url, "apiKey": "sk-bob-SECRET-0002"})
    session = await api.ok("POST", "/api/sessions", bob,
                           json={"modelConfigId": model["id"], "title": "Bob's recipe"})
    chat.upstream.queue(Reply(tokens=["Bob's reply"]))
    await chat.stream("bob has a recipe too", session_id=session["id"], user=bob)
    assert await snippets(api, alice, "recipe") == ["alice keeps a secret <mark>recipe</mark>"]
    assert await snippets(api, bob, "recipe") == ["Bob&#x27;s <mark>recipe</mark>",
                                                  "bob has a <mark>recipe</mark> too"]
    assert (await find(api, bob, "secret"))["hits"] == []
    assert (await find(api, "admin", "recipe"))["hits"] == []
    await api.error("GET", SEARCH, None, 401, params={"q": "recipe"})


# --- the index follows the writes ---

async def test_a_streamed_reply_is_found_once_it_ends(chat):
    api, alice = chat.api, chat.user
    tokens = ["Zebra", " crossing", " ahead"] + [" ."] * 30
    chat.upstream.queue(Reply(tokens=tokens, delay=0.01))
    async with chat.open("what is ahead?") as response:
        stream = SSEStream(response)
        await stream.until("content")
        listed = await chat.messages()
        assert listed[1]["status"] == "streaming"
        assert (await find(api, alice, "zebra"))["hits"] == []  # empty until it ends
        await stream.rest()
    [hit] = (await find(api, alice, "zebra"))["hits"]
    assert (hit["role"], hit["messageId"]) == ("assistant", listed[1]["id"])
    await index_matches_the_tables(api)


async def test_regenerate_clear_rename_and_delete_update_the_index(chat):
    api, alice = chat.api, chat.user
    await say(chat, "Question about giraffes", "Old answer on giraffes")
    old = await chat.messages()
    chat.upstream.queue(Reply(tokens=["New answer on okapis"]))
    async with chat.open(path="/api/chat/regenerate",
                         body={"sessionId": chat.session_id, "messageId": old[1]["id"]}) as r:
        await SSEStream(r).rest()
    assert await snippets(api, alice, "answer") == ["New <mark>answer</mark> on okapis"]
    assert await snippets(api, alice, "giraffes") == ["Question about <mark>giraffes</mark>"]

    await api.ok("PUT", f"/api/sessions/{chat.session_id}", alice, json={"title": "Zoo trip"})
    assert await snippets(api, alice, "zoo") == ["<mark>Zoo</mark> trip"]
    assert (await find(api, alice, "Test"))["hits"] == []
    await index_matches_the_tables(api)

    await api.ok("DELETE", f"/api/sessions/{chat.session_id}/messages", alice)
    assert (await find(api, alice, "okapis"))["hits"] == []
    assert (await find(api, alice, "giraffes"))["hits"] == []
    assert len((await find(api, alice, "zoo"))["hits"]) == 1  # the session stays
    await index_matches_the_tables(api)

    await say(chat, "Talk about lemurs")
    other = await new_session(chat, "Lemurs too")
    await say(chat, "More on lemurs", session_id=other)
    await api.ok("DELETE", f"/api/sessions/{chat.session_id}", alice)
    assert await snippets(api, alice, "lemurs") == ["<mark>Lemurs</mark> too",
                                                    "More on <mark>lemurs</mark>"]
    assert (await find(api, alice, "zoo"))["hits"] == []
    await index_matches_the_tables(api)

    await api.ok("DELETE", f"/api/users/{alice.id}", "admin")
    await index_matches_the_tables(api)


# --- paging and input ---

async def test_paging_past_the_ranked_window_keeps_every_hit_once(chat, monkeypatch):
    api, alice = chat.api, chat.user
    for i in range(4):
        await say(chat, f"note {i}: " + "kiwi " * (i + 1), f"reply {i} with kiwi")
    assert (await find(api, alice, "kiwi"))["pagination"]["total"] == 8
    ranked = [h["messageId"] for h in (await find(api, alice, "kiwi"))["hits"]]
    monkeypatch.setattr(store, "RANK_WINDOW", 3)
    pages = [await find(api, alice, "kiwi", page=str(p), limit="3") for p in (1, 2, 3, 4)]
    assert [p["pagination"] for p in pages] == [
        {"page": p, "limit": 3, "total": 8, "totalPages": 3} for p in (1, 2, 3, 4)]
    seen = [h["messageId"] for p in pages for h in p["hits"]]
    assert sorted(seen) == sorted(ranked) and len(pages[3]["hits"]) == 0
    # The three newest, ranked; then the rest newest first.
    newest = sorted(ranked, reverse=True)
    assert sorted(seen[:3]) == sorted(newest[:3]) and seen[3:] == newest[3:]
    across = await find(api, alice, "kiwi", page="2", limit="2")  # rows 3-4: both sides
    assert [h["messageId"] for h in across["hits"]] == seen[2:4]


@pytest.mark.parametrize("params, field", [
    ({}, "q"), ({"q": ""}, "q"), ({"q": "ab"}, "q"), ({"q": "ab cd e"}, "q"),
    ({"q": "x" * 201}, "q"), ({"q": "\x00\x01\x02"}, "q"),
    ({"q": "kiwi", "page": "0"}, "page"), ({"q": "kiwi", "page": "x"}, "page"),
    ({"q": "kiwi", "limit": "0"}, "limit"), ({"q": "kiwi", "limit": "101"}, "limit"),
    ({"q": "kiwi", "limit": "-1"}, "limit")])
async def test_bad_input_names_the_field(api, params, field):
    await api.register("bob")
    error = await api.error("GET", SEARCH, "bob", 400, field, params=params)
    assert error.startswith(field)


async def test_the_longest_query_and_fts_syntax_are_plain_text(chat):
    api, alice = chat.api, chat.user
    await say(chat, 'a "quoted" OR NOT* (thing) col:umn')
    assert await snippets(api, alice, '"quoted" OR') == [
        "a <mark>&quot;quoted&quot;</mark> OR NOT* (thing) col:umn"]
    assert await snippets(api, alice, "NOT* col:umn") == [
        "a &quot;quoted&quot; OR <mark>NOT*</mark> (thing) <mark>col:umn</mark>"]
    assert (await find(api, alice, "%%%"))["hits"] == []
    assert (await find(api, alice, "q" * 200))["hits"] == []


# --- a database from before search ---

@pytest.mark.sqlite_only  # an old SQLite file, upgraded in place
async def test_rows_from_before_the_index_are_found(tmp_path, start, upstream):
    from .test_upgrade import ENCRYPTION_KEY, database_at, fill

    path = await database_at(tmp_path, 13)
    fill(path, upstream.url)
    api = await start(app_mode="multi", database_path=str(path), encryption_key=ENCRYPTION_KEY)
    alice, bob = await api.login("alice", "password1"), await api.login("bob", "password1")
    assert await snippets(api, alice, "alice") == ["<mark>Alice</mark>&#x27;s chat",
                                                   "Hi, <mark>Alice</mark>."]
    assert await snippets(api, bob, "question") == ["Long <mark>question</mark>"]
    assert await snippets(api, bob, "partial") == ["A <mark>partial</mark> ans"]
    assert (await find(api, bob, "alice"))["hits"] == []
    await index_matches_the_tables(api)


@pytest.mark.sqlite_only  # PostgreSQL folds case as the database's locale does (C: ASCII)
async def test_case_is_folded_beyond_ascii(chat):
    api, alice = chat.api, chat.user
    await say(chat, "Ärger im Büro, ΣΟΦΙΑ")
    assert await snippets(api, alice, "ärger σοφια") == [
        "<mark>Ärger</mark> im Büro, <mark>ΣΟΦΙΑ</mark>"]


@pytest.mark.sqlite_only  # sql/014's rowid layout holds user ids below 2^24
async def test_a_user_id_past_the_index_layout_finds_nothing_and_breaks_nothing(chat):
    api, alice = chat.api, chat.user
    hashed = await api.db.value("SELECT hashed_password FROM users WHERE id = ?", (alice.id,))
    far = 1 << 24
    await api.execute("INSERT INTO users (id, username, hashed_password) VALUES (?, ?, ?)",
                      (far, "far", hashed))
    await api.execute("INSERT INTO chat_sessions (id, user_id, model_config_id, title)"
                      " VALUES (?, ?, ?, ?)", (far, far, chat.model["id"], "far kiwi"))
    await api.execute("INSERT INTO messages (session_id, role, content) VALUES (?, 'user', ?)",
                      (far, "kiwi from far away"))
    await say(chat, "kiwi at home")
    far_user = await api.login("far", "password1")
    assert (await find(api, far_user, "kiwi"))["hits"] == []
    assert await snippets(api, alice, "kiwi") == ["<mark>kiwi</mark> at home"]
    await api.ok("DELETE", f"/api/sessions/{far}", far_user)
    assert await snippets(api, alice, "kiwi") == ["<mark>kiwi</mark> at home"]
