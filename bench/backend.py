"""A backend for the balancer benchmarks: answers every request with its name after `--delay`.

python -m bench.backend --port 9001 --name b1 [--delay 0.01]
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    body = args.name.encode()

    async def handle(request: web.Request) -> web.Response:
        if args.delay:
            await asyncio.sleep(args.delay)
        return web.Response(body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
