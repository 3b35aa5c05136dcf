"""Segment file names, states and directories: where a segment lives, safely.

File names and states.  ``{root}/{venue}/shard-{N}/{YYYY-MM-DD}/`` holds
``{venue}-{N}-{YYYYMMDDTHHMMSSZ}-{first_seq:020d}`` + suffix, the date and
time being the UTC creation time:

* ``.seg.open``  being written; may end in a torn record after a crash
* ``.seg``       closed: fsynced, complete, renamed (the rename is the commit)
* ``.seg.zst``   a closed segment compressed with zstandard (one frame, with
                 content checksum); decompresses to exactly the ``.seg`` bytes
* ``.idx``       sidecar index of a closed segment (see ``flusher/segments/index.py``)
* ``.corrupt``   appended to a file found corrupt in the middle; kept for humans

Files are created 0600 with O_EXCL|O_NOFOLLOW and directories 0700; every
path component below the data directory is opened with O_NOFOLLOW, so a
symlink planted there is refused, never followed.
"""
from __future__ import annotations

import errno
import os
import re
import time
from typing import NamedTuple

from common.errors import UnsafePath

SUFFIX_OPEN = ".seg.open"
SUFFIX_SEG = ".seg"
SUFFIX_ZST = ".seg.zst"
SUFFIX_IDX = ".idx"
SUFFIX_CORRUPT = ".corrupt"
_NAME_RE = re.compile(r"^(?P<venue>.+)-(?P<shard>\d+)-(?P<time>\d{8}T\d{6}Z)-(?P<seq>\d{20})"
                      r"(?P<suffix>\.seg(?:\.open|\.zst)?)$")

FILE_MODE = 0o600
DIR_MODE = 0o700
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class SegmentName(NamedTuple):
    venue: str
    shard: int
    time: str
    first_seq: int
    suffix: str


def parse_name(name: str) -> SegmentName | None:
    m = _NAME_RE.match(os.path.basename(name))
    if not m:
        return None
    return SegmentName(m["venue"], int(m["shard"]), m["time"], int(m["seq"]), m["suffix"])


def segment_stem(venue: str, shard: int, created_ns: int, first_seq: int) -> str:
    t = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created_ns // 1_000_000_000))
    return f"{venue}-{shard}-{t}-{first_seq:020d}"


def day_dir_name(created_ns: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(created_ns // 1_000_000_000))


def shard_dir(root: str, venue: str, shard: int) -> str:
    return os.path.join(root, venue, f"shard-{shard}")


def with_path(exc: OSError, directory: str) -> OSError:
    """The same error naming the full path: a call relative to a directory
    descriptor names only the last component (``[Errno 30] ...: 'kraken'``)."""
    name = exc.filename
    if isinstance(name, str) and not os.path.isabs(name):
        name = os.path.join(directory, name)
    return OSError(exc.errno, exc.strerror, name)      # the same subclass (PermissionError, ...)


def open_dir(root: str, parts: list[str], create: bool = True) -> int:
    """Open root/parts... as a directory fd, creating missing parts 0700.

    ``root`` is the configured data directory (taken as given); every part
    below it is opened with O_NOFOLLOW, so a symlink there raises UnsafePath.
    """
    try:
        fd = os.open(root, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    except NotADirectoryError as exc:
        raise UnsafePath(root, 0, "the data directory is not a directory") from exc
    try:
        for i, part in enumerate(parts):
            here = os.path.join(root, *parts[:i])
            if create:
                try:
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                    os.fsync(fd)        # the new directory's name must survive a power loss
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise with_path(exc, here) from exc
            try:
                nfd = os.open(part, os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(os.path.join(root, *parts[:i + 1]), 0,
                                     "is a symlink or not a directory; refusing to follow it") from exc
                raise with_path(exc, here) from exc
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def list_segments(directory: str, venue: str | None = None, shard: int | None = None,
                  include_open: bool = True) -> list[str]:
    """Segment files under directory (recursively), oldest first.

    When a segment exists both as ``.seg`` and ``.seg.zst`` (a crash during
    compression), the ``.seg`` is listed.  Corrupt and temporary files are not.
    """
    found: dict[tuple, tuple[SegmentName, str]] = {}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        dirnames.sort()
        for fn in filenames:
            sn = parse_name(fn)
            if sn is None or (venue is not None and sn.venue != venue):
                continue
            if shard is not None and sn.shard != shard:
                continue
            if sn.suffix == SUFFIX_OPEN and not include_open:
                continue
            key = (sn.venue, sn.shard, sn.time, sn.first_seq, dirpath)
            prev = found.get(key)
            rank = {SUFFIX_SEG: 0, SUFFIX_OPEN: 1, SUFFIX_ZST: 2}[sn.suffix]
            if prev is None or rank < {SUFFIX_SEG: 0, SUFFIX_OPEN: 1, SUFFIX_ZST: 2}[prev[0].suffix]:
                found[key] = (sn, os.path.join(dirpath, fn))
    items = sorted(found.values(), key=lambda v: (v[0].venue, v[0].shard, v[0].time, v[0].first_seq))
    return [p for _, p in items]


__all__ = [
    "SUFFIX_OPEN", "SUFFIX_SEG", "SUFFIX_ZST", "SUFFIX_IDX", "SUFFIX_CORRUPT", "FILE_MODE", "DIR_MODE",
    "UnsafePath", "SegmentName", "parse_name", "with_path", "segment_stem", "day_dir_name", "shard_dir", "open_dir",
    "list_segments",
]
