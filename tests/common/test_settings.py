"""common.settings.from_command_line: the one rule of a child's command line,
exercised through the real entry points' parsers."""
from __future__ import annotations

import argparse
import dataclasses
import os

import pytest

from common import settings
from common.errors import ConfigError


@dataclasses.dataclass
class Toy:
    ring: str
    venue: str
    depth: int = 10


def _args(**kw):
    base = {"settings": None, "ring": None, "venue": None}
    base.update(kw)
    return argparse.Namespace(**base)


def test_a_settings_file_carries_everything(tmp_path):
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    path = settings.write(os.path.join(d, "toy.json"), Toy("/dev/shm/r", "kraken", 25))
    got = settings.from_command_line(Toy, _args(settings=path), alone=("ring", "venue"), required=("ring",))
    assert got == Toy("/dev/shm/r", "kraken", 25)


def test_options_beside_a_settings_file_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError) as ei:
        settings.from_command_line(Toy, _args(settings="x.json", ring="/r"), alone=("ring", "venue"),
                                   required=("ring",))
    assert "x.json" in str(ei.value) and "--ring or --venue" in str(ei.value)


def test_a_missing_required_option_is_named():
    with pytest.raises(ConfigError) as ei:
        settings.from_command_line(Toy, _args(ring="/r"), alone=("ring",), required=("ring", "venue"))
    assert "--venue is required" in str(ei.value)
    assert settings.from_command_line(Toy, _args(ring="/r", venue="kraken"), alone=("ring",),
                                      required=("ring", "venue")) is None


@pytest.mark.parametrize("module", ["flusher.segments.drain", "flusher.publisher.process",
                                    "capture.receiver.integrity", "capture.receiver.process"])
def test_every_child_entry_point_applies_it(module, tmp_path, capsys):
    """Each child's main exits 2 naming the problem, before touching a ring."""
    import importlib
    main = importlib.import_module(module).main
    rc = main(["--settings", str(tmp_path / "none.json"), "--ring", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "carries every setting" in err, err
