"""Where a webhook may be sent: the SSRF rules, checked at registration and at delivery.

Live endpoints must be https and every address their host resolves to must be a public
(global) unicast address: no loopback, private, link-local, shared (CGNAT), multicast,
reserved or unspecified address, nor an IPv4 one hidden in IPv6. The delivery connects to
the address it checked (never resolves the name a second time), so a DNS answer that
changes between the check and the connection (rebinding) cannot redirect it. Test-mode
endpoints may be http and local, so that the sandbox works on one machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Final

import httpx

MAX_URL_LENGTH: Final = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """A URL (or the address its host resolves to) that webhooks may not reach."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: the URL as registered and the address to connect to."""

    url: httpx.URL
    address: str


def check_url(url: str, mode: str) -> httpx.URL:
    """The parsed URL when its shape is acceptable for mode; UnsafeUrl otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise UnsafeUrl("is not a valid URL") from error
    allowed = {"https"} if mode == "live" else {"https", "http"}
    if parsed.scheme not in allowed:
        raise UnsafeUrl("must be an https URL" if mode == "live" else "must be http(s)")
    if not parsed.host:
        raise UnsafeUrl("has no host")
    if parsed.userinfo:
        raise UnsafeUrl("may not carry credentials")
    if parsed.fragment:
        raise UnsafeUrl("may not carry a fragment")
    if mode == "live":
        literal = _literal(parsed.host)
        if literal is not None and not is_public(literal):
            raise UnsafeUrl("may not point at a loopback, private or link-local address")
        if parsed.host.rstrip(".").lower() in {"localhost", "localhost.localdomain"} or (
            parsed.host.rstrip(".").lower().endswith(".localhost")
        ):
            raise UnsafeUrl("may not point at localhost")
    return parsed


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_public(address: IPAddress) -> bool:
    """True for a global unicast address (an IPv4 inside IPv6 is judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None and not is_public(embedded):
            return False
    return address.is_global and not address.is_multicast


async def resolve(url: httpx.URL, mode: str) -> Target:
    """Resolve the host once and pick the address to connect to; UnsafeUrl when refused."""
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    literal = _literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as error:
            raise UnsafeUrl(f"host {host} does not resolve") from error
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses:
            raise UnsafeUrl(f"host {host} does not resolve")
    if mode == "live":
        # Every answer must be public: a name that mixes a public and a private address
        # would otherwise win whenever the private one is picked.
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise UnsafeUrl(f"host {host} resolves to a non-public address ({refused[0]})")
    return Target(url=url, address=str(addresses[0]))
