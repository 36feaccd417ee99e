"""`python -m app.serve`: uvicorn's command line, with a shutdown that loses no connection
when the listening socket outlives the process (socket activation, spark-app.socket).

On SIGTERM uvicorn stops accepting and then closes every connection that has no request in
progress. A connection accepted just before (a client's handshake done, its request bytes
not yet read by the event loop) counts as idle and is closed with its request unread: the
client reads a reset (1 in about 240 requests over 5 restarts at 80 requests/s here,
tests/runbooks/test_zero_downtime.py). So, between the two, this waits
APP_SHUTDOWN_ACCEPT_GRACE_SECONDS for such connections' requests to arrive and start; they
then finish within the graceful shutdown like any request in flight. Connections arriving
meanwhile wait in the socket's backlog for the next process.
"""

from __future__ import annotations

import asyncio
import importlib
import socket

from uvicorn.server import Server

from sparkops import defaults


class GracefulServer(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting; uvicorn's own shutdown closes them again (no-op)
        await asyncio.sleep(defaults.APP_SHUTDOWN_ACCEPT_GRACE_SECONDS)
        await super().shutdown(sockets)


def main() -> None:
    # The module (`uvicorn.main` as an attribute is the command, which the package exports).
    cli = importlib.import_module("uvicorn.main")
    cli.Server = GracefulServer  # the class its run() instantiates
    cli.main()


if __name__ == "__main__":
    main()
