"""The one exception tree of capture.

Every error capture raises on purpose is defined here, whatever layer raises
it, so a caller can catch by meaning (``except PublishError``) without
importing the layer that raised it, and this drawing stays the whole truth::

    CaptureError                     base of everything capture raises on purpose
    ├── RingError                    shared-memory ring
    │   ├── BadRingFile              attach refused: path, reason
    │   ├── RingExists               create refused: the file is already there (path)
    │   ├── ProducerBusy             a live producer already holds the ring (path, pid)
    │   ├── ReaderBusy               a live reader already holds that name (path, name, pid)
    │   ├── NoReaderSlot             all reader slots are taken (path, slots)
    │   ├── Lapped                   an untethered reader was overwritten (positions, sequences)
    │   ├── CorruptFrame             a frame failed validation (where, position, sequence, reason)
    │   └── RingDamaged              shared state never settled: a writer died mid-update (path, what)
    ├── SegmentError                 segment files on disk (path, offset, reason)
    │   ├── CorruptSegment           a record failed its checks
    │   ├── NotASegment              no segment magic
    │   ├── TruncatedSegment         ends inside its header or a record of a closed segment
    │   ├── UnsupportedVersion       a format version this code does not know (version)
    │   └── UnsafePath               a path component is a symlink or not a directory
    ├── NoData                       reading back: no segments under a path, or none in a range (path, reason)
    ├── ExportError                  an export cannot write where asked (path, reason)
    ├── ConfigError                  configuration (path, key, reason)
    │   ├── UnknownConfigKey         a key the table does not have (allowed)
    │   └── UnsafeStreamConfig       a stream setting that would lose or duplicate data
    ├── VenueError                   exchange protocol
    │   ├── BookFormatError          a book frame unusable for checksumming (reason, symbol)
    │   ├── KeyFileError             Kalshi private key file refused (path, reason)
    │   └── DiscoveryError           a REST listing kept failing (url, attempts, reason)
    │       └── BadPage              a response that is not a page of the listing
    ├── TransportError               WebSocket transport
    │   └── ConnectFailed            connect/handshake failed (url, reason, status)
    ├── ConnectionStateError         an event a connection state does not allow (conn, state, event)
    ├── PinningError                 pinning or memory locking
    │   ├── NoSuchCore               cores asked for vs. available
    │   ├── AffinityNotApplied       requested vs. what the OS reports afterwards
    │   └── MemoryLockDenied         mlockall refused (errno, limit = RLIMIT_MEMLOCK)
    ├── PublishError                 NATS JetStream
    │   ├── NatsUnreachable          no server answered (servers, reason)
    │   │   └── NatsTLSError         the TLS handshake failed
    │   ├── NatsAuthError            credentials refused (servers, reason)
    │   ├── StreamMismatch           the server's stream cannot be made to match (stream, key, reason)
    │   ├── NatsServerError          the embedded nats-server failed (reason, log)
    │   └── PipelineClosed           put after the ack pipeline closed
    ├── ShardBusy                    another supervisor holds the shard's lock (path, pid)
    └── SimulatorError               the exchange simulator could not start or was misused

Errors carry the data a caller needs (paths, positions, sequences) as
attributes, not only in the message.  Exceptions used only as internal
control flow inside one module (a drain deadline, a full plan) stay private
to that module and never escape it.
"""
from __future__ import annotations

import errno as _errno
import os
import resource
from typing import Any

from common.redact import redact, redact_urls


class CaptureError(Exception):
    """Base class of every error capture raises on purpose."""


# -- ring -------------------------------------------------------------------------

class RingError(CaptureError):
    """Something is wrong with a shared-memory ring."""


