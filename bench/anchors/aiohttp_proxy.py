"""A bare aiohttp reverse proxy: what a minimal Python proxy costs, with no auth and no limits.

``python -m bench.anchors.aiohttp_proxy --port P --upstream http://127.0.0.1:U`` (uvloop). Streams
request and response bodies chunk by chunk, keep-alive to the upstream, hop-by-hop headers dropped.
"""

from __future__ import annotations

import argparse

import aiohttp
import uvloop
from aiohttp import web

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"})


def create_app(upstream: str) -> web.Application:
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["http"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512), timeout=aiohttp.ClientTimeout(total=None)
        )

    async def stop(app: web.Application) -> None:
        await app["http"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        data = await request.read() if request.body_exists else None
        async with app["http"].request(
            request.method,
            upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=data,
            allow_redirects=False,
            auto_decompress=False,
        ) as up:
            resp = web.StreamResponse(status=up.status)
            for k, v in up.headers.items():
                if k.lower() not in _HOP:
                    resp.headers.add(k, v)
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.anchors.aiohttp_proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(create_app(args.upstream.rstrip("/")), host="127.0.0.1", port=args.port, access_log=None)


if __name__ == "__main__":
    main()
