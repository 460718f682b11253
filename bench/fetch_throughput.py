"""Avatar fetch throughput: the safe fetcher at several concurrency levels against a plain
sequential httpx loop, both measured in the same run against the same local HTTP server.

The server (asyncio, so that it is not the bottleneck) runs in a separate process on 127.0.0.1
and serves N distinct 200x200 JPEGs (about 27 KB), each after
a fixed delay that stands in for a CDN's latency (``--latency-ms``, default 20). The safe fetcher
does all its work per URL (address check, pinned connection, streamed byte cap); it reaches the
loopback server through the constructor keyword that only tests and this benchmark pass. The
per-host rate limit is off here (every URL is on one host); with it on, it is the bound.

    .venv/bin/python bench/fetch_throughput.py --urls 400 --concurrency 1 4 16 64
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def serve(port_queue: multiprocessing.Queue, latency: float, count: int) -> None:
    from PIL import Image

    bodies = []
    for i in range(count):
        buf = io.BytesIO()
        noise = Image.frombytes("RGB", (200, 200), random.Random(i).randbytes(200 * 200 * 3))
        noise.save(buf, "JPEG", quality=80)  # noise: a realistic 20-40 KB avatar, not a few hundred bytes
        bodies.append(buf.getvalue())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                await asyncio.sleep(latency)
                body = bodies[int(path.rsplit("/", 1)[1].split(".")[0]) % count]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(body)
                             + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def run() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(run())


def main() -> None:
    import httpx

    from pipeline.config import FetchParams
    from pipeline.images.fetch import SafeFetcher

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()

    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(queue, args.latency_ms / 1000, args.urls), daemon=True)
    server.start()
    port = queue.get(timeout=30)
    try:
        def urls(tag: str) -> list[str]:  # distinct URLs per measurement: nothing is cached
            return [f"http://127.0.0.1:{port}/{tag}/{i}.jpg" for i in range(args.urls)]

        started = time.perf_counter()
        total = 0
        with httpx.Client() as client:
            for url in urls("seq"):
                response = client.get(url)
                response.raise_for_status()
                total += len(response.content)
        baseline = args.urls / (time.perf_counter() - started)
        print(f"server latency {args.latency_ms:g} ms per avatar, {args.urls} avatars, {total / args.urls / 1024:.1f} KB each")
        print(f"{'fetcher':<28} {'avatars/s':>10} {'vs sequential':>14}")
        print(f"{'sequential httpx loop':<28} {baseline:>10.1f} {1.0:>13.2f}x")
        for level in args.concurrency:
            params = replace(FetchParams(), concurrency=level, per_host_rate=0.0)
            fetcher = SafeFetcher(params, unsafe_allow_loopback_hops=1)  # benchmark-only: the server is local
            started = time.perf_counter()
            results = fetcher.fetch_all(urls(f"c{level}"))
            rate = args.urls / (time.perf_counter() - started)
            failed = [r.reason for r in results.values() if not r.ok]
            assert not failed, failed[:3]
            print(f"{'safe fetcher, concurrency ' + str(level):<28} {rate:>10.1f} {rate / baseline:>13.2f}x", flush=True)
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
