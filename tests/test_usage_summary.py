"""GET /api/usage/summary: everyone's usage by user, model or day, as JSON or CSV (admin)."""

from __future__ import annotations

import csv
import io

from .fake_upstream import Reply

PATH = "/api/usage/summary"


async def _rows(chat, model_name: str, user_id: int, day: str, prompt: int, completion: int,
                cost: int | None) -> None:
    """Usage rows written as rounds would (the summary reads the table, whoever wrote it)."""
    await chat.api.execute(
        "INSERT INTO usage_metrics (user_id, session_id, model, status, prompt_tokens,"
        " completion_tokens, total_tokens, cost_nanos, created_at)"
        " VALUES (?, NULL, ?, 'complete', ?, ?, ?, ?, ?)",
        (user_id, model_name, prompt, completion, prompt + completion, cost,
         f"{day}T12:00:00.000Z"))


async def _world(chat) -> tuple[int, int]:
    admin = chat.api.users["admin"]
    await _rows(chat, "gpt-a", chat.user.id, "2026-03-01", 10, 5, 1_500_000)
    await _rows(chat, "gpt-a", chat.user.id, "2026-03-02", 20, 10, None)
    await _rows(chat, "=cmd|' /C calc'!A0", admin.id, "2026-03-02", 1, 2, 250)
    await _rows(chat, "gpt-a", admin.id, "2026-04-01", 100, 100, 7)  # outside the range
    return chat.user.id, admin.id


async def test_grouped_by_user_model_and_day(chat):
    alice, admin = await _world(chat)
    range_ = {"from": "2026-03-01", "to": "2026-03-31"}
    by_user = await chat.api.ok("GET", PATH, "admin", params=range_)
    assert by_user["groupBy"] == "user" and by_user["currency"] == "USD"
    assert by_user["from"] == "2026-03-01T00:00:00.000Z"
    assert by_user["rows"] == [
        {"userId": admin, "username": "admin", "rounds": 1, "prompt_tokens": 1,
         "completion_tokens": 2, "total_tokens": 3, "cost": 0.00000025},
        {"userId": alice, "username": "alice", "rounds": 2, "prompt_tokens": 30,
         "completion_tokens": 15, "total_tokens": 45, "cost": 0.0015}]
    by_model = await chat.api.ok("GET", PATH, "admin", params={**range_, "groupBy": "model"})
    assert [(r["model"], r["rounds"], r["cost"]) for r in by_model["rows"]] == [
        ("=cmd|' /C calc'!A0", 1, 0.00000025), ("gpt-a", 2, 0.0015)]
    by_day = await chat.api.ok("GET", PATH, "admin", params={**range_, "groupBy": "day"})
    assert [(r["date"], r["total_tokens"], r["cost"]) for r in by_day["rows"]] == [
        ("2026-03-01", 15, 0.0015), ("2026-03-02", 33, 0.00000025)]


async def test_csv_has_a_header_empty_unknown_costs_and_no_formulas(chat):
    await _world(chat)
    response = await chat.api.client.get(
        PATH, params={"from": "2026-03-02", "to": "2026-03-02", "groupBy": "model"},
        headers={**chat.api.users["admin"].headers, "Accept": "text/csv"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="usage-by-model.csv"' in response.headers["Content-Disposition"]
    text = await response.text()
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [
        ["model", "rounds", "prompt_tokens", "completion_tokens", "total_tokens", "cost"],
        ["'=cmd|' /C calc'!A0", "1", "1", "2", "3", "0.00000025"],
        ["gpt-a", "1", "20", "10", "30", ""]]


async def test_a_real_round_and_v1_request_are_both_counted(chat):
    chat.upstream.queue(Reply(tokens=["hi"], usage={"prompt_tokens": 4, "completion_tokens": 2,
                                                    "total_tokens": 6}))
    await chat.stream("hello")
    data = await chat.api.ok("GET", PATH, "admin", params={"groupBy": "model"})
    assert [(r["model"], r["rounds"], r["total_tokens"], r["cost"]) for r in data["rows"]] == [
        ("fake-model", 1, 6, None)]


async def test_only_admins_and_bad_input_is_named(chat):
    await chat.api.error("GET", PATH, None, 401)
    await chat.api.error("GET", PATH, chat.user, 403)
    await chat.api.error("GET", PATH, "admin", 400, "groupBy must be one of user, model, day",
                         params={"groupBy": "users"})
    await chat.api.error("GET", PATH, "admin", 400, "Invalid date range",
                         params={"from": "2026-03-02", "to": "2026-03-01"})
