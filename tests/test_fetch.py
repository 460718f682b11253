"""Safe URL fetching against a real HTTP server on 127.0.0.1.

The server is on loopback, which production refuses; tests that need to reach it pass
``unsafe_allow_loopback_hops`` (a constructor keyword that configuration cannot set) and a resolver
that maps a public-looking name to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from fetch_server import LocalServer, png_bytes

from pipeline.config import FetchParams, load_settings
from pipeline.errors import UserError
from pipeline.images.fetch import SafeFetcher, _HostRate, literal_ip, non_public_reason, retry_after_seconds

FAST = FetchParams(backoff=0.01, connect_timeout=2, read_timeout=2, total_timeout=10, per_host_rate=0)


async def to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def test_fetcher(hops: int = 1, **params) -> SafeFetcher:
    fields = {**FAST.__dict__, **params}
    return SafeFetcher(FetchParams(**fields), resolver=to_loopback, unsafe_allow_loopback_hops=hops)


test_fetcher.__test__ = False  # a helper, not a test


@pytest.fixture
def server():
    with LocalServer() as srv:
        yield srv


def one(fetcher: SafeFetcher, url: str):
    return fetcher.fetch_all([url])[url]


def test_fetches_image_with_pinned_address_and_original_host_header(server):
    result = one(test_fetcher(), server.url("/img.png", host="avatars.example.com"))
    assert result.ok and result.data == png_bytes() and result.attempts == 1
    # the connection went to the validated address; the server still saw the name the URL gave
    assert server.requests == [("/img.png", f"avatars.example.com:{server.port}")]


def test_production_fetcher_refuses_loopback_and_sends_nothing(server, tmp_path):
    fetcher = SafeFetcher.from_settings(load_settings(env={}, shipped_detector=False, home=tmp_path))
    assert one(fetcher, server.url("/img.png")).reason == "destination 127.0.0.1 is loopback; refused"
    assert one(fetcher, server.url("/img.png", host="localhost")).reason in (
        "destination 127.0.0.1 (localhost = 127.0.0.1) is loopback; refused",
        "destination ::1 (localhost = ::1) is loopback; refused")
    assert server.requests == []


def test_config_cannot_allow_private_destinations(tmp_path):
    (tmp_path / "config.toml").write_text("[fetch]\nallow_loopback = true\n")
    with pytest.raises(UserError, match=r"unknown fetch setting\(s\) \['allow_loopback'\]"):
        load_settings(env={}, shipped_detector=False, home=tmp_path)


@pytest.mark.parametrize("url,reason", [
    ("http://127.0.0.1/a.png", "destination 127.0.0.1 is loopback; refused"),
    ("http://[::1]/a.png", "destination ::1 is loopback; refused"),
    ("http://169.254.169.254/latest/meta-data/", "destination 169.254.169.254 is link-local (cloud metadata range); refused"),
    ("http://10.1.2.3/a.png", "destination 10.1.2.3 is private (RFC 1918 or similar); refused"),
    ("http://172.16.0.1/a.png", "destination 172.16.0.1 is private (RFC 1918 or similar); refused"),
    ("http://192.168.1.1/a.png", "destination 192.168.1.1 is private (RFC 1918 or similar); refused"),
    ("http://100.64.0.1/a.png", "destination 100.64.0.1 is carrier-grade NAT (100.64.0.0/10); refused"),
    ("http://2130706433/", "destination 127.0.0.1 (2130706433 = 127.0.0.1) is loopback; refused"),
    ("http://0x7f.1/", "destination 127.0.0.1 (0x7f.1 = 127.0.0.1) is loopback; refused"),
    ("http://0177.0.0.1/", "destination 127.0.0.1 (0177.0.0.1 = 127.0.0.1) is loopback; refused"),
    ("http://0xa9fea9fe/", "destination 169.254.169.254 (0xa9fea9fe = 169.254.169.254) is link-local (cloud metadata range); refused"),
    ("http://[::ffff:127.0.0.1]/", "destination ::ffff:7f00:1 is IPv6 form of 127.0.0.1: loopback; refused"),
    ("http://[::ffff:169.254.169.254]/", "destination ::ffff:a9fe:a9fe is IPv6 form of 169.254.169.254: link-local (cloud metadata range); refused"),
    ("http://[fd12:3456::1]/", "destination fd12:3456::1 is IPv6 unique local (fc00::/7); refused"),
    ("http://[fe80::1]/", "destination fe80::1 is link-local; refused"),
    ("http://0.0.0.0/", "destination 0.0.0.0 is unspecified; refused"),
    ("http://224.0.0.1/", "destination 224.0.0.1 is multicast; refused"),
    ("file:///etc/passwd", "scheme 'file' is not fetched (http and https only)"),
    ("ftp://example.com/a.png", "scheme 'ftp' is not fetched (http and https only)"),
    ("http://user:pw@example.com/a.png", "URL carries credentials; refused"),
])
def test_non_public_destinations_are_refused_without_a_request(url, reason, tmp_path):
    fetcher = SafeFetcher.from_settings(load_settings(env={}, shipped_detector=False, home=tmp_path))
    result = one(fetcher, url)
    assert (result.ok, result.reason, result.attempts) == (False, reason, 0)


def test_every_resolved_address_must_be_public(server):
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]  # a public answer does not excuse a private one

    fetcher = SafeFetcher(FAST, resolver=mixed)
    result = one(fetcher, server.url("/img.png", host="mixed.example.com"))
    assert result.reason == "destination 10.0.0.7 (mixed.example.com = 10.0.0.7) is private (RFC 1918 or similar); refused"
    assert server.requests == []


@pytest.mark.parametrize("path,reason", [
    ("/redirect-loopback", "destination 127.0.0.1 is loopback; refused"),
    ("/redirect-metadata", "destination 169.254.169.254 is link-local (cloud metadata range); refused"),
    ("/redirect-decimal", "destination 127.0.0.1 (2130706433 = 127.0.0.1) is loopback; refused"),
])
def test_redirect_to_a_private_address_is_refused(server, path, reason):
    result = one(test_fetcher(hops=1), server.url(path, host="public.example.com"))
    assert (result.ok, result.reason) == (False, reason)
    assert [p for p, _ in server.requests] == [path]  # the second hop was never requested


def test_redirect_to_a_public_name_that_resolves_private_is_refused(server):
    # hop 2 goes back to the same public-looking name; only the first hop may reach loopback
    result = one(test_fetcher(hops=1), server.url("/chain/0", host="public.example.com"))
    assert result.reason == "destination 127.0.0.1 (public.example.com = 127.0.0.1) is loopback; refused"


def test_redirect_cap(server):
    result = one(test_fetcher(hops=99, max_redirects=3), server.url("/chain/0", host="public.example.com"))
    assert result.reason == f"more than 3 redirects; gave up at http://public.example.com:{server.port}/chain/3"
    ok = one(test_fetcher(hops=99, max_redirects=11), server.url("/chain/0", host="public.example.com"))
    assert ok.data == png_bytes() and ok.final_url.endswith("/img.png")


def test_retry_after_is_honoured_and_5xx_retried(server):
    result = one(test_fetcher(), server.url("/429-once"))
    assert (result.ok, result.attempts) == (True, 2)
    result = one(test_fetcher(), server.url("/503-twice"))
    assert (result.ok, result.attempts) == (True, 3)
    result = one(test_fetcher(retries=2), server.url("/500-always"))
    assert (result.reason, result.attempts) == ("HTTP 500 after 3 attempts", 3)
    result = one(test_fetcher(), server.url("/429-long"))
    assert result.reason == "HTTP 429; Retry-After 86400 s exceeds the 30 s cap"
    assert server.counters["/429-long"] == 1


def test_client_errors_are_not_retried(server):
    result = one(test_fetcher(), server.url("/404"))
    assert (result.reason, result.attempts) == (f"HTTP 404 from {server.url('/404')}", 1)


def test_byte_cap_declared_and_streamed(server):
    cap = 1024 * 1024
    declared = one(test_fetcher(max_bytes=cap), server.url("/big-declared"))
    assert declared.reason == f"Content-Length 2097152 exceeds the {cap}-byte cap; not downloaded"
    streamed = one(test_fetcher(max_bytes=cap), server.url("/big-chunked"))
    assert streamed.reason == f"body exceeds the {cap}-byte cap; download stopped"


def test_read_timeout_and_total_deadline(server):
    stalled = one(test_fetcher(read_timeout=0.3, retries=0), server.url("/stall"))
    assert stalled.reason.startswith("ReadTimeout") and stalled.reason.endswith("after 1 attempts")
    dripped = one(test_fetcher(read_timeout=5, total_timeout=1), server.url("/drip"))
    assert dripped.reason == "took longer than 1 s in all; gave up"


def test_concurrency_is_bounded(server):
    urls = [server.url(f"/slow-img/{i}") for i in range(8)]
    results = test_fetcher(concurrency=2).fetch_all(urls)
    assert all(r.ok for r in results.values()) and len(results) == 8
    assert 1 <= server.max_in_flight <= 2


def test_per_host_rate_spaces_request_starts(monkeypatch):
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))

    monkeypatch.setattr("pipeline.images.fetch.time.monotonic", lambda: 100.0)
    monkeypatch.setattr("pipeline.images.fetch.asyncio.sleep", fake_sleep)
    rate = _HostRate(10.0)

    async def go() -> None:
        for host in ("a.example", "a.example", "b.example", "a.example"):
            await rate.wait(host)

    asyncio.run(go())
    assert slept == [0.1, 0.2]  # a.example waits 0.1 s then 0.2 s; b.example starts at once


@pytest.mark.parametrize("host,expected", [
    ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0177.0.0.01", "127.0.0.1"),
    ("[::1]", "::1"), ("example.com", None), ("cafe.example", None),
])
def test_literal_ip_spellings(host, expected):
    got = literal_ip(host)
    assert (str(got) if got else None) == expected


def test_public_addresses_pass():
    for text in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert non_public_reason(ipaddress.ip_address(text)) is None


def test_retry_after_forms():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now
    assert retry_after_seconds("soon") is None


def test_https_is_pinned_to_the_checked_address_and_verified_by_name(tmp_path):
    from fetch_server import TLSServer, self_signed

    cert, key, trust = self_signed(tmp_path, "avatars.example.com")
    with TLSServer(cert, key) as server:
        fetcher = SafeFetcher(FAST, resolver=to_loopback, unsafe_allow_loopback_hops=1, verify=trust)
        ok = one(fetcher, server.url("/img.png", host="avatars.example.com"))
        assert ok.data == png_bytes()  # connected to 127.0.0.1, TLS SNI and certificate check by name
        wrong = one(fetcher, server.url("/img.png", host="other.example.com"))
        assert not wrong.ok and wrong.reason.startswith("TLS certificate refused:") and wrong.attempts == 1
        assert "CERTIFICATE_VERIFY_FAILED" in wrong.reason and "other.example.com" in wrong.reason
        assert [h for _, h in server.requests] == [f"avatars.example.com:{server.port}"]
