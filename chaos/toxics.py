"""Toxics, by Toxiproxy's names and attributes (https://github.com/Shopify/toxiproxy#toxics).

A toxic acts on one direction of a connection: `downstream` (server to client, Toxiproxy's
default) or `upstream` (client to server). `toxicity` is the chance that it applies to a
given connection's direction, decided once per connection, as Toxiproxy does per link.

Data toxics change the bytes in flight (latency, bandwidth, slicer, limit_data, timeout's
black hole); time toxics act on the connection as a whole from the moment they apply
(timeout closes it, reset_peer resets it); slow_close delays the close after end of stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STREAMS = ("upstream", "downstream")

# type -> {attribute: default}; units as Toxiproxy's: ms, KB/s, bytes, microseconds (slicer).
ATTRIBUTES: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
}


class ToxicError(ValueError):
    """A toxic definition is malformed (answered with 400, nothing changed)."""


@dataclass
class Toxic:
    type: str
    name: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_json(cls, body: dict) -> Toxic:
        if not isinstance(body, dict):
            raise ToxicError("a toxic is a JSON object")
        kind = body.get("type")
        if kind not in ATTRIBUTES:
            raise ToxicError(f"unknown toxic type {kind!r}; known: {', '.join(ATTRIBUTES)}")
        stream = body.get("stream", "downstream")
        if stream not in STREAMS:
            raise ToxicError(f"stream must be upstream or downstream; got {stream!r}")
        toxicity = body.get("toxicity", 1.0)
        if not isinstance(toxicity, (int, float)) or not 0 <= toxicity <= 1:
            raise ToxicError(f"toxicity must be a number from 0 to 1; got {toxicity!r}")
        toxic = cls(
            type=kind,
            name=body.get("name") or f"{kind}_{stream}",
            stream=stream,
            toxicity=float(toxicity),
            attributes=dict(ATTRIBUTES[kind]),
        )
        toxic.update_attributes(body.get("attributes") or {})
        return toxic

    def update_attributes(self, attributes: dict) -> None:
        if not isinstance(attributes, dict):
            raise ToxicError("attributes is a JSON object")
        for key, value in attributes.items():
            if key not in ATTRIBUTES[self.type]:
                raise ToxicError(f"{self.type} has no attribute {key!r}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ToxicError(f"{self.type}.{key} must be a non-negative integer")
        self.attributes.update(attributes)
