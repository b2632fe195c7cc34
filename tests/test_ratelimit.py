"""Sign-in failure limits: the counters (leaky buckets, bounded memory, /64 grouping) and which
failures count over HTTP."""

from __future__ import annotations

import pytest

from aichat.http.appkeys import limiter_key
from aichat.http.errors import ApiError
from aichat.security.ratelimit import MAX_DELAY_S, Buckets, FailureLimiter, address_key

from .helpers import assert_error


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refuses_at_its_limit_and_drains_one_attempt_per_interval():
    clock = Clock()
    buckets = Buckets(limit=3, window_s=60, max_keys=10, clock=clock)
    for _ in range(2):
        buckets.add("a")
    assert buckets.wait_s("a") == 0
    buckets.add("a")
    assert buckets.wait_s("a") == pytest.approx(20)  # 3 per minute drain: one every 20 s
    clock.now += 20
    assert buckets.wait_s("a") == 0
    assert buckets.wait_s("b") == 0


def test_a_full_table_evicts_drained_then_below_limit_keys_never_one_at_its_limit():
    clock = Clock()
    buckets = Buckets(limit=3, window_s=60, max_keys=3, clock=clock)
    for _ in range(3):
        buckets.add("victim")  # at its limit
    buckets.add("spray0")
    buckets.add("spray1")
    for i in range(2, 200):  # a flood of new keys, each with one failure
        clock.now += 0.01
        buckets.add(f"spray{i}")
        assert len(buckets) <= 3
    assert buckets.wait_s("victim") > 0


def test_when_every_key_is_at_its_limit_newcomers_go_uncounted():
    clock = Clock()
    buckets = Buckets(limit=1, window_s=60, max_keys=2, clock=clock)
    buckets.add("a")
    buckets.add("b")
    buckets.add("c")
    assert len(buckets) == 2
    assert buckets.wait_s("a") > 0 and buckets.wait_s("b") > 0 and buckets.wait_s("c") == 0


def test_drained_keys_are_swept_so_memory_returns():
    clock = Clock()
    buckets = Buckets(limit=2, window_s=10, max_keys=1000, clock=clock)
    for i in range(500):
        buckets.add(f"k{i}")
    clock.now += 120  # all drained, and the sweep interval has passed
    buckets.add("new")
    assert len(buckets) == 1


def test_ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4():
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:203.0.113.5") == "203.0.113.5"
    assert address_key("x" * 10_000) == "x" * 64


def test_a_username_under_attack_slows_down_but_is_never_refused_elsewhere():
    clock = Clock()
    guard = FailureLimiter(address_limit=100, pair_limit=3, clock=clock)
    for _ in range(3):
        guard.failed("203.0.113.1", "admin1")
    with pytest.raises(ApiError) as refused:
        guard.refuse_if_limited("203.0.113.1", "admin1")
    assert refused.value.status == 429
    guard.refuse_if_limited("198.51.100.7", "admin1")  # the owner, elsewhere: let in
    assert 0 < guard.delay_s("admin1") <= MAX_DELAY_S
    for _ in range(50):
        guard.failed("198.51.100.8", "admin1")
    assert guard.delay_s("admin1") == MAX_DELAY_S
    assert guard.delay_s("someone_else") == 0


# --- over HTTP: which failures count, and who is refused ---

BAD = {"username": "bob", "password": "wrongpass1"}
HERE = {"X-Forwarded-For": "203.0.113.9"}
ELSEWHERE = {"X-Forwarded-For": "198.51.100.7"}


async def test_wrong_passwords_lock_that_account_at_that_address_only(start):
    api = await start(app_mode="multi", login_account_limit=3)
    await api.register("bob", "password1")
    for _ in range(3):
        await api.error("POST", "/api/auth/login", None, 401, json=BAD, headers=HERE)
    async with api.client.post("/api/auth/login", headers=HERE,
                               json={"username": "bob", "password": "password1"}) as r:
        assert_error(r.status, await r.json(), 429, "Too many failed attempts")
        assert 1 <= int(r.headers["Retry-After"]) <= 900
    # The owner, from elsewhere, still gets in: an attacker cannot lock an account out.
    await api.ok("POST", "/api/auth/login", json={"username": "bob", "password": "password1"},
                 headers=ELSEWHERE)


