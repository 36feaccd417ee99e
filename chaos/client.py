"""A client of Toxiproxy's HTTP API: works against chaos.api and a real Toxiproxy alike."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx


class ToxiproxyError(RuntimeError):
    pass


class Toxiproxy:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.http = httpx.Client(base_url=url, timeout=timeout)

    def call(self, method: str, path: str, body: dict | None = None):
        answer = self.http.request(method, path, json=body)
        if answer.status_code >= 400:
            raise ToxiproxyError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json() if answer.content else None

    def create(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> ProxyHandle:
        data = self.call("POST", "/proxies", {"name": name, "listen": listen,
                                               "upstream": upstream})  # fmt: skip
        return ProxyHandle(self, name, data["listen"])

    def proxies(self) -> dict:
        return self.call("GET", "/proxies")

    def reset(self) -> None:
        self.call("POST", "/reset")

    def close(self) -> None:
        self.http.close()


@dataclass
class ProxyHandle:
    api: Toxiproxy
    name: str
    listen: str

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def add(self, kind: str, stream: str = "downstream", toxicity: float = 1.0,
            name: str | None = None, **attributes: int) -> str:  # fmt: skip
        name = name or f"{kind}_{stream}"
        self.api.call("POST", f"/proxies/{self.name}/toxics", {
            "name": name, "type": kind, "stream": stream, "toxicity": toxicity,
            "attributes": attributes,
        })  # fmt: skip
        return name

    def remove(self, name: str) -> None:
        self.api.call("DELETE", f"/proxies/{self.name}/toxics/{name}")

    def toxics(self) -> list[dict]:
        return self.api.call("GET", f"/proxies/{self.name}/toxics")

    @contextlib.contextmanager
    def toxic(self, kind: str, streams=("downstream",), toxicity: float = 1.0,
              **attributes: int) -> Iterator[None]:  # fmt: skip
        """The toxic on each of `streams` for the block's duration."""
        names = []
        try:
            for stream in streams:
                names.append(self.add(kind, stream, toxicity, **attributes))
            yield
        finally:
            for name in names:
                self.remove(name)

    def set_enabled(self, enabled: bool) -> None:
        self.api.call("POST", f"/proxies/{self.name}", {"enabled": enabled})

    def delete(self) -> None:
        self.api.call("DELETE", f"/proxies/{self.name}")
