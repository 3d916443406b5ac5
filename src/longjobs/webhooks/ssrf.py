"""Which webhook destinations may be dialled (server-side request forgery guard).

A tenant-supplied URL is checked twice: when it is registered (``check_url``: its form, and the
address when it is a literal) and at every delivery, by ``GuardedTransport``, against the very
address the connection goes to. The transport resolves the host itself, refuses the request if
any address is not public, and connects to the checked address while keeping the original
``Host`` header and TLS server name, so a DNS answer that changes between the check and the
connection (rebinding) cannot redirect it. Redirects are never followed by the delivery client.

Refused: schemes other than http and https, user info (``http://a@b``), ports below 1024 other
than 80 and 443, hosts that end in a number but are not a canonical dotted quad (``0177.0.0.1``,
``2130706433``, ``127.1``, ``0x7f.0.0.1``), ``localhost`` names, bracketed non-addresses, and
every address that is not globally routable: loopback, private, link-local, CGNAT, multicast,
reserved, ``0.0.0.0``/``::``, cloud metadata addresses, and IPv4 addresses hidden in IPv6
(mapped, compatible, 6to4, Teredo, NAT64). An explicit allow-list of networks (tests, private
deployments) lets chosen addresses through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: how names are resolved (tests pass their own)."""

MAX_URL_LENGTH = 2048

_BLOCKED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "100.64.0.0/10",  # CGNAT, Alibaba's metadata 100.100.100.200 among them
        "169.254.0.0/16",  # link-local, the usual metadata address
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): a site's own translator
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ENDS_IN_A_NUMBER = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)


class UnsafeDestination(ValueError):
    """A webhook destination that is refused, and why."""


@dataclass(frozen=True, slots=True)
class Policy:
    """What may be dialled besides public addresses."""

    allowed_networks: tuple[Network, ...] = ()
    """Networks allowed whatever they are (e.g. ``127.0.0.0/8`` for tests): explicit only."""

    @classmethod
    def allowing(cls, networks: Iterable[str]) -> Policy:
        return cls(tuple(ipaddress.ip_network(net.strip()) for net in networks if net.strip()))

    def allows(self, address: IPAddress) -> bool:
        return any(address in net for net in self.allowed_networks)


@dataclass(frozen=True, slots=True)
class Target:
    """A destination whose form passed ``check_url``."""

    url: str
    scheme: str
    host: str
    """Lower case, without brackets or a trailing dot."""
    port: int
    address: IPAddress | None = field(default=None)
    """The host when it is an address literal."""


