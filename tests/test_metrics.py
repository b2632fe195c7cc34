"""GET /metrics (docs/operations.md §9): the exposition parses with Prometheus's own parser,
the counters move as requests and rounds happen, labels stay bounded, and only this machine
or the METRICS_TOKEN holder may read it. Also the health check's 503 when writes fail."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from aichat.http.appkeys import db_key
from aichat.metrics.catalog import MAX_PROVIDERS
from aichat.metrics.exposition import OTHER, Capped

from .fake_upstream import Reply
from .helpers import SSEStream

Samples = dict[tuple[str, frozenset], float]


async def scrape(api, headers: dict | None = None) -> Samples:
    async with api.client.get("/metrics", headers=headers) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await r.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for (n, labels) in samples if n == name}


async def test_a_round_moves_the_counters(chat):
    before = await scrape(chat.api)
    stream = await chat.stream()
    after = await scrape(chat.api)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    usage = [e for e in stream.events if e["type"] == "usage"][-1]["usage"]
    assert grew("aichat_http_requests_total", method="POST", route="/api/chat/stream",
                status="200") == 1
    assert grew("aichat_http_requests_total", method="GET", route="/metrics",
                status="200") == 1  # the first scrape
    assert grew("aichat_http_request_duration_seconds_count", route="/api/chat/stream") == 1
    assert grew("aichat_rounds_total", source="chat", outcome="complete", kind="") == 1
    assert grew("aichat_tokens_total", source="chat", direction="prompt") \
        == usage["prompt_tokens"]
    assert grew("aichat_tokens_total", source="chat", direction="completion") \
        == usage["completion_tokens"] > 0
    assert grew("aichat_upstream_first_token_seconds_count") == 1
    assert grew("aichat_db_write_seconds_count", backend="sqlite") >= 2  # question, reply
    assert value(after, "aichat_rounds_running", state="attached") == 0
    assert value(after, "aichat_rounds_running", state="detached") == 0
    assert value(after, "process_resident_memory_bytes") > 10_000_000
    assert value(after, "process_cpu_seconds_total") > 0
    assert value(after, "aichat_http_connections_open") >= 1


async def test_a_running_round_is_a_gauge_and_a_stop_counts_why(chat):
    chat.upstream.queue(Reply(tokens=["a ", "b ", "c"], stall_after=2))
    async with chat.open() as response:
        stream = SSEStream(response)
        await stream.until("content")
        during = await scrape(chat.api)
        await chat.api.ok("POST", "/api/chat/stop", chat.user,
                          json={"sessionId": chat.session_id})
        await stream.rest()
    after = await scrape(chat.api)
    assert value(during, "aichat_rounds_running", state="attached") == 1
    assert value(after, "aichat_rounds_running", state="attached") == 0
    assert value(after, "aichat_rounds_total", source="chat", outcome="stopped",
                 kind="stop") == 1


async def test_upstream_failures_retries_and_the_fallback_are_counted(chat):
    chat.upstream.queue(Reply(status=500), Reply(status=500), Reply(status=500))
    stream = await chat.stream()
    assert stream.events[-1]["type"] == "error"
    after = await scrape(chat.api)
    # The stream, its retry and the non-streamed fallback: three failed attempts.
    assert value(after, "aichat_upstream_errors_total", provider="127.0.0.1",
                 kind="status") == 3
    assert value(after, "aichat_upstream_retries_total", provider="127.0.0.1") == 1
    assert value(after, "aichat_upstream_fallbacks_total", provider="127.0.0.1") == 1
    assert value(after, "aichat_rounds_total", source="chat", outcome="error",
                 kind="status") == 1


async def test_failed_sign_ins_are_counted(api):
    for _ in range(2):
        await api.error("POST", "/api/auth/login", None, 401,
                        json={"username": "admin", "password": "wrong-pass-1"})
    assert value(await scrape(api), "aichat_login_failures_total") == 2


async def test_labels_stay_bounded(api):
    for i in range(200):  # every unknown path, and every id of one route, is one series
        await api.call("GET", f"/api/nothing-here-{i}", "admin")
        await api.call("GET", f"/api/models/{1000 + i}", "admin")
    samples = await scrape(api)
    routes = label_values(samples, "aichat_http_requests_total", "route")
    assert "unmatched" in routes and "/api/models/{id}" in routes
    assert not any("nothing-here" in r or r.endswith(("1000", "1199")) for r in routes)
    assert value(samples, "aichat_http_requests_total", method="GET", route="unmatched",
                 status="404") == 200
    # Provider hosts come from model URLs users type: a thousand become MAX_PROVIDERS + other.
    capped = Capped(MAX_PROVIDERS)
    seen = {capped(f"host-{i}.example") for i in range(1000)}
    assert len(seen) == MAX_PROVIDERS + 1 and OTHER in seen
    assert capped("host-3.example") == "host-3.example"


async def test_without_a_token_only_this_machine_reads_it(api):
    await scrape(api)  # the test client connects from 127.0.0.1, no JWT needed
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        await api.error("GET", "/metrics", None, 403, "this machine only",
                        headers={header: "203.0.113.9"})


async def test_with_a_token_it_is_required(start):
    token = "metrics-token-0123456789"
    api = await start(metrics_token=token)
    await api.error("GET", "/metrics", None, 401, "METRICS_TOKEN")
    await api.error("GET", "/metrics", None, 401, "METRICS_TOKEN",
                    headers={"Authorization": "Bearer not-the-token-000000"})
    samples = await scrape(api, {"Authorization": f"Bearer {token}",
                                 "X-Forwarded-For": "203.0.113.9"})
    assert value(samples, "aichat_http_requests_total", method="GET", route="/metrics",
                 status="401") == 2


async def test_metrics_off_is_404(start):
    api = await start(metrics_enabled=False)
    await api.error("GET", "/metrics", None, 404, "METRICS_ENABLED")


async def test_health_is_503_while_writes_fail_and_recovers(api):
    db = api.client.app[db_key]
    await db.conn.execute("PRAGMA query_only = ON")  # as a read-only file or folder would
    status, _ = await api.call("POST", "/api/auth/register",
                               json={"username": "carol", "password": "password1"})
    assert status == 500
    status, body = await api.call("GET", "/api/health")
    assert status == 503 and "database not writable" in body["data"]["error"]
    await db.conn.execute("PRAGMA query_only = OFF")
    await api.register("dave")
    status, body = await api.call("GET", "/api/health")
    assert status == 200 and body["data"]["status"] == "healthy"
