"""The upstream URL policy: which addresses user-entered model URLs may reach."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver

from aichat.upstream import netpolicy
from aichat.upstream.netpolicy import (BlockedAddress, Guard, NetPolicy, guarded_socket,
                                       why_not_public)

from .helpers import SSEStream

REFUSED = [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("10.0.0.1", "private"),
    ("172.16.5.4", "private"), ("192.168.1.1", "private"), ("169.254.169.254", "link-local"),
    ("100.64.0.1", "not a public"), ("100.100.100.200", "not a public"),
    ("224.0.0.251", "multicast"), ("0.0.0.0", "unspecified"), ("192.0.2.1", "private"),
    ("198.18.0.1", "private"), ("240.0.0.1", "private"), ("255.255.255.255", "private"),
    ("168.63.129.16", "metadata"),
    ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"), ("fc00::1", "unique-local"), ("fd12:3456::1", "unique-local"),
    ("fd00:ec2::254", "metadata"), ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "link-local"), ("::127.0.0.1", "loopback"),
    ("64:ff9b::7f00:1", "loopback"), ("64:ff9b::a9fe:a9fe", "link-local"),
    ("2002:7f00:1::", "loopback"), ("2002:a00:1::", "private"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
    # Local-use NAT64 (RFC 8215) and SIIT translate into the operator's own IPv4 network, so
    # they are refused even when the embedded IPv4 address looks public.
    ("64:ff9b:1::808:808", "NAT64"), ("64:ff9b:1:ffff::a00:1", "NAT64"),
    ("::ffff:0:808:808", "SIIT"), ("::ffff:0:7f00:1", "SIIT"),
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
           "::ffff:8.8.8.8", "2002:808:808::", "64:ff9b::808:808"]


@pytest.mark.parametrize("address, kind", REFUSED)
def test_every_non_public_range_and_form_is_refused(address, kind):
    reason = why_not_public(address)
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address):
    assert why_not_public(address) is None


def test_policies_and_the_allowlist():
    assert NetPolicy("any").refusal("127.0.0.1") is None
    strict = NetPolicy("public_only")
    assert "loopback" in strict.refusal("127.0.0.1")
    assert strict.refusal("8.8.8.8") is None
    assert "metadata" in strict.refusal("8.8.8.8", "metadata.google.internal")
    lan = NetPolicy.from_settings("allowlist", "10.0.0.0/8, ollama.lan fd00::/8")
    assert lan.refusal("10.1.2.3") is None and lan.refusal("fd00::5") is None
    assert lan.refusal("8.8.8.8") is None  # public stays allowed
    assert "private" in lan.refusal("192.168.1.1")
    assert lan.refusal("192.168.1.1", "OLLAMA.LAN.") is None  # a listed host, any address
    assert lan.for_host("ollama.lan") is None and lan.for_host("other") is lan
    for bad in ("not a host!", "-", "a..b", "x" * 300, "ünicode.example"):
        with pytest.raises(ValueError):
            netpolicy.parse_allowlist(bad)


def test_the_socket_factory_refuses_before_connecting():
    info = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))
    guard = Guard(NetPolicy("public_only"))
    token = netpolicy.current.set(guard)
    try:
        with pytest.raises(BlockedAddress):
            guarded_socket(info)
        assert guard.refused == ["127.0.0.1 is a loopback address"]
        sock = guarded_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 80)))
        sock.close()
    finally:
        netpolicy.current.reset(token)
    guarded_socket(info).close()  # no guard set (a system model): anything goes


class ScriptedResolver(AbstractResolver):
    """DNS answers scripted per name: each lookup takes the next answer (the last repeats)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = {name: list(ips) for name, ips in answers.items()}
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        self.lookups.append(host)
        ips = self.answers.get(host)
        if not ips:
            raise OSError(f"no such host {host}")
        ip = ips.pop(0) if len(ips) > 1 else ips[0]
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [{"hostname": host, "host": ip, "port": port, "family": fam, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


async def multi_app(start, upstream, resolver=None, policy=None):
    """Multi-user mode with its default policy (public_only) unless told otherwise."""
    api = await start(app_mode="multi", upstream_url_policy=policy, resolver=resolver)
    await api.register("admin", "adminpass1")
    await api.register("alice")
    return api


def with_host(upstream_url: str, host: str) -> str:
    return upstream_url.replace("127.0.0.1", host)


@pytest.mark.parametrize("host, kind", [
    ("127.0.0.1", "loopback"), ("[::ffff:127.0.0.1]", "loopback"), ("[::1]", "loopback"),
    ("10.9.8.7", "private"), ("169.254.169.254", "link-local"), ("internal.test", "private"),
    ("metadata.google.internal", "metadata"),
])
async def test_saving_a_personal_model_to_a_refused_address_is_400(start, upstream, host,
                                                                   kind):
    resolver = ScriptedResolver({"internal.test": ["10.1.1.1"],
                                 "metadata.google.internal": ["169.254.169.254"]})
    api = await multi_app(start, upstream, resolver)
    error = await api.error("POST", "/api/models", "alice", 400, "apiUrl not allowed", json={
        "name": "m", "apiUrl": with_host(upstream.url, host), "apiKey": "k"})
    assert kind in error and "public_only" in error
    assert (await api.ok("GET", "/api/models", "alice"))["personal"] == []


async def test_a_public_name_saves_and_system_models_are_not_restricted(start, upstream):
    resolver = ScriptedResolver({"api.example.com": ["93.184.216.34"]})
    api = await multi_app(start, upstream, resolver)
    await api.ok("POST", "/api/models", "alice", json={
        "name": "m", "apiUrl": "https://api.example.com/v1/chat/completions", "apiKey": "k"})
    system = await api.ok("POST", "/api/models/system", "admin", json={
        "name": "local", "apiUrl": upstream.url, "apiKey": "k"})
    session = await api.ok("POST", "/api/sessions", "alice",
                           json={"modelConfigId": system["id"]})
    async with api.client.post("/api/chat/stream", headers=api.users["alice"].headers,
                               json={"sessionId": session["id"], "content": "hi"}) as r:
        reader = SSEStream(r)
        await reader.rest()
    assert reader.types()[-1] == "complete"


async def test_dns_rebinding_is_caught_where_the_connection_is_made(start, upstream):
    # Public when the model is saved, loopback when the round connects.
    resolver = ScriptedResolver({"rebind.test": ["93.184.216.34", "127.0.0.1"]})
    api = await multi_app(start, upstream, resolver)
    model = await api.ok("POST", "/api/models", "alice", json={
        "name": "m", "apiUrl": with_host(upstream.url, "rebind.test"), "apiKey": "k"})
    session = await api.ok("POST", "/api/sessions", "alice", json={"modelConfigId": model["id"]})
    async with api.client.post("/api/chat/stream", headers=api.users["alice"].headers,
                               json={"sessionId": session["id"], "content": "hi"}) as r:
        reader = SSEStream(r)
        await reader.rest()
    error = reader.events[-1]
    assert error["type"] == "error" and "127.0.0.1 is a loopback address" in error["error"]
    assert upstream.requests == []  # never reached, no retry, no fallback
    assert resolver.lookups.count("rebind.test") >= 2


async def test_the_policy_follows_the_admin_setting_at_run_time(start, upstream):
    api = await multi_app(start, upstream)
    body = {"name": "local", "apiUrl": upstream.url, "apiKey": "k"}
    await api.error("POST", "/api/models", "alice", 400, "loopback", json=body)
    await api.ok("PUT", "/api/settings/system", "admin", json={
        "upstream_url_policy": "allowlist", "upstream_allowlist": "127.0.0.0/8"})
    model = await api.ok("POST", "/api/models", "alice", json=body)
    session = await api.ok("POST", "/api/sessions", "alice", json={"modelConfigId": model["id"]})
    headers = api.users["alice"].headers
    async with api.client.post("/api/chat/stream", headers=headers,
                               json={"sessionId": session["id"], "content": "hi"}) as r:
        reader = SSEStream(r)
        await reader.rest()
    assert reader.types()[-1] == "complete"
    # Tightened again: the saved model's next round is refused with a clear error event.
    await api.ok("PUT", "/api/settings/system", "admin", json={"upstream_url_policy":
                                                               "public_only"})
    await upstream.server.close()  # drop its keep-alive connection: a new one must be made
    async with api.client.post("/api/chat/stream", headers=headers,
                               json={"sessionId": session["id"], "content": "again"}) as r:
        reader = SSEStream(r)
        await reader.rest()
    assert reader.types()[-1] == "error" and "loopback" in reader.events[-1]["error"]


async def test_redirects_are_not_followed(start, upstream):
    api = await multi_app(start, upstream, policy="any")
    model = await api.ok("POST", "/api/models", "alice", json={
        "name": "m", "apiUrl": upstream.url.replace("/chat/completions", "/redirect"),
        "apiKey": "k"})
    session = await api.ok("POST", "/api/sessions", "alice", json={"modelConfigId": model["id"]})
    async with api.client.post("/api/chat/stream", headers=api.users["alice"].headers,
                               json={"sessionId": session["id"], "content": "hi"}) as r:
        reader = SSEStream(r)
        await reader.rest()
    assert reader.types()[-1] == "error" and "302" in reader.events[-1]["error"]


@pytest.mark.parametrize("body, field", [
    ({"upstream_url_policy": "open"}, "upstream_url_policy"),
    ({"upstream_url_policy": 1}, "upstream_url_policy"),
    ({"upstream_allowlist": "10.0.0.0/8, not valid!"}, "upstream_allowlist"),
    ({"upstream_allowlist": 5}, "upstream_allowlist"),
])
async def test_policy_settings_are_validated(start, upstream, body, field):
    api = await multi_app(start, upstream)
    await api.error("PUT", "/api/settings/system", "admin", 400, field, json=body)
    data = await api.ok("GET", "/api/settings/system", "alice")
    assert data["upstream_url_policy"] == "public_only" and data["upstream_allowlist"] == ""


async def test_single_mode_defaults_to_any(start):
    api = await start(app_mode="single", upstream_url_policy=None)
    owner = await api.register("owner", "ownerpass1")
    assert (await api.ok("GET", "/api/settings/system", owner))["upstream_url_policy"] == "any"

