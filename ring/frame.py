"""The frame format shared by the ring and the segment files.

A frame is a 32-byte header followed by the payload, padded to 8 bytes::

    offset size field
         0    4 size     header + payload bytes, unpadded
         4    4 seq_lo   low 32 bits of seq (bytes 0..8 = the commit word)
         8    8 seq      sequence number, +1 per frame for the ring's life
        16    8 ts_ns    receive time, ns since the Unix epoch
        24    1 type     FrameType
        25    1 flags    FrameFlags
        26    2 conn     connection id inside the shard
        28    4 crc      CRC32C (Castagnoli) of bytes 0..28, then the payload

All integers little endian.  Padding frames (type 3) fill the end of the ring
and are never written to segment files.
"""
from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from ring._ringlib import ffi, lib

HEADER = lib.RING_FRAME_HEADER
_HDR = struct.Struct("<IIQqBBHI")
assert _HDR.size == HEADER


class FrameType(enum.IntEnum):
    DATA = lib.RING_T_DATA
    CONTROL = lib.RING_T_CONTROL
    PADDING = lib.RING_T_PADDING
    FRAG_BEGIN = lib.RING_T_FRAG_BEGIN
    FRAG_MIDDLE = lib.RING_T_FRAG_MIDDLE
    FRAG_END = lib.RING_T_FRAG_END


class FrameFlags(enum.IntFlag):
    BINARY = lib.RING_F_BINARY      # the WebSocket message was binary, not text
    ABORTED = lib.RING_F_ABORTED    # on FRAG_END: the fragmented frame was dropped


FRAGMENT_TYPES = frozenset({FrameType.FRAG_BEGIN, FrameType.FRAG_MIDDLE, FrameType.FRAG_END})


class FrameHeader(NamedTuple):
    size: int
    seq: int
    ts_ns: int
    type: int
    flags: int
    conn: int
    crc: int

    @property
    def padded(self) -> int:
        return align8(self.size)


def align8(n: int) -> int:
    return (n + 7) & ~7


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli), hardware-accelerated where the CPU has it."""
    buf = ffi.from_buffer(data)
    return lib.ring_crc32c(crc, buf, len(buf))


def frame_crc(frame: bytes | bytearray | memoryview) -> int:
    """CRC of a contiguous frame (header then payload), as stored at byte 28."""
    buf = ffi.from_buffer(frame)
    return lib.ring_frame_crc(buf, len(buf))


def encode(payload: bytes | bytearray | memoryview, seq: int, ts_ns: int,
           type: int = FrameType.DATA, flags: int = 0, conn: int = 0) -> bytes:
    """One frame, padded to 8 bytes, with its CRC: exactly what the ring holds."""
    size = HEADER + len(payload)
    head = bytearray(_HDR.pack(size, seq & 0xFFFFFFFF, seq, ts_ns, type, flags, conn, 0))
    body = head + bytes(payload)
    crc = frame_crc(body)
    struct.pack_into("<I", body, 28, crc)
    body += b"\0" * (align8(size) - size)
    return bytes(body)


def decode_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> FrameHeader:
    size, seq_lo, seq, ts, typ, flags, conn, crc = _HDR.unpack_from(buf, offset)
    return FrameHeader(size, seq, ts, typ, flags, conn, crc)