def check_url(url: str, policy: Policy) -> Target:
    """The parts of ``url`` once its form is acceptable; UnsafeDestination otherwise. A literal
    address is checked here too; a name is checked when it is resolved."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeDestination(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
        raise UnsafeDestination("the URL contains whitespace, control characters or '\\'")
    try:
        parts = urlsplit(url)
        given_port = parts.port
        httpx.URL(url)  # what the delivery client will make of it (IDNA included)
    except (ValueError, httpx.InvalidURL) as exc:  # a bad port, brackets around a name...
        raise UnsafeDestination(f"the URL cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeDestination("only http and https URLs can receive webhooks")
    if "@" in parts.netloc:
        raise UnsafeDestination("the URL may not carry user info (user:password@)")
    port = given_port if given_port is not None else 443 if scheme == "https" else 80
    if port < 1024 and port not in (80, 443):
        raise UnsafeDestination(f"port {port} is not allowed (80, 443 or 1024 and above)")
    host = _host_of(parts.netloc, parts.hostname)
    address = _literal(host)
    if address is not None:
        check_address(address, policy)
    elif host == "localhost" or host.endswith(".localhost"):
        raise UnsafeDestination("localhost is not a public destination")
    return Target(url=url, scheme=scheme, host=host, port=port, address=address)


def _host_of(netloc: str, hostname: str | None) -> str:
    if not hostname:
        raise UnsafeDestination("the URL has no host")
    if "%" in hostname:
        raise UnsafeDestination("an address with a zone is not a public destination")
    host = hostname.lower().rstrip(".")
    if netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UnsafeDestination("brackets may only hold an IPv6 address") from None
    return host


def _literal(host: str) -> IPAddress | None:
    """The address a host names literally, or None for a name; odd numeric forms refused
    (hosts ending in a number are addresses to browsers and to some resolvers)."""
    if ":" in host:
        return ipaddress.IPv6Address(host)
    if _ENDS_IN_A_NUMBER.fullmatch(host.rsplit(".", 1)[-1]):
        try:
            return ipaddress.IPv4Address(host)  # canonical dotted quads only
        except ValueError:
            raise UnsafeDestination(f"{host!r} is not a canonical IPv4 address") from None
    return None


def embedded(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo client,
    NAT64), else the address itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (int(address) < 2**32 and int(address) > 1):  # NAT64, compatible
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def check_address(address: IPAddress, policy: Policy) -> None:
    """UnsafeDestination unless ``address`` (and any IPv4 address inside it) is globally
    routable, or allowed by ``policy``."""
    inner = embedded(address)
    if policy.allows(address) or policy.allows(inner):
        return
    for candidate in {address, inner}:
        if (
            not candidate.is_global
            or candidate.is_multicast
            or candidate.is_unspecified
            or any(candidate in net for net in _BLOCKED)
        ):
            raise UnsafeDestination(f"{address} is not a public address")


async def system_resolver(host: str, port: int) -> list[str]:
    """Every A and AAAA address of ``host``, in the order to try them (RFC 6724's, as the
    system gives it)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve(target: Target, policy: Policy, resolver: Resolver) -> list[IPAddress]:
    """The addresses to dial for ``target``, every one of them checked (one unsafe address
    refuses the whole name: another resolution could pick it)."""
    if target.address is not None:
        return [target.address]
    try:
        names = await resolver(target.host, target.port)
    except (OSError, UnicodeError):  # UnicodeError: a label too long or empty
        raise UnsafeDestination(f"{target.host} does not resolve") from None
    if not names:
        raise UnsafeDestination(f"{target.host} does not resolve")
    addresses = [ipaddress.ip_address(name.split("%", 1)[0]) for name in names]
    for address in addresses:
        try:
            check_address(address, policy)
        except UnsafeDestination:  # which address is not said: names are not a DNS probe
            raise UnsafeDestination(f"{target.host} resolves to a non-public address") from None
    return addresses


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that dials only checked addresses.

    Each request's host is resolved here, every address checked, and the connection made to
    the first one that answers, with the original ``Host`` header and TLS server name
    (``sni_hostname``), so what was checked is what is dialled. Connections are pooled per
    host name and address: a kept-alive TLS connection verified for one name is never reused
    for another name on the same address. Use it with ``follow_redirects=False``."""

    POOLS = 64
    """Host pools kept open (the least recently used is closed beyond that)."""

    def __init__(
        self,
        policy: Policy,
        *,
        resolver: Resolver = system_resolver,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = inner
        self._pools: OrderedDict[tuple[str, str, int, str], httpx.AsyncBaseTransport] = (
            OrderedDict()
        )

    async def _pool(self, key: tuple[str, str, int, str]) -> httpx.AsyncBaseTransport:
        if self.inner is not None:
            return self.inner
        pool = self._pools.pop(key, None) or httpx.AsyncHTTPTransport()
        self._pools[key] = pool
        while len(self._pools) > self.POOLS:
            _, oldest = self._pools.popitem(last=False)
            await oldest.aclose()
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = check_url(str(request.url), self.policy)
        addresses = await resolve(target, self.policy, self.resolver)
        extensions = dict(request.extensions)
        if target.scheme == "https":
            extensions["sni_hostname"] = target.host
        failure: httpx.ConnectError | None = None
        for address in addresses:  # the next one when a connection cannot be made
            dialled = httpx.Request(
                request.method,
                request.url.copy_with(host=str(address)),
                headers=request.headers,  # Host still names the original host
                stream=request.stream,
                extensions=extensions,
            )
            pool = await self._pool((target.scheme, target.host, target.port, str(address)))
            try:
                return await pool.handle_async_request(dialled)
            except httpx.ConnectError as exc:
                failure = exc
        assert failure is not None  # resolve() gives at least one address
        raise failure

    async def aclose(self) -> None:
        pools = [self.inner] if self.inner is not None else list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()
