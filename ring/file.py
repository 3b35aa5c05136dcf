"""Ring files: creation, validation on attach, and the locks that say who is alive.

A ring file is a 4 KiB shared header followed by the data area (``capacity``
bytes, a power of two).  It lives on a tmpfs (default ``/dev/shm/capture``).

Who holds what is decided by open-file-description locks (``F_OFD_SETLK``) on
single bytes of the file: byte 0 for the producer, byte ``1 + slot`` for each
reader, byte 64 while a reader registers its name.  The kernel drops these
locks when the holder dies, however it dies, so liveness never depends on a
PID that may have been reused; PIDs and heartbeats in the header are for
people and for detecting a *hung* (alive but stuck) process.
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import secrets
import stat
import struct
import time
from dataclasses import dataclass
from typing import Any

from ring._ringlib import ffi, lib
from common.errors import BadRingFile, RingDamaged, RingExists

HEADER_SIZE: int = lib.RING_HEADER_SIZE
MAX_READERS: int = lib.RING_MAX_READERS
DEFAULT_CAPACITY = 4 << 20
DEFAULT_MAX_FRAME = 16 << 20
MIN_CAPACITY = 64 << 10
MAX_CAPACITY = 1 << 31
DEFAULT_DIR = "/dev/shm/capture"

_LOCK_PRODUCER = 0
_LOCK_REGISTRY = 64
_FLOCK = struct.Struct("@hhqqi4x")  # struct flock on 64-bit Linux


def lock_byte_for_reader(slot: int) -> int:
    return 1 + slot


def default_path(name: str, directory: str = DEFAULT_DIR) -> str:
    """The ring file for a shard, e.g. ``default_path("shard-3")``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad ring name {name!r}")
    return os.path.join(directory, f"{name}.ring")


def ensure_dir(directory: str) -> None:
    """Create the ring directory 0700, or check the one that is there: every start.

    Refuses a symlink, a non-directory, a foreign owner, and any group or
    other permission bit: whoever can write the directory can unlink the
    live ring or take the shard's lock file in it (the lock lives here
    because only the owner can write here).  The error names the path, the
    mode and the owner, and is not repaired silently: a loose mode may mean
    someone else has been in it.
    """
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):
        raise BadRingFile(directory, "ring directory is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise BadRingFile(directory, "ring directory is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid() or mode & 0o077:
        raise BadRingFile(directory, f"ring directory has mode {mode:04o} and owner uid {st.st_uid}; "
                                     f"it must be 0700 and owned by uid {os.geteuid()} (chmod 0700 / "
                                     f"chown it, or remove it, after checking who else used it)")


@dataclass(frozen=True)
class RingInfo:
    capacity: int
    frag_limit: int
    max_frame: int
    ring_id: bytes
    created_ns: int


class RingFile:
    """An open, validated, mapped ring file.  Use :func:`create` / :func:`attach`."""

    def __init__(self, path: str, fd: int, writable: bool) -> None:
        self.path = path
        self.fd = fd
        self.writable = writable
        size = os.fstat(fd).st_size
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        self.base = ffi.from_buffer("uint8_t[]", self.mm, require_writable=writable)
        st = ffi.new("ring_stats_t *")
        lib.ring_get_stats(self.base, st)
        self.info = RingInfo(st.capacity, st.frag_limit, st.max_frame,
                             bytes(ffi.buffer(st.ring_id, 16)), st.created_ns)
        self.capacity = st.capacity
        self.mask = st.capacity - 1

    # -- locks ---------------------------------------------------------------
    def try_lock(self, byte: int) -> bool:
        """Take an exclusive OFD lock on one byte; False if someone holds it."""
        req = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, req)
            return True
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise

    def lock_wait(self, byte: int) -> None:
        fcntl.fcntl(self.fd, fcntl.F_OFD_SETLKW, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0))

    def unlock(self, byte: int) -> None:
        fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, byte, 1, 0))

    def is_locked(self, byte: int) -> bool:
        """True if another open file description holds the byte (i.e. its owner lives)."""
        res = fcntl.fcntl(self.fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0))
        return _FLOCK.unpack(res)[0] != fcntl.F_UNLCK

    def head(self, pos: Any, seq: Any) -> None:
        """The published (head, next_seq) pair into ``pos[0]``/``seq[0]``.

        Raises:
            RingDamaged: the seqlock stayed odd past its bound (see ring.c).
        """
        if lib.ring_head(self.base, pos, seq):
            raise RingDamaged(self.path, "head seqlock")

    def stats_struct(self) -> Any:
        st = ffi.new("ring_stats_t *")
        lib.ring_get_stats(self.base, st)
        return st

    def close(self) -> None:
        if self.fd < 0:
            return
        ffi.release(self.base)
        try:
            self.mm.close()
        except BufferError:
            pass  # views handed out are still alive; the GC unmaps later
        os.close(self.fd)  # drops every OFD lock this description held
        self.fd = -1

    def __enter__(self) -> "RingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RingFile({self.path!r}, capacity={self.capacity})"