class BadRingFile(RingError):
    """A ring file was refused at attach time."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class RingExists(RingError):
    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: ring file already exists")
        self.path = path


class ProducerBusy(RingError):
    def __init__(self, path: str, pid: int) -> None:
        super().__init__(f"{path}: a live producer (pid {pid}) holds this ring")
        self.path = path
        self.pid = pid


class ReaderBusy(RingError):
    def __init__(self, path: str, name: str, pid: int) -> None:
        super().__init__(f"{path}: reader {name!r} is held by live pid {pid}")
        self.path = path
        self.name = name
        self.pid = pid


class NoReaderSlot(RingError):
    def __init__(self, path: str, slots: int) -> None:
        super().__init__(f"{path}: all {slots} reader slots are in use")
        self.path = path
        self.slots = slots


class Lapped(RingError):
    """An untethered reader fell more than a ring behind the producer.

    ``position``/``sequence`` say where the reader was (what it missed from);
    ``resume_position``/``resume_sequence`` say where the oldest frame still in
    the ring starts (see :meth:`ring.Reader.resume_oldest`).
    """

    def __init__(self, name: str, position: int, sequence: int,
                 resume_position: int, resume_sequence: int) -> None:
        super().__init__(
            f"reader {name!r} lapped at position {position} (sequence {sequence}); "
            f"oldest frame in the ring: sequence {resume_sequence} at {resume_position}")
        self.name = name
        self.position = position
        self.sequence = sequence
        self.resume_position = resume_position
        self.resume_sequence = resume_sequence


class CorruptFrame(RingError):
    def __init__(self, where: str, position: int, sequence: int, reason: str) -> None:
        super().__init__(f"{where}: corrupt frame at position {position} "
                         f"(sequence {sequence}): {reason}")
        self.where = where
        self.position = position
        self.sequence = sequence
        self.reason = reason


class RingDamaged(RingError):
    """Shared state another process writes never became consistent within
    its bound: a writer died or stopped in the middle of an update.

    ``what`` names the state (e.g. ``"head seqlock"``).  The ring's data is
    intact; the next producer to open the ring repairs the state.
    """

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"{path}: ring damaged: the {what} did not settle (a producer died or "
                         "stopped inside its update); restart the receiver: its producer repairs it")
        self.path = path
        self.what = what


# -- segment files ----------------------------------------------------------------

class SegmentError(CaptureError):
    """A segment file problem; names the file and the byte offset."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class CorruptSegment(SegmentError):
    """A record of the file failed its checks (CRC, size, type, sequence)."""


class NoData(CaptureError):
    """Nothing to read back: no segment files where asked, or none in the range.

    ``path`` is what was searched; ``reason`` says what was asked for (venue,
    shard, time range) and, when there is data elsewhere, what is there.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class NotASegment(SegmentError):
    """The file does not start with the segment magic."""


class TruncatedSegment(SegmentError):
    """The file ends inside its header or inside a record of a closed segment."""


class UnsupportedVersion(SegmentError):
    """The segment was written by a format version this code does not know."""

    def __init__(self, path: str, offset: int, version: int, known: int) -> None:
        super().__init__(path, offset, f"unsupported segment format version {version} "
                                       f"(this reader knows {known})")
        self.version = version
        self.known = known


class UnsafePath(SegmentError):
    """A path component is a symlink or not a directory; refused, not followed."""


# -- configuration ------------------------------------------------------------------

class ExportError(CaptureError):
    """An export cannot write where it was asked to (names the path)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ConfigError(CaptureError):
    """A configuration problem; names the file and the key."""

    def __init__(self, path: str | None, key: str | None, reason: str) -> None:
        where = path or "<config>"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


class UnknownConfigKey(ConfigError):
    def __init__(self, path: str | None, key: str, allowed: set[str]) -> None:
        super().__init__(path, key, f"unknown setting (allowed: {', '.join(sorted(allowed))})")
        self.allowed = frozenset(allowed)


class UnsafeStreamConfig(ConfigError):
    """A stream setting that would lose (or duplicate) data."""


# -- venues and their connections -----------------------------------------------------

class VenueError(CaptureError):
    """An exchange protocol problem."""


class BookFormatError(VenueError):
    """A book frame or level could not be used for checksumming."""

    def __init__(self, reason: str, symbol: str | None = None) -> None:
        super().__init__(f"{symbol or '?'}: {reason}")
        self.reason = reason
        self.symbol = symbol


