"""Where user-supplied upstream URLs may connect (the `upstream_url_policy` setting).

- `any`: anywhere (single-user default: the one user owns the box anyway).
- `public_only`: globally routable addresses only: no loopback, private, link-local,
  unique-local, shared (CGNAT), multicast, reserved or cloud metadata addresses, including
  IPv4 addresses hidden in IPv6 forms (mapped, compatible, 6to4, Teredo, NAT64), and the
  local-use NAT64 and SIIT ranges whole.
- `allowlist`: public ones plus the hosts and CIDRs an admin listed (a LAN model server).

The check runs where the connection is made (`socket_factory`, for every address tried, IP
literals included), not on the URL text alone, so DNS rebinding cannot slip through; redirects
are never followed. System models (configured by admins) are not restricted.
"""

from __future__ import annotations

import ipaddress
import socket
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

POLICIES = ("any", "public_only", "allowlist")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Public addresses that still reach a cloud provider's own services.
_METADATA = (ipaddress.ip_network("168.63.129.16/32"),  # Azure WireServer
             ipaddress.ip_network("fd00:ec2::254/128"))  # AWS IPv6 IMDS (also unique-local)
_METADATA_HOSTS = ("metadata.google.internal", "metadata.goog", "metadata")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPAT = ipaddress.ip_network("::/96")
# Translators whose IPv4 side is the operator's own network, not the internet: refused whole.
_TRANSLATED = ((ipaddress.ip_network("64:ff9b:1::/48"), "a local-use NAT64 address"),
               (ipaddress.ip_network("::ffff:0:0:0/96"), "an IPv4-translated (SIIT) address"))


class BlockedAddress(OSError):
    """A connection the policy refuses; aiohttp reports it as a connector error."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address} is {reason}")
        self.address = address
        self.reason = reason


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):  # ::1 and :: are themselves
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def why_not_public(address: str | IPAddress) -> str | None:
    """None for a public address, else what it is (for the error message)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if isinstance(ip, ipaddress.IPv6Address):
        for net, what in _TRANSLATED:
            if ip in net:
                return what
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = why_not_public(inner)
            return f"an IPv6 form of {inner}, which is {reason}" if reason else None
    if any(ip in net for net in _METADATA if net.version == ip.version):
        return "a cloud metadata address"
    for attr, what in (("is_loopback", "a loopback"), ("is_link_local", "a link-local"),
                       ("is_multicast", "a multicast"), ("is_unspecified", "an unspecified")):
        if getattr(ip, attr):
            return f"{what} address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.ip_network("fc00::/7"):
        return "a unique-local address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def parse_allowlist(text: str) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """Comma- or space-separated host names and CIDRs; ValueError names a bad entry."""
    hosts, networks = set(), []
    for entry in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        name = entry.lower().rstrip(".")
        labels = name.split(".")
        if not name or len(name) > 253 or not all(
                label and len(label) <= 63 and label.replace("-", "").isalnum()
                and label.isascii() for label in labels):
            raise ValueError(f"not a host name or CIDR: {entry!r}")
        hosts.add(name)
    return frozenset(hosts), tuple(networks)


@dataclass(frozen=True, slots=True)
class NetPolicy:
    mode: str
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, mode: str, allowlist: str) -> NetPolicy:
        hosts, networks = parse_allowlist(allowlist) if mode == "allowlist" else ((), ())
        return cls(mode, frozenset(hosts), tuple(networks))

    def for_host(self, host: str | None) -> NetPolicy | None:
        """The check to apply to connections for `host`; None means unrestricted."""
        if self.mode == "any":
            return None
        name = (host or "").lower().rstrip(".")
        if self.mode == "allowlist" and name in self.hosts:
            return None
        return self

    def refusal(self, address: str, host: str | None = None) -> str | None:
        """Why a connection to `address` is refused, or None if it is allowed."""
        if self.mode == "any":
            return None
        name = (host or "").lower().rstrip(".")
        if name in _METADATA_HOSTS:
            return "a cloud metadata host"
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if self.mode == "allowlist":
            if name in self.hosts:
                return None
            if any(ip.version == net.version and ip in net for net in self.networks):
                return None
        return why_not_public(ip)


@dataclass(slots=True)
class Guard:
    """The policy for connections made by one round, and what it refused (for the message:
    aiohttp folds several failed attempts into one generic error)."""

    policy: NetPolicy
    refused: list[str] = field(default_factory=list)


# Set by a round for a user-supplied model; connection attempts inherit it (contexts are copied
# into the tasks happy eyeballs starts, and the list is shared).
current: ContextVar[Guard | None] = ContextVar("upstream_guard", default=None)


def guarded_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp's socket_factory: refuse an address before connecting to it."""
    family, type_, proto, _, sockaddr = addr_info
    guard = current.get()
    if guard is not None:
        reason = guard.policy.refusal(sockaddr[0])
        if reason:
            guard.refused.append(f"{sockaddr[0]} is {reason}")
            raise BlockedAddress(sockaddr[0], reason)
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setblocking(False)
    if family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def check_url(policy: NetPolicy, resolver: Any, url: str) -> None:
    """Refuse (ValueError with the reason) a URL whose host resolves to a refused address.

    A save-time courtesy for a clear 400; the guard at connect time is what enforces it. A host
    that does not resolve now is left to that guard.
    """
    from yarl import URL

    parsed = URL(url)
    host = parsed.host or ""
    effective = policy.for_host(host)
    if effective is None:
        return
    try:
        addresses = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        try:
            infos = await resolver.resolve(host, parsed.port or 80, family=socket.AF_UNSPEC)
        except OSError:
            return
        addresses = [info["host"] for info in infos]
    for address in addresses:
        reason = effective.refusal(address, host)
        if reason:
            raise ValueError(f"{address} is {reason}, which the upstream_url_policy "
                             f"({policy.mode}) does not allow")