async def test_credential_failures_from_one_address_block_that_address(start):
    api = await start(app_mode="multi", login_address_limit=4)
    await api.register("admin", "adminpass1")
    for i in range(4):
        await api.error("POST", "/api/auth/login", None, 401, headers=HERE,
                        json={"username": f"nobody{i}", "password": "password1"})
    await api.error("POST", "/api/auth/login", None, 429, headers=HERE,
                    json={"username": "admin", "password": "adminpass1"})
    await api.error("POST", "/api/auth/register", None, 429, headers=HERE,
                    json={"username": "newbie", "password": "password1"})
    await api.ok("POST", "/api/auth/login", headers=ELSEWHERE,
                 json={"username": "admin", "password": "adminpass1"})


async def test_malformed_requests_count_nothing(start):
    """A front end's validation mistakes must not lock an office behind one NAT address out."""
    api = await start(app_mode="multi", login_address_limit=2, login_account_limit=2)
    await api.register("bob", "password1")
    for _ in range(5):
        await api.error("POST", "/api/auth/login", None, 400, "Invalid JSON body",
                        headers=HERE, data=b"{not json")
        await api.error("POST", "/api/auth/register", None, 400, headers=HERE,
                        json={"username": "x", "password": "password1"})
        await api.error("POST", "/api/auth/register", None, 400, headers=HERE,
                        json={"username": "carol", "password": "short"})
    await api.ok("POST", "/api/auth/login", headers=HERE,
                 json={"username": "bob", "password": "password1"})


async def test_a_taken_username_counts_as_a_failure(start):
    api = await start(app_mode="multi", login_account_limit=2)
    await api.register("taken")
    for _ in range(2):
        await api.error("POST", "/api/auth/register", None, 409, headers=HERE,
                        json={"username": "taken", "password": "password1"})
    await api.error("POST", "/api/auth/register", None, 429, headers=HERE,
                    json={"username": "taken", "password": "password1"})


async def test_password_change_is_limited_too(start):
    api = await start(app_mode="multi", login_account_limit=3)
    bob = await api.register("bob", "password1")
    body = {"currentPassword": "wrongpass1", "newPassword": "password2"}
    for _ in range(3):
        await api.error("PUT", "/api/auth/password", bob, 400, "Current password is incorrect",
                        json=body, headers=HERE)
    await api.error("PUT", "/api/auth/password", bob, 429, "Too many failed attempts",
                    json={**body, "currentPassword": "password1"}, headers=HERE)


async def test_huge_or_invalid_usernames_are_never_kept(start):
    api = await start(app_mode="multi")
    limiter = api.client.app[limiter_key]
    for i in range(20):
        await api.error("POST", "/api/auth/login", None, 401, headers=HERE,
                        json={"username": f"{i}" + "x" * 100_000, "password": "password1"})
    assert len(limiter.pairs) == 0 and len(limiter.names) == 0
    assert len(limiter.addresses) == 1


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(start):
    api = await start(app_mode="multi", trusted_proxies="10.0.0.0/8", login_address_limit=3)
    await api.register("admin", "adminpass1")
    for i in range(3):  # each claims another address, but the peer (127.0.0.1) is not trusted
        await api.error("POST", "/api/auth/login", None, 401,
                        headers={"X-Forwarded-For": f"203.0.113.{i}"},
                        json={"username": f"nobody{i}", "password": "password1"})
    await api.error("POST", "/api/auth/login", None, 429,
                    headers={"X-Forwarded-For": "203.0.113.99"},
                    json={"username": "admin", "password": "adminpass1"})