class KeyFileError(VenueError):
    """The Kalshi private key file was refused.  Never carries key material.

    Attributes:
        path: the file named in the config.
        reason: what is wrong (missing, permissions, not a key, ...).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"Kalshi key file {path}: {reason}")
        self.path = path
        self.reason = reason


class DiscoveryError(VenueError):
    """Discovery failed; nothing partial is returned.

    Attributes: ``url`` (the page that failed), ``attempts``, ``reason``.
    """

    def __init__(self, url: str, attempts: int, reason: str) -> None:
        super().__init__(f"discovery {url}: {reason} (after {attempts} attempt(s))")
        self.url = url
        self.attempts = attempts
        self.reason = reason


class BadPage(DiscoveryError):
    """A response body that is not a valid page of the venue's listing."""

    def __init__(self, reason: str, url: str = "", attempts: int = 0) -> None:
        super().__init__(url or "<page>", attempts, reason)


class TransportError(CaptureError):
    """A WebSocket transport problem."""


class ConnectFailed(TransportError):
    """Opening the connection failed.

    Attributes: ``url``; ``status`` (the HTTP status of a refused handshake,
    e.g. 429, or None for network errors and timeouts); ``reason``.
    """

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


class ConnectionStateError(CaptureError):
    """An event arrived in a state that does not allow it (a bug, not a venue problem).

    ``state`` and ``event`` are the lifecycle's enum members.
    """

    def __init__(self, conn: str, state: Any, event: Any) -> None:
        super().__init__(f"{conn}: event {event.value!r} not allowed in state {state.value!r}")
        self.conn = conn
        self.state = state
        self.event = event


class PinningError(CaptureError):
    """Pinning the process or locking its memory failed."""


class NoSuchCore(PinningError):
    def __init__(self, cores: list[int], available: list[int]) -> None:
        super().__init__(f"CPU core(s) {cores} do not exist or are not available to this process; "
                         f"available cores: {available}")
        self.cores = cores
        self.available = available


class AffinityNotApplied(PinningError):
    def __init__(self, requested: list[int], actual: list[int]) -> None:
        super().__init__(f"asked to pin to cores {requested}, but the OS reports affinity {actual}")
        self.requested = requested
        self.actual = actual


class MemoryLockDenied(PinningError):
    def __init__(self, err: int, limit: tuple[int, int]) -> None:
        soft, hard = (("unlimited" if v == resource.RLIM_INFINITY else f"{v} bytes") for v in limit)
        super().__init__(f"mlockall not permitted ({_errno.errorcode.get(err, err)}: {os.strerror(err)}); "
                         f"RLIMIT_MEMLOCK soft={soft} hard={hard}; grant CAP_IPC_LOCK or raise the "
                         "limit (systemd: LimitMEMLOCK=infinity)")
        self.errno = err
        self.limit = limit


# -- publishing -----------------------------------------------------------------------

class PublishError(CaptureError):
    """A NATS / JetStream problem."""


class NatsUnreachable(PublishError):
    def __init__(self, servers: list[str], reason: str) -> None:
        # URLs may carry credentials (nats://user:pass@host): never in a message
        super().__init__(f"no NATS server reachable among {redact_urls(servers)}: {redact(reason)}")
        self.servers = servers
        self.reason = reason


class NatsTLSError(NatsUnreachable):
    """The TLS handshake failed (certificate not trusted, client certificate missing)."""


class NatsAuthError(PublishError):
    def __init__(self, servers: list[str], reason: str) -> None:
        super().__init__(f"NATS refused the credentials ({redact_urls(servers)}): {redact(reason)}")
        self.servers = servers
        self.reason = reason


class StreamMismatch(PublishError):
    def __init__(self, stream: str, key: str, reason: str) -> None:
        super().__init__(f"stream {stream!r}: {key}: {reason}")
        self.stream = stream
        self.key = key
        self.reason = reason


class NatsServerError(PublishError):
    """The embedded nats-server could not be found, started or stopped."""

    def __init__(self, reason: str, log: str | None = None) -> None:
        msg = reason
        if log:
            msg += f"\n--- nats-server log (tail) ---\n{log}"
        super().__init__(msg)
        self.reason = reason
        self.log = log


class PipelineClosed(PublishError):
    """put() after the ack pipeline was closed."""


# -- the application ----------------------------------------------------------------------

class ShardBusy(CaptureError):
    """Another supervisor holds this shard's lock file."""

    def __init__(self, path: str, pid: str) -> None:
        super().__init__(f"another supervisor (pid {pid or '?'}) runs this shard ({path})")
        self.path, self.pid = path, pid


class SimulatorError(CaptureError):
    """The simulator could not start or was used wrongly."""
