"""The subset of Toxiproxy's HTTP API (v2) the experiments use, served on loopback.

    GET    /version
    POST   /reset                               enable every proxy, remove every toxic
    GET    /proxies                             {name: proxy}
    POST   /proxies                             {name, listen, upstream, enabled?} -> 201
    GET    /proxies/{proxy}
    POST   /proxies/{proxy}  (or PATCH)         {enabled?, upstream?}
    DELETE /proxies/{proxy}                     -> 204
    GET    /proxies/{proxy}/toxics
    POST   /proxies/{proxy}/toxics              {name?, type, stream?, toxicity?, attributes}
    GET    /proxies/{proxy}/toxics/{toxic}
    POST   /proxies/{proxy}/toxics/{toxic}  (or PATCH)   {toxicity?, attributes?}
    DELETE /proxies/{proxy}/toxics/{toxic}      -> 204

Errors answer {"error": ..., "status": ...} as Toxiproxy does; bad input changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading

from chaos.proxy import Proxy, ProxyError
from chaos.toxics import Toxic, ToxicError

VERSION = "sparkops-chaos 1 (toxiproxy api v2 subset)"
MAX_BODY = 64 * 1024


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ChaosApi:
    """The proxies and their toxics, changed only through `handle` (on the event loop)."""

    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}

    async def handle(self, method: str, path: str, body) -> tuple[int, object]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        try:
            return await self._route(method, parts, body)
        except (ProxyError, ToxicError) as exc:
            raise ApiError(400, str(exc)) from None

    async def _route(self, method: str, parts: list[str], body) -> tuple[int, object]:
        match (method, parts):
            case ("GET", ["version"]):
                return 200, {"version": VERSION}
            case ("POST", ["reset"]):
                for proxy in self.proxies.values():
                    proxy.toxics.clear()
                    proxy.changed()
                    proxy.enabled = True
                    await proxy.start()
                return 204, None
            case ("GET", ["proxies"]):
                return 200, {name: p.to_json() for name, p in self.proxies.items()}
            case ("POST", ["proxies"]):
                return 201, (await self._create(_object(body))).to_json()
            case ("GET", ["proxies", name]):
                return 200, self._proxy(name).to_json()
            case ("POST" | "PATCH", ["proxies", name]):
                return 200, (await self._update(self._proxy(name), _object(body))).to_json()
            case ("DELETE", ["proxies", name]):
                await self._proxy(name).stop()
                del self.proxies[name]
                return 204, None
            case ("GET", ["proxies", name, "toxics"]):
                return 200, [t.to_json() for t in self._proxy(name).toxics.values()]
            case ("POST", ["proxies", name, "toxics"]):
                proxy = self._proxy(name)
                toxic = Toxic.from_json(_object(body))
                if toxic.name in proxy.toxics:
                    raise ApiError(409, "toxic already exists")
                proxy.toxics[toxic.name] = toxic
                proxy.changed()
                return 200, toxic.to_json()
            case ("GET", ["proxies", name, "toxics", toxic]):
                return 200, self._toxic(name, toxic).to_json()
            case ("POST" | "PATCH", ["proxies", name, "toxics", toxic]):
                found, body = self._toxic(name, toxic), _object(body)
                toxicity = body.get("toxicity", found.toxicity)
                checked = Toxic.from_json({**found.to_json(), "toxicity": toxicity})
                checked.update_attributes(body.get("attributes") or {})
                found.toxicity, found.attributes = checked.toxicity, checked.attributes
                self.proxies[name].changed()
                return 200, found.to_json()
            case ("DELETE", ["proxies", name, "toxics", toxic]):
                self._toxic(name, toxic)
                del self.proxies[name].toxics[toxic]
                self.proxies[name].changed()
                return 204, None
        raise ApiError(404, f"no route {method} /{'/'.join(parts)}")

    async def _create(self, body: dict) -> Proxy:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "give the proxy a name")
        if name in self.proxies:
            raise ApiError(409, "proxy already exists")
        for field in ("listen", "upstream"):
            if not isinstance(body.get(field), str):
                raise ApiError(400, f"give {field} as HOST:PORT")
        proxy = Proxy(name, body["listen"], body["upstream"], bool(body.get("enabled", True)))
        try:
            await proxy.start()
        except OSError as exc:
            raise ApiError(409, f"cannot listen on {proxy.listen}: {exc}") from None
        self.proxies[name] = proxy
        return proxy

    async def _update(self, proxy: Proxy, body: dict) -> Proxy:
        if "upstream" in body:
            upstream = body["upstream"]
            probe = Proxy(proxy.name, proxy.listen, upstream, enabled=False)  # validates
            proxy.upstream, proxy.upstream_addr = probe.upstream, probe.upstream_addr
        if "enabled" in body:
            proxy.enabled = bool(body["enabled"])
            await (proxy.start() if proxy.enabled else proxy.stop())
        return proxy

    def _proxy(self, name: str) -> Proxy:
        if name not in self.proxies:
            raise ApiError(404, "proxy not found")
        return self.proxies[name]

    def _toxic(self, proxy: str, name: str) -> Toxic:
        toxics = self._proxy(proxy).toxics
        if name not in toxics:
            raise ApiError(404, "toxic not found")
        return toxics[name]

    async def close(self) -> None:
        for proxy in self.proxies.values():
            await proxy.stop()


def _object(body) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object")
    return body


async def serve_http(api: ChaosApi, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP/1.1 server for the API: one request per connection, JSON both ways."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, payload = await _one_request(api, reader)
        except ApiError as exc:
            status, payload = exc.status, {"error": str(exc), "status": exc.status}
        except (asyncio.IncompleteReadError, ValueError) as exc:
            status, payload = 400, {"error": f"bad request: {exc}", "status": 400}
        body = b"" if payload is None else json.dumps(payload).encode()
        reason = {200: "OK", 201: "Created", 204: "No Content"}.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(on_client, host, port)


async def _one_request(api: ChaosApi, reader: asyncio.StreamReader) -> tuple[int, object]:
    line = (await reader.readuntil(b"\r\n")).decode("latin-1").split()
    if len(line) != 3:
        raise ApiError(400, "bad request line")
    method, path, _ = line
    length = 0
    while (header := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length > MAX_BODY:
        raise ApiError(413, "body too large")
    raw = await reader.readexactly(length) if length else b""
    try:
        body = json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"body is not JSON: {exc}") from None
    return await api.handle(method.upper(), path, body)


class ChaosServer:
    """The API and its proxies on an event loop in a background thread (tests, scripts)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.api = ChaosApi()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ChaosServer:
        self._thread.start()
        self._server = self._call(serve_http(self.api, self.host, self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            await self.api.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:  # the connections' pumps and watchers
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        if self._thread.is_alive():
            self._call(shut())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> ChaosServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
