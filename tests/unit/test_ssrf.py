"""The SSRF matrix of RELIABILITY S6: every refused destination is refused both when checked at
registration (``check_url`` + resolution) and at delivery (``GuardedTransport``), decided without
connecting anywhere: names resolve through a fake resolver, and the transport's inner transport
records what would have been dialled instead of dialling it."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from longjobs.webhooks.ssrf import (
    GuardedTransport,
    Policy,
    Resolver,
    UnsafeDestination,
    check_url,
    resolve,
)

DNS = {
    "example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "hooks.example.org": ["8.8.4.4"],
    "internal.example": ["10.0.0.5"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["93.184.216.34", "192.168.0.10"],
    "mapped.example": ["::ffff:10.1.2.3"],
    "dual.example": ["2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"],
    "nowhere.example": [],
}


async def fake_resolver(host: str, port: int) -> list[str]:
    return list(DNS[host])


REFUSED = [
    # loopback, unspecified, private, link-local, CGNAT, metadata
    "http://127.0.0.1/hook",
    "http://127.8.9.10:8080/",
    "http://localhost/",
    "http://api.localhost/",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://100.100.100.200/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://198.18.0.1/",
    "http://192.0.2.1/",
    # IPv4 hidden in IPv6
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
    "http://[64:ff9b:1::a00:1]/",  # local-use NAT64 (RFC 8215) to 10.0.0.1
    "http://[::ffff:0:a00:1]/",  # IPv4-translated (SIIT) 10.0.0.1
    # odd numeric forms
    "http://0177.0.0.1/",
    "http://2130706433/",
    "http://127.1/",
    "http://0x7f.0.0.1/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://10.0.0.1./",
    # schemes, user info, brackets, ports, zones, no host
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/",
    "ftp://example.com/",
    "javascript:alert(1)",
    "http://user:password@example.com/",
    "http://example.com@127.0.0.1/",
    "http://[example.com]/",
    "http://example.com:22/",
    "http://example.com:25/",
    "http://example.com:0/",
    "http://example.com:99999/",
    "https://[fe80::1%25eth0]/",
    "http:///path",
    "http://exa mple.com/",
    "http://example.com\\@127.0.0.1/",
    # names that resolve to what is refused
    "http://internal.example/",
    "http://127.0.0.1.nip.io/",
    "http://metadata.example/",
    "http://mixed.example/",  # one private address refuses the name
    "http://mapped.example/",
    "http://nowhere.example/",
]

ACCEPTED = [
    ("https://example.com/hooks", "93.184.216.34"),
    ("http://hooks.example.org:8080/x?y=1", "8.8.4.4"),
    ("http://8.8.8.8/", "8.8.8.8"),
    ("https://[2606:4700:4700::1111]/", "2606:4700:4700::1111"),
]


PUBLIC_ONLY = Policy()


async def registered(url: str, policy: Policy = PUBLIC_ONLY) -> list[str]:
    target = check_url(url, policy)
    return [str(address) for address in await resolve(target, policy, fake_resolver)]


class Recorder(httpx.AsyncBaseTransport):
    """Stands in for the network: records each request it would have sent."""

    def __init__(self) -> None:
        self.dialled: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.dialled.append(request)
        return httpx.Response(204)


def guarded(
    resolver: Resolver = fake_resolver, policy: Policy = PUBLIC_ONLY
) -> tuple[httpx.AsyncClient, Recorder]:
    recorder = Recorder()
    transport = GuardedTransport(policy, resolver=resolver, inner=recorder)
    return httpx.AsyncClient(transport=transport, follow_redirects=False), recorder


def test_the_matrix_is_large_enough() -> None:
    assert len(REFUSED) >= 40


@pytest.mark.parametrize("url", REFUSED)
async def test_refused_at_registration_and_at_delivery(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        await registered(url)
    client, recorder = guarded()
    async with client:
        with pytest.raises((UnsafeDestination, httpx.UnsupportedProtocol, httpx.InvalidURL)):
            await client.post(url, content=b"{}")
    assert recorder.dialled == []


@pytest.mark.parametrize(("url", "address"), ACCEPTED)
async def test_public_destinations_are_dialled_at_the_checked_address(
    url: str, address: str
) -> None:
    assert address in await registered(url)
    client, recorder = guarded()
    async with client:
        answer = await client.post(url, content=b"{}")

    assert answer.status_code == 204
    [request] = recorder.dialled
    assert ipaddress.ip_address(request.url.host) == ipaddress.ip_address(address)
    original = httpx.URL(url)
    assert request.headers["host"] == original.netloc.decode()
    if original.scheme == "https":
        assert request.extensions["sni_hostname"] == original.host


async def test_a_rebinding_name_is_refused_at_delivery_though_it_passed_registration() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    policy = Policy()
    target = check_url("https://rebind.example/hook", policy)
    assert [str(a) for a in await resolve(target, policy, rebinding)] == ["93.184.216.34"]
    client, recorder = guarded(rebinding)
    async with client:
        with pytest.raises(UnsafeDestination):
            await client.post("https://rebind.example/hook", content=b"{}")
    assert recorder.dialled == []


async def test_a_redirect_is_not_followed() -> None:
    async def to_loopback(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://127.0.0.1/admin"})

    transport = GuardedTransport(
        Policy(), resolver=fake_resolver, inner=httpx.MockTransport(to_loopback)
    )
    async with httpx.AsyncClient(transport=transport, follow_redirects=False) as client:
        answer = await client.post("https://example.com/hooks", content=b"{}")

    assert answer.status_code == 302  # a failed delivery, never a request to 127.0.0.1


async def test_an_explicit_allow_list_lets_loopback_through() -> None:
    policy = Policy.allowing(["127.0.0.0/8", "::1/128"])

    assert await registered("http://127.0.0.1:8123/hook", policy) == ["127.0.0.1"]
    assert await registered("http://[::1]:8123/hook", policy) == ["::1"]
    with pytest.raises(UnsafeDestination):
        await registered("http://10.0.0.1/", policy)  # only what is listed
    client, recorder = guarded(policy=policy)
    async with client:
        await client.post("http://127.0.0.1:8123/hook", content=b"{}")
    assert recorder.dialled[0].url.host == "127.0.0.1"


async def test_a_name_that_cannot_be_looked_up_is_refused_not_an_error() -> None:
    async def idna_fails(host: str, port: int) -> list[str]:
        return [host.encode("idna").decode()]  # what getaddrinfo does first

    policy = Policy()
    target = check_url("http://" + "a" * 64 + ".example.com/", policy)
    with pytest.raises(UnsafeDestination, match="does not resolve"):
        await resolve(target, policy, idna_fails)
    with pytest.raises(UnsafeDestination, match="cannot be parsed"):
        check_url("http://\u2603\u200d.example/", policy)  # IDNA refuses it


async def test_a_refused_name_does_not_tell_its_address() -> None:
    with pytest.raises(UnsafeDestination) as refused:
        await registered("http://internal.example/")

    assert str(refused.value) == "internal.example resolves to a non-public address"
    assert "10.0.0.5" not in str(refused.value)


async def test_the_next_address_is_tried_when_one_cannot_be_reached() -> None:
    tried: list[str] = []

    async def only_ipv4(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.host)
        if ":" in request.url.host:
            raise httpx.ConnectError("network unreachable")
        return httpx.Response(204)

    transport = GuardedTransport(
        Policy(), resolver=fake_resolver, inner=httpx.MockTransport(only_ipv4)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        answer = await client.post("https://dual.example/hooks", content=b"{}")

    assert answer.status_code == 204
    assert tried == ["2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"]  # the system's order


async def test_names_sharing_an_address_never_share_a_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pools: list[Recorder] = []

    def new_pool() -> Recorder:
        pools.append(Recorder())
        return pools[-1]

    monkeypatch.setattr(httpx, "AsyncHTTPTransport", new_pool)
    shared = {"a.example": ["93.184.216.34"], "b.example": ["93.184.216.34"]}

    async def resolver(host: str, port: int) -> list[str]:
        return shared[host]

    transport = GuardedTransport(Policy(), resolver=resolver)
    async with httpx.AsyncClient(transport=transport) as client:
        for url in ("https://a.example/", "https://b.example/", "https://a.example/x"):
            await client.post(url, content=b"{}")

    assert [[r.headers["host"] for r in pool.dialled] for pool in pools] == [
        ["a.example", "a.example"],
        ["b.example"],
    ]
