"""Run the fault proxy's API on loopback, as `toxiproxy-server` would be run:

    .venv/bin/python -m chaos [--port 8474]

then drive it with any Toxiproxy client (curl, toxiproxy-cli, chaos.client). Stop with
Ctrl-C or SIGTERM; every proxy it made goes with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from chaos.api import ChaosApi, serve_http
from sparkops import defaults


async def serve(host: str, port: int) -> None:
    api = ChaosApi()
    server = await serve_http(api, host, port)
    print(f"chaos proxy API on http://{host}:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await api.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=defaults.TOXIPROXY_API_PORT)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve("127.0.0.1", args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
