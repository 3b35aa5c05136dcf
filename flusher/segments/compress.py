"""Background zstandard compression of closed segments.

``X.seg`` becomes ``X.seg.zst`` (one zstd frame with a content checksum,
decompressing to exactly the bytes of ``X.seg``): compress to
``X.seg.zst.tmp`` (0600, O_EXCL|O_NOFOLLOW), fsync, rename, fsync the
directory, then unlink ``X.seg``.  A crash at any point leaves either the
``.seg`` alone, or both (readers prefer the ``.seg``; the next pass removes
the duplicate), never a partial ``.zst`` under its final name.

The :class:`Compressor` runs in its own thread.  ``submit`` never blocks (a
bounded queue that is full just leaves the segment uncompressed until
:func:`compress_tree` or the next start picks it up), and zstd releases the
GIL while it works, so the drain loop is never held up.  For a separate
process: ``python -m flusher.segments.compress DIR``.
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading

from common.log import event as log_event
from flusher.segments.names import O_DIRECTORY, O_NOFOLLOW, SUFFIX_SEG, SUFFIX_ZST, parse_name

log = logging.getLogger("capture.flusher.compress")


def compress_segment(path: str, level: int = 3) -> str:
    """Compress one closed segment; returns the ``.seg.zst`` path."""
    import zstandard
    if not path.endswith(SUFFIX_SEG):
        raise ValueError(f"{path}: only closed .seg files are compressed")
    d, name = os.path.split(path)
    stem = name[: -len(SUFFIX_SEG)]
    final = stem + SUFFIX_ZST
    tmp = final + ".tmp"
    dfd = os.open(d or ".", os.O_RDONLY | O_DIRECTORY)
    try:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except FileNotFoundError:
            pass
        src = os.open(name, os.O_RDONLY | O_NOFOLLOW, dir_fd=dfd)
        try:
            dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW, 0o600, dir_fd=dfd)
            try:
                size = os.fstat(src).st_size
                cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
                with os.fdopen(src, "rb", closefd=False) as fin, \
                        os.fdopen(dst, "wb", closefd=False) as fout:
                    cctx.copy_stream(fin, fout, size=size)
                    fout.flush()
                os.fsync(dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        os.rename(tmp, final, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
        os.unlink(name, dir_fd=dfd)
        os.fsync(dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise
    finally:
        os.close(dfd)
    return os.path.join(d, final)


def compress_tree(root: str, level: int = 3) -> list[str]:
    """Compress every closed, uncompressed segment under root; remove duplicates
    left by a crash (a ``.seg`` whose ``.seg.zst`` is complete)."""
    done = []
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        names = set(files)
        for fn in sorted(files):
            if fn.endswith(SUFFIX_ZST + ".tmp"):
                os.unlink(os.path.join(dirpath, fn))
        for fn in sorted(files):
            if not fn.endswith(SUFFIX_SEG) or parse_name(fn) is None:
                continue
            if fn[: -len(SUFFIX_SEG)] + SUFFIX_ZST in names:
                os.unlink(os.path.join(dirpath, fn))     # the .zst was finished and synced
                continue
            done.append(os.path.join(dirpath, fn))
    return [compress_segment(p, level) for p in done]


class Compressor:
    """A background thread compressing segments handed to :meth:`submit`."""

    def __init__(self, level: int = 3, max_queue: int = 1024) -> None:
        self.level = level
        self.compressed = 0
        self.failed = 0
        self.dropped = 0
        self._q: queue.Queue[str | None] = queue.Queue(max_queue)
        self._t = threading.Thread(target=self._run, name="segment-compressor", daemon=True)
        self._t.start()

    def submit(self, path: str) -> bool:
        """Queue a closed segment; never blocks.  False if the queue was full."""
        try:
            self._q.put_nowait(path)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def pending(self) -> int:
        return self._q.qsize()

    def _run(self) -> None:
        while True:
            path = self._q.get()
            try:
                if path is None:
                    return
                compress_segment(path, self.level)
                self.compressed += 1
            except Exception as exc:  # keep the thread alive; the segment stays as .seg
                self.failed += 1
                log_event(log, "compress_failed", logging.WARNING, path=path, error=str(exc),
                          kept="the segment stays as .seg")
            finally:
                self._q.task_done()

    def close(self, wait: bool = True) -> None:
        """Stop the thread; with wait, after finishing what is queued."""
        if not wait:
            try:
                while True:
                    self._q.get_nowait()
                    self._q.task_done()
            except queue.Empty:
                pass
        self._q.put(None)
        if wait:
            self._t.join()


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m flusher.segments.compress",
                                 description="compress closed segments under a directory")
    ap.add_argument("root")
    ap.add_argument("--level", type=int, default=3)
    args = ap.parse_args(argv)
    for p in compress_tree(args.root, args.level):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
