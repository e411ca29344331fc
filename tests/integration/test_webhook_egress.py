"""Webhook egress: the SSRF rules (production refuses private, loopback, link-local and
metadata addresses, also behind a host name, checked when the socket is opened), no
redirects, and the timeout; development delivers to loopback for tests."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from singura_vault.providers import (
    UnsafeEndpoint,
    WebhookEgressSettings,
    WebhookSender,
    check_webhook_url,
    forbidden_address,
)
from tests.support.webhook_receiver import Receiver

REFUSED = (
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",  # noqa: S104 - an address refused, not bound
    "224.0.0.1",
    "::1",
    "::",
    "fe80::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # NAT64 form of 169.254.169.254
)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


@pytest.mark.parametrize("address", REFUSED)
def test_private_loopback_link_local_and_metadata_addresses_are_forbidden(address: str) -> None:
    """Every non-public address, in every IPv4 and IPv6 spelling, is refused."""
    assert forbidden_address(ipaddress.ip_address(address))


def test_public_addresses_are_allowed() -> None:
    """Public IPv4 and IPv6 addresses are allowed as webhook destinations."""
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert not forbidden_address(ipaddress.ip_address(address))


def test_production_url_rules() -> None:
    """Production: https only, and a literal private address is refused at once."""
    for url in (
        "http://hooks.example.com/",
        "https://127.0.0.1/",
        "https://[::1]/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1:8443/",
    ):
        with pytest.raises(UnsafeEndpoint):
            check_webhook_url(url, production=True)
    assert check_webhook_url("https://hooks.example.com/in", production=True)
    assert check_webhook_url("http://127.0.0.1:9000/in", production=False)


async def test_production_refuses_a_host_name_that_resolves_to_loopback(
    receiver: Receiver,
) -> None:
    """ "localhost" passes the URL check (a name), but the address it resolves to is
    checked when the socket opens: refused, and nothing reaches the listener."""
    port = receiver.url.split(":")[2].split("/")[0]
    sender = WebhookSender(WebhookEgressSettings(production=True))
    try:
        result = await sender.send(f"https://localhost:{port}/hooks", {}, b"{}")
    finally:
        await sender.aclose()
    assert result.outcome == "refused_address"
    assert "localhost" not in result.error
    assert port not in result.error
    assert receiver.received == []


async def test_development_delivers_to_loopback(receiver: Receiver) -> None:
    """Outside production the same sender reaches a loopback receiver (tests)."""
    sender = WebhookSender(WebhookEgressSettings(production=False))
    try:
        result = await sender.send(receiver.url.replace("127.0.0.1", "localhost"), {}, b"{}")
    finally:
        await sender.aclose()
    assert (result.outcome, result.status_code, result.body_prefix) == ("delivered", 200, "ok")
    assert len(receiver.received) == 1


async def test_redirects_are_not_followed_and_slow_answers_time_out() -> None:
    """A 3xx is a failed attempt (the Location is never called); an answer slower than
    the total timeout is a timeout."""
    followed: list[str] = []
    release = asyncio.Event()

    async def redirect(_: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/elsewhere"})

    async def elsewhere(_: web.Request) -> web.Response:
        followed.append("elsewhere")
        return web.Response(text="ok")

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/redirect", redirect)
    app.router.add_post("/elsewhere", elsewhere)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started
    sender = WebhookSender(WebhookEgressSettings(timeout_s=0.5))
    try:
        moved = await sender.send(f"http://127.0.0.1:{port}/redirect", {}, b"{}")
        late = await sender.send(f"http://127.0.0.1:{port}/slow", {}, b"{}")
    finally:
        release.set()
        await sender.aclose()
        await runner.cleanup()
    assert (moved.outcome, moved.status_code, followed) == ("http_error", 307, [])
    assert late.outcome == "timeout"
    assert late.status_code is None
