"""Safe avatar URL fetching: an export must never turn the pipeline into the attacker's HTTP client.

Each URL is fetched with httpx under bounded concurrency, a per-host rate limit, connect/read
timeouts and a total deadline, a byte cap enforced while streaming, a redirect cap, and retries
with exponential backoff on 429/5xx that honour ``Retry-After``.

Destinations must be public. For every hop (the first request and each redirect) the host is
resolved once; every resolved address must be public (not loopback, RFC 1918, link-local such as
169.254.169.254, CGNAT, multicast, reserved, IPv6 loopback/ULA/link-local, nor an IPv4-mapped or
6to4 form of those), and the connection goes to that validated address with the original Host
header and TLS SNI, so a DNS answer cannot change between check and connect. The peer address of
the connection is checked again after connecting. Integer, hex and octal spellings of IPv4
(``2130706433``, ``0x7f.1``, ``0177.0.0.1``) are decoded the way a resolver would and checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable, Iterable

import httpx

from pipeline.config import FetchParams

RETRY_STATUSES = {429, 500, 502, 503, 504}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
USER_AGENT = "profile-audit avatar fetcher"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
WORKERS_PER_CLIENT = 16
_NUMERIC_V4 = re.compile(r"^(0x[0-9a-f]*|\d+)(\.(0x[0-9a-f]*|\d+)){0,3}$", re.IGNORECASE)


class FetchRefused(Exception):
    """A fetch that was refused or failed; the message is the reason recorded for the avatar."""


@dataclass(frozen=True)
class FetchResult:
    url: str
    data: bytes | None = None
    final_url: str | None = None
    reason: str | None = None  # set when data is None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.data is not None


def literal_ip(host: str) -> IPAddress | None:
    """The address a host literal stands for, including inet_aton spellings; None for a DNS name."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_V4.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            raise FetchRefused(f"host {host!r} is a malformed numeric address; refused") from None
    return None


