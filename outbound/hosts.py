"""Which webhook URLs may be called: http(s) to public addresses only, checked when saved and at every attempt.

A receiver URL is chosen by an admin, but its host name resolves wherever its DNS says, now
or later: checking only when it is saved would let a name that later points at 127.0.0.1,
the cloud metadata address (169.254.169.254) or a private network reach inside. So every
attempt resolves the name, refuses it if any address is loopback, link-local, private,
shared, multicast or otherwise not global, and connects to the very address it checked.
The admin setting "allow private hosts" lifts that (tests, a receiver on the same network).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class Refused(ValueError):
    """The URL may not be called; the message says why, for staff."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent
    address: str  # the IP address checked, to connect to


def parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL, or Refused."""
    if not url or len(url) > 2000 or any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise Refused("Enter a full http:// or https:// address without spaces.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Refused("Only http:// and https:// addresses can receive webhooks.")
    if parts.username is not None or parts.password is not None:
        raise Refused("Put no user name or password in the address; verify the signature instead.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused("The port is not a number from 1 to 65535.") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise Refused("The address has no host name.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, path


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(url: str, allow_private: bool) -> Target:
    """The URL's target with the address to connect to, or Refused (bad URL, unknown host, private address)."""
    scheme, host, port, path = parse(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise Refused(f"The host name {host[:100]} could not be resolved.") from None
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise Refused(f"The host name {host[:100]} has no address.")
    if not allow_private:
        private = [a for a in addresses if not is_public(a)]
        if private:
            raise Refused(f"{host[:100]} resolves to a private, loopback or link-local address ({private[0]}); "
                          "only public hosts may receive webhooks (an admin setting allows private ones, for testing).")
    return Target(scheme, host, port, path, addresses[0])
