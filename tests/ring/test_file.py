"""create / attach: the file is made safely and every bad file is refused."""
import os
import stat
import struct

import pytest

import ring
from common.errors import BadRingFile, RingExists

CAP = 1 << 16


def test_create_is_owner_only_and_validates(ring_path):
    old = os.umask(0)
    try:
        ring.create(ring_path, CAP).close()
    finally:
        os.umask(old)
    st = os.stat(ring_path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == 4096 + CAP
    with ring.attach(ring_path) as rf:
        assert rf.capacity == CAP
        assert rf.info.frag_limit == CAP // 8 - 32
        assert len(rf.info.ring_id) == 16


def test_create_refuses_existing_file_and_symlink(ring_path, ring_dir):
    ring.create(ring_path, CAP).close()
    with pytest.raises(RingExists):
        ring.create(ring_path, CAP)
    target = os.path.join(ring_dir, "elsewhere")
    link = os.path.join(ring_dir, "link.ring")
    os.symlink(target, link)
    with pytest.raises(RingExists):
        ring.create(link, CAP)
    assert not os.path.exists(target), "create must not follow a symlink"


@pytest.mark.parametrize("cap", [1000, 3 << 16, 1 << 10, 1 << 32])
def test_create_refuses_bad_capacity(ring_path, cap):
    with pytest.raises(ValueError):
        ring.create(ring_path, cap)


def _fresh(ring_path):
    ring.create(ring_path, CAP).close()
    return ring_path


def _patch(path, offset, fmt, value):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def test_attach_bad_magic(ring_path):
    _patch(_fresh(ring_path), 0, "<Q", 0x1234)
    with pytest.raises(BadRingFile, match="bad magic"):
        ring.attach(ring_path)


def test_attach_unknown_version(ring_path):
    _patch(_fresh(ring_path), 8, "<I", 99)
    with pytest.raises(BadRingFile, match="unsupported ring version 99"):
        ring.attach(ring_path)


def test_attach_unfinished_creation(ring_path):
    _patch(_fresh(ring_path), 8, "<I", 0)
    with pytest.raises(BadRingFile, match="creation never finished"):
        ring.attach(ring_path)


def test_attach_bad_capacity(ring_path):
    _patch(_fresh(ring_path), 16, "<Q", CAP + 8)
    with pytest.raises(BadRingFile, match="capacity"):
        ring.attach(ring_path)


def test_attach_bad_header_size(ring_path):
    _patch(_fresh(ring_path), 12, "<I", 8192)
    with pytest.raises(BadRingFile, match="geometry"):
        ring.attach(ring_path)


def test_attach_truncated_data(ring_path):
    _fresh(ring_path)
    os.truncate(ring_path, 4096 + CAP // 2)
    with pytest.raises(BadRingFile, match="truncated or extended"):
        ring.attach(ring_path)


def test_attach_truncated_header(ring_path):
    _fresh(ring_path)
    os.truncate(ring_path, 100)
    with pytest.raises(BadRingFile, match="truncated"):
        ring.attach(ring_path)


def test_attach_symlink_refused(ring_path, ring_dir):
    _fresh(ring_path)
    link = os.path.join(ring_dir, "link.ring")
    os.symlink(ring_path, link)
    with pytest.raises(BadRingFile, match="symbolic link"):
        ring.attach(link)


def test_attach_directory_refused(ring_dir):
    with pytest.raises(BadRingFile, match="directory|not a regular file"):
        ring.attach(ring_dir)


def test_attach_missing(ring_dir):
    with pytest.raises(BadRingFile, match="no such ring file"):
        ring.attach(os.path.join(ring_dir, "nope.ring"))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o666])
def test_attach_group_or_world_access_refused(ring_path, mode):
    _fresh(ring_path)
    os.chmod(ring_path, mode)
    with pytest.raises(BadRingFile, match="must be 0600"):
        ring.attach(ring_path)


def test_attach_other_owner_refused(ring_path):
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    _fresh(ring_path)
    os.chown(ring_path, 65534, -1)
    with pytest.raises(BadRingFile, match="owned by uid 65534"):
        ring.attach(ring_path)


def test_attach_fifo_refused(ring_dir):
    p = os.path.join(ring_dir, "fifo.ring")
    os.mkfifo(p, 0o600)
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # so opening O_RDWR does not block
    try:
        with pytest.raises(BadRingFile, match="not a regular file"):
            ring.attach(p)
    finally:
        os.close(fd)


def test_ensure_dir_refuses_symlink(ring_dir):
    real = os.path.join(ring_dir, "real")
    os.mkdir(real)
    link = os.path.join(ring_dir, "rings")
    os.symlink(real, link)
    with pytest.raises(BadRingFile, match="symbolic link"):
        ring.ensure_dir(link)
    fresh = os.path.join(ring_dir, "new")
    ring.ensure_dir(fresh)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o750, 0o701])
def test_ensure_dir_refuses_a_loose_mode_on_every_start(ring_dir, mode):
    d = os.path.join(ring_dir, "rings")
    ring.ensure_dir(d)                       # created 0700: accepted
    ring.ensure_dir(d)                       # and again: checked, still accepted
    os.chmod(d, mode)
    with pytest.raises(BadRingFile) as ei:
        ring.ensure_dir(d)
    msg = str(ei.value)
    assert d in msg and f"mode {mode:04o}" in msg and f"owner uid {os.geteuid()}" in msg
    assert stat.S_IMODE(os.stat(d).st_mode) == mode          # refused, not silently repaired


def test_ensure_dir_refuses_a_foreign_owner(ring_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    d = os.path.join(ring_dir, "rings")
    ring.ensure_dir(d)
    os.chown(d, 65534, -1)
    with pytest.raises(BadRingFile, match="owner uid 65534"):
        ring.ensure_dir(d)


def test_default_path_rejects_traversal():
    assert ring.default_path("shard-3").endswith("/shard-3.ring")
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            ring.default_path(bad)
