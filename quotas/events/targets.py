"""Where a webhook may be sent: the SSRF guard (DESIGN §7a).

A webhook URL is chosen by whoever holds an admin key; the delivery process then
makes requests to it from inside the cluster. Without a guard that is a way to
reach the metadata service (169.254.169.254), the database or any internal admin
page. So a target must be ``http`` or ``https``, and every address its host
resolves to must be a public one: private, loopback, link-local, multicast,
reserved and unspecified addresses (IPv4 and IPv6, IPv4-mapped IPv6 and the
shared address space included) are refused, unless ``WEBHOOK_ALLOW_PRIVATE`` is
true (development and tests).

It is checked twice. When an endpoint is created or changed (a 400 naming the
reason), and again at every send: the host is resolved, checked, and the
connection is made to the address that was checked (``Target.address``), with the
host name kept for the ``Host`` header and TLS. A name that resolves to a public
address when the endpoint is saved and to 127.0.0.1 when it is used (DNS
rebinding) is refused then, and the refusal is logged as a failed attempt.

Nothing here touches the database; resolution is a parameter, so the rules are
tested with any resolver.
"""

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

SCHEMES = {"http": 80, "https": 443}

# (host, port) -> the addresses it resolves to, as text.
Resolver = Callable[[str, int], list[str]]


class TargetRefused(Exception):
    """A URL a webhook may not be sent to; the message says why, for people."""


@dataclass(frozen=True)
class Target:
    """A checked target: connect to ``address``, say ``host_header``, verify TLS
    against ``host``."""

    scheme: str
    host: str
    port: int
    address: str
    host_header: str
    request_path: str


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, through the system's resolver."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_refusal(text: str) -> str | None:
    """Why an address may not be a webhook target (e.g. ``"a loopback address"``),
    or None for a public one."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        # ::ffff:127.0.0.1 reaches 127.0.0.1.
        address = address.ipv4_mapped
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        # E.g. the shared address space 100.64.0.0/10 and 6to4 or Teredo forms.
        ("non-public", not address.is_global),
    )
    for name, refused in checks:
        if refused:
            return f"an {name} address" if name[0] in "aeiou" else f"a {name} address"
    return None


def _parts(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host, port, Host header, path and query) of ``url``."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"Not a valid URL: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise TargetRefused("Only http and https URLs can receive webhooks.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("The URL may not hold a user name or password.")
    port = port or SCHEMES[scheme]
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == SCHEMES[scheme] else f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return scheme, host, port, host_header, path


def target_resolve(
    url: str, *, allow_private: bool, resolver: Resolver = system_resolver
) -> Target:
    """The target of ``url``, resolved and checked; ``TargetRefused`` if it may not
    receive webhooks. Every address the host resolves to must be allowed (not just
    the first): which one a later lookup returns first is not ours to choose."""
    scheme, host, port, host_header, path = _parts(url)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:
            raise TargetRefused(f"The host {host!r} does not resolve.") from None
    if not allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason is not None:
                raise TargetRefused(
                    f"The host {host!r} resolves to {reason} ({address}); webhooks "
                    "are only sent to public addresses."
                )
    return Target(scheme, host, port, addresses[0], host_header, path)


def target_check(
    url: str, *, allow_private: bool, resolver: Resolver = system_resolver
) -> None:
    """Refuse (``TargetRefused``) a URL that may not receive webhooks."""
    target_resolve(url, allow_private=allow_private, resolver=resolver)
