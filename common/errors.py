"""The one exception tree of capture.

::

    CaptureError                     base of everything capture raises on purpose
    ├── RingError                    shared-memory ring
    │   ├── BadRingFile              attach refused: names the file and what is wrong
    │   ├── RingExists               create refused: the file is already there
    │   ├── ProducerBusy             a live producer already holds the ring
    │   ├── ReaderBusy               a live reader already holds that name
    │   ├── NoReaderSlot             all reader slots are taken
    │   ├── Lapped                   an untethered reader was overwritten
    │   ├── CorruptFrame             a frame failed validation (CRC, size, sequence)
    │   ├── RingDamaged              shared state never settled (a writer died mid-update)
    │   └── FrameTooLarge            (raised only by strict callers; write() returns a status)
    ├── SegmentError                 segment files on disk (file + offset)
    │   └── CorruptSegment
    ├── NoData                       reading back: no segments under a path, or none in a range
    ├── ConfigError                  configuration (file + key)
    ├── VenueError                   exchange protocol
    └── PublishError                 NATS JetStream

Errors carry the data a caller needs (paths, positions, sequences) as
attributes, not only in the message.
"""
from __future__ import annotations


class CaptureError(Exception):
    """Base class of every error capture raises on purpose."""


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


class FrameTooLarge(RingError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the maximum of {limit}")
        self.size = size
        self.limit = limit


class SegmentError(CaptureError):
    """A segment file problem; names the file and the byte offset."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class CorruptSegment(SegmentError):
    pass


class NoData(CaptureError):
    """Nothing to read back: no segment files where asked, or none in the range.

    ``path`` is what was searched; ``reason`` says what was asked for (venue,
    shard, time range) and, when there is data elsewhere, what is there.
    """

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


class VenueError(CaptureError):
    """An exchange protocol problem."""


class PublishError(CaptureError):
    """A NATS / JetStream problem."""
