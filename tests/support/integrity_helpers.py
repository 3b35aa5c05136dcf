"""Shared by the Kalshi, Futures and integrity end-to-end tests: key files,
what the simulator received, what the ring holds per symbol."""
from __future__ import annotations

import os

import orjson
from cryptography.hazmat.primitives import serialization

import ring
from receiver_helpers import CONTROL, DATA, cleanup, make_ring_dir

TRANSPORTS = ["picows", "websockets"]


def new_ring() -> tuple[str, str]:
    d = make_ring_dir()
    p = os.path.join(d, "shard-0.ring")
    ring.create(p, 16 << 20).close()
    return d, p


def pem(private_key, fmt: str = "pkcs8") -> bytes:
    f = (serialization.PrivateFormat.PKCS8 if fmt == "pkcs8"
         else serialization.PrivateFormat.TraditionalOpenSSL)
    return private_key.private_bytes(serialization.Encoding.PEM, f, serialization.NoEncryption())


def write_key(path, private_key, mode: int = 0o600) -> bytes:
    data = pem(private_key)
    path.write_bytes(data)
    path.chmod(mode)
    return data


def key_material(pem_bytes: bytes) -> list[str]:
    """Substrings that must never appear in a log: every base64 line of the
    PEM body (and the whole body without newlines)."""
    lines = [ln for ln in pem_bytes.decode().splitlines() if ln and not ln.startswith("-----")]
    return lines + ["".join(lines)]


def received(records) -> list[dict]:
    """Every JSON message the receiver sent, over all simulator connections."""
    out = []
    for r in records:
        for m in r.received:
            try:
                out.append(orjson.loads(m))
            except orjson.JSONDecodeError:
                pass
    return out


def controls(msgs, kind: str | None = None) -> list[dict]:
    out = []
    for m in msgs:
        if m.type == CONTROL:
            c = orjson.loads(m.payload)
            if kind is None or c.get("kind") == kind:
                out.append(c)
    return out


def data_json(msgs) -> list[dict]:
    out = []
    for m in msgs:
        if m.type == DATA:
            try:
                out.append(orjson.loads(m.payload))
            except orjson.JSONDecodeError:
                pass
    return out


def total_sent(records) -> int:
    return sum(r.count for r in records)


def data_in_ring(col) -> int:
    return sum(1 for m in col.snapshot() if m.type == DATA)


__all__ = ["TRANSPORTS", "new_ring", "pem", "write_key", "key_material", "received", "controls",
           "data_json", "total_sent", "data_in_ring", "cleanup"]