def non_public_reason(ip: IPAddress) -> str | None:
    """Why an address is not a public destination, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            inner = non_public_reason(embedded)
            return f"IPv6 form of {embedded}: {inner}" if inner else None
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata range)" if str(ip).startswith("169.254.") else "link-local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.IPv4Network("100.64.0.0/10"):
        return "carrier-grade NAT (100.64.0.0/10)"
    if isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.IPv6Network("fc00::/7"):
        return "IPv6 unique local (fc00::/7)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_private:
        return "private (RFC 1918 or similar)"
    if ip.is_reserved or not ip.is_global:
        return "reserved, not globally routable"
    return None


def _refusal(host: str, ip: IPAddress, reason: str) -> str:
    try:
        canonical = ipaddress.ip_address(host.strip("[]")) == ip
    except ValueError:
        canonical = False
    spelled = "" if canonical else f" ({host} = {ip})"
    return f"destination {ip}{spelled} is {reason}; refused"


def _refuse_numeric_host(url_text: str) -> None:
    """For a URL httpx cannot parse: if its host is a numeric address spelling, refuse naming the address."""
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url_text).hostname or ""
        ip = literal_ip(host) if host else None
    except ValueError:
        return
    reason = non_public_reason(ip) if ip is not None else None
    if ip is not None and reason:
        raise FetchRefused(_refusal(host, ip, reason))


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _HostRate:
    """Per-host pacing: request starts to one host are at least 1/rate seconds apart."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, host: str) -> None:
        if not self.interval:
            return
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class SafeFetcher:
    """Fetch http(s) URLs to public addresses only, within the limits of FetchParams.

    ``resolver`` and ``unsafe_allow_loopback_hops`` exist for tests: production builds the
    fetcher with ``from_settings`` and cannot set them from configuration or the environment.
    ``unsafe_allow_loopback_hops=1`` lets the first hop (and its retries) reach a test server on
    127.0.0.1 while every redirect is checked as in production.
    """

    def __init__(self, params: FetchParams, *, resolver: Resolver | None = None,
                 unsafe_allow_loopback_hops: int = 0, verify: ssl.SSLContext | bool = True):
        self.params = params
        self._verify = verify  # an SSLContext with a private CA is fine; certificates are always checked by name
        self._resolve = resolver or system_resolver
        self._loopback_hops = unsafe_allow_loopback_hops
        self._rate = _HostRate(params.per_host_rate)
        self._dns: dict[tuple[str, int], list[str]] = {}

    @classmethod
    def from_settings(cls, settings) -> "SafeFetcher":
        return cls(settings.fetch)

    def client(self, per_client: int | None = None) -> httpx.AsyncClient:
        p = self.params
        size = min(p.concurrency, per_client or p.concurrency)
        return httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would make the address check meaningless
            verify=self._verify,
            timeout=httpx.Timeout(p.read_timeout, connect=p.connect_timeout),
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            headers={"User-Agent": USER_AGENT, "Accept": "image/*"},
        )

    async def _pin(self, url: httpx.URL, hop: int) -> tuple[httpx.URL, str]:
        """Resolve the host once, refuse any non-public answer, return the URL aimed at that address."""
        if url.scheme not in ("http", "https"):
            raise FetchRefused(f"scheme {url.scheme!r} is not fetched (http and https only)")
        if not url.host:
            raise FetchRefused("URL has no host")
        if url.userinfo:
            raise FetchRefused("URL carries credentials; refused")
        port = url.port or (443 if url.scheme == "https" else 80)
        literal = literal_ip(url.host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                # one lookup per host and port for the fetcher's life (a run): the connection goes to
                # the address checked here, so a later, different DNS answer cannot matter
                addresses = self._dns.get((url.host, port)) or await self._resolve(url.host, port)
            except (OSError, UnicodeError) as exc:
                raise FetchRefused(f"cannot resolve host {url.host!r}: {exc}") from None
            self._dns[(url.host, port)] = addresses
            if not addresses:
                raise FetchRefused(f"host {url.host!r} resolves to no address")
        for text in addresses:
            ip = ipaddress.ip_address(text.split("%")[0])
            reason = non_public_reason(ip)
            if reason and not (hop < self._loopback_hops and ip.is_loopback):
                raise FetchRefused(_refusal(url.host, ip, reason))
        return url.copy_with(host=addresses[0]), addresses[0]

    async def fetch(self, client: httpx.AsyncClient, url: str) -> FetchResult:
        """One URL, with a total deadline; never raises for a bad URL or a remote failure."""
        attempts = [0]
        try:
            async with asyncio.timeout(self.params.total_timeout):
                data, final = await self._fetch(client, url, attempts)
            return FetchResult(url, data, final, attempts=attempts[0])
        except FetchRefused as exc:
            return FetchResult(url, reason=str(exc), attempts=attempts[0])
        except TimeoutError:
            return FetchResult(url, reason=f"took longer than {self.params.total_timeout:g} s in all; gave up",
                               attempts=attempts[0])
        except httpx.InvalidURL as exc:
            return FetchResult(url, reason=f"invalid URL: {exc}", attempts=attempts[0])

    async def _fetch(self, client: httpx.AsyncClient, url_text: str, attempts: list[int]) -> tuple[bytes, str]:
        p = self.params
        try:
            url = httpx.URL(url_text)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            _refuse_numeric_host(url_text)  # httpx rejects '0177.0.0.1'; say what it would have reached
            raise FetchRefused(f"invalid URL: {exc}") from None
        hop = 0
        while True:
            pinned, address = await self._pin(url, hop)
            response_or_data = await self._request_with_retries(client, url, pinned, address, attempts)
            if isinstance(response_or_data, bytes):
                return response_or_data, str(url)
            location = response_or_data
            hop += 1
            if hop > p.max_redirects:
                raise FetchRefused(f"more than {p.max_redirects} redirects; gave up at {url}")
            try:
                url = url.join(location)
            except (httpx.InvalidURL, ValueError) as exc:
                raise FetchRefused(f"redirect to an invalid URL {location[:200]!r}: {exc}") from None

    async def _request_with_retries(self, client: httpx.AsyncClient, url: httpx.URL, pinned: httpx.URL,
                                    address: str, attempts: list[int]) -> bytes | str:
        """The bytes, or the redirect Location; retries 429/5xx and connection failures with backoff."""
        p = self.params
        last = ""
        for attempt in range(p.retries + 1):
            await self._rate.wait(url.host)
            attempts[0] += 1
            try:
                outcome = await self._request_once(client, url, pinned, address)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # will not change on retry
                    raise FetchRefused(f"TLS certificate refused: {exc}") from None
                outcome, wait = f"{type(exc).__name__}: {exc}".rstrip(": "), None
            else:
                if not isinstance(outcome, tuple):
                    return outcome
                outcome, wait = outcome
            last = outcome
            if attempt == p.retries:
                break
            delay = p.backoff * (2 ** attempt)
            if wait is not None:
                if wait > p.max_retry_after:
                    raise FetchRefused(f"{outcome}; Retry-After {wait:g} s exceeds the {p.max_retry_after:g} s cap")
                delay = max(delay, wait)
            await asyncio.sleep(delay)
        raise FetchRefused(f"{last} after {p.retries + 1} attempts")

    async def _request_once(self, client: httpx.AsyncClient, url: httpx.URL, pinned: httpx.URL,
                            address: str) -> bytes | str | tuple[str, float | None]:
        p = self.params
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        headers = {"Host": url.netloc.decode("ascii")}
        async with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
            stream = response.extensions.get("network_stream")
            peer = stream.get_extra_info("server_addr") if stream is not None else None
            if peer and ipaddress.ip_address(peer[0]) != ipaddress.ip_address(address):
                raise FetchRefused(f"connected to {peer[0]}, not the validated {address}; refused")
            status = response.status_code
            if status in REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise FetchRefused(f"HTTP {status} redirect without a Location header")
                return location
            if status in RETRY_STATUSES:
                return f"HTTP {status}", retry_after_seconds(response.headers.get("retry-after"))
            if status != 200:
                raise FetchRefused(f"HTTP {status} from {url}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > p.max_bytes:
                raise FetchRefused(f"Content-Length {declared} exceeds the {p.max_bytes}-byte cap; not downloaded")
            chunks, size = [], 0
            async for chunk in response.aiter_raw():  # raw: a gzip bomb is never inflated
                size += len(chunk)
                if size > p.max_bytes:
                    raise FetchRefused(f"body exceeds the {p.max_bytes}-byte cap; download stopped")
                chunks.append(chunk)
            return b"".join(chunks)

    async def fetch_many(self, urls: Iterable[str], on_result: Callable[[FetchResult], None]) -> int:
        """Fetch distinct URLs with ``concurrency`` workers; on_result sees each result as it lands.

        Workers pull from the iterator, so a million URLs never become a million pending tasks.
        on_result runs in worker threads (image decoding releases the GIL), so it must only do
        thread-safe things: the callers assign to dicts and write content-addressed files.
        """
        pending = iter(dict.fromkeys(urls))
        done = 0

        workers = max(1, self.params.concurrency)
        # httpx's pool slows down as one client carries many concurrent connections
        # (encode/httpx#3215); a client per WORKERS_PER_CLIENT workers keeps each pool small.
        clients = [self.client(per_client=WORKERS_PER_CLIENT) for _ in range(-(-workers // WORKERS_PER_CLIENT))]

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal done
            for url in pending:  # shared iterator: each URL goes to exactly one worker
                result = await self.fetch(client, url)
                # the handler decodes and stores the image: off the event loop, so fetching goes on
                await asyncio.to_thread(on_result, result)
                done += 1

        try:
            await asyncio.gather(*(worker(clients[i // WORKERS_PER_CLIENT]) for i in range(workers)))
        finally:
            for client in clients:
                await client.aclose()
        return done

    def fetch_all(self, urls: Iterable[str],
                  on_result: Callable[[FetchResult], None] | None = None) -> dict[str, FetchResult]:
        """Synchronous entry point for stages (Airflow tasks and the CLI are not async).

        With on_result, results are handed over and only their reasons are kept; without it, all
        results (with bytes) are returned, which suits small batches and tests.
        """
        results: dict[str, FetchResult] = {}

        def keep(result: FetchResult) -> None:
            if on_result is not None:
                on_result(result)
                result = FetchResult(result.url, b"" if result.ok else None, result.final_url, result.reason,
                                     result.attempts)
            results[result.url] = result

        asyncio.run(self.fetch_many(urls, keep))
        return results