def create(path: str, capacity: int = DEFAULT_CAPACITY, *, max_frame: int = DEFAULT_MAX_FRAME,
           start_position: int = 0) -> RingFile:
    """Create a ring file: 0600, O_EXCL|O_NOFOLLOW, version written last.

    ``start_position`` (a multiple of 8) lets tests start the byte counters
    near 2**32 or 2**63; production leaves it at 0.

    Raises:
        RingExists: the file (or a symlink by that name) is already there.
        ValueError: capacity not a power of two in [64 KiB, 2 GiB].
    """
    if capacity & (capacity - 1) or not MIN_CAPACITY <= capacity <= MAX_CAPACITY:
        raise ValueError(f"ring capacity {capacity} must be a power of two in "
                         f"[{MIN_CAPACITY}, {MAX_CAPACITY}]")
    if start_position % 8 or start_position < 0 or start_position > (1 << 63):
        raise ValueError("start_position must be a non-negative multiple of 8 below 2**63")
    frag_limit = capacity // 8 - lib.RING_FRAME_HEADER
    if max_frame < frag_limit:
        raise ValueError(f"max_frame {max_frame} is below the fragment limit {frag_limit}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise RingExists(path) from None
    try:
        os.fchmod(fd, 0o600)  # the umask cannot widen it, but be explicit
        os.ftruncate(fd, HEADER_SIZE + capacity)
        mm = mmap.mmap(fd, HEADER_SIZE + capacity, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        base = ffi.from_buffer("uint8_t[]", mm)
        lib.ring_init(base, capacity, frag_limit, max_frame, secrets.token_bytes(16),
                      time.time_ns(), os.geteuid(), start_position)
        ffi.release(base)
        mm.close()
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    return RingFile(path, fd, writable=True)


def attach(path: str, *, writable: bool = True) -> RingFile:
    """Open and validate an existing ring file.

    Refuses, with :class:`BadRingFile` saying what is wrong: a symlink, a
    directory or other non-regular file, a file owned by someone else, a mode
    that lets group or others in, a truncated file, bad magic, an unknown or
    unfinished version, and header fields that disagree with each other or
    with the file size.
    """
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BadRingFile(path, "no such ring file") from None
    except IsADirectoryError:
        raise BadRingFile(path, "is a directory, not a ring file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadRingFile(path, "is a symbolic link; refusing to follow it") from None
        if e.errno == errno.EACCES:
            raise BadRingFile(path, "permission denied") from None
        raise BadRingFile(path, f"cannot open: {e.strerror}") from None
    try:
        _validate(path, fd)
        return RingFile(path, fd, writable)
    except BaseException:
        os.close(fd)
        raise


def _validate(path: str, fd: int) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise BadRingFile(path, "not a regular file")
    if st.st_uid != os.geteuid():
        raise BadRingFile(path, f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    if st.st_mode & 0o077:
        raise BadRingFile(path, f"mode {stat.S_IMODE(st.st_mode):04o} lets group/others in; "
                                "ring files must be 0600")
    if st.st_size < HEADER_SIZE:
        raise BadRingFile(path, f"truncated: {st.st_size} bytes, the header alone is {HEADER_SIZE}")
    head = os.pread(fd, 128, 0)
    if len(head) < 128:
        raise BadRingFile(path, "truncated header")
    magic, version, header_size, capacity, max_readers, frame_header, frag_limit, max_frame = \
        struct.unpack_from("<QIIQIIQQ", head, 0)
    if magic != lib.RING_MAGIC:
        raise BadRingFile(path, f"bad magic {magic:#018x}: not a capture ring file")
    if version == 0:
        raise BadRingFile(path, "version not set: creation never finished")
    if version != lib.RING_VERSION:
        raise BadRingFile(path, f"unsupported ring version {version} (this build reads "
                                f"{lib.RING_VERSION}); stop the shard so its flusher drains the ring, "
                                "delete the ring file, and start again")
    if header_size != HEADER_SIZE or frame_header != lib.RING_FRAME_HEADER or max_readers != MAX_READERS:
        raise BadRingFile(path, f"header geometry {header_size}/{frame_header}/{max_readers} "
                                f"differs from this build's {HEADER_SIZE}/{lib.RING_FRAME_HEADER}/{MAX_READERS}")
    if capacity & (capacity - 1) or not MIN_CAPACITY <= capacity <= MAX_CAPACITY:
        raise BadRingFile(path, f"capacity {capacity} is not a power of two in range")
    if st.st_size != HEADER_SIZE + capacity:
        raise BadRingFile(path, f"file is {st.st_size} bytes but header + capacity is {HEADER_SIZE + capacity}"
                                " (truncated or extended)")
    if frag_limit != capacity // 8 - lib.RING_FRAME_HEADER or max_frame < frag_limit:
        raise BadRingFile(path, f"fragment limit {frag_limit} / max frame {max_frame} inconsistent "
                                f"with capacity {capacity}")
