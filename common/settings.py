"""How a child process is told its settings: one JSON file per child.

The application layer resolves the capture config once into one typed
settings object per child (a dataclass: the receiver's ``ReceiverConfig``,
the flusher's ``FlusherConfig``, ...).  The supervisor writes it here with
:func:`write` and starts the child with ``--settings PATH``; the child's entry
point reads it back with :func:`read` into the same dataclass.  Every child
gets its settings this one way, so nothing is re-parsed from the TOML below
the application layer, and nothing secret (NATS credentials) is ever on a
command line, where any local user could read it from ``/proc``.

The file is created owner-only, exclusively, never through a symlink
(``O_EXCL|O_NOFOLLOW``), inside the supervisor's private 0700 directory, and
removed with it.  Fields marked ``metadata={"settings": False}`` (a clock, a
callback) are local to the process and never written.

Reading is strict: an unknown key, a missing required key or a value of the
wrong type is a :class:`~common.errors.ConfigError` naming the file and the
key; range checks stay with the dataclass (``__post_init__``/``validate``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from typing import Any, TypeVar

from common.errors import ConfigError

T = TypeVar("T")


def _persisted(f: dataclasses.Field) -> bool:
    return f.metadata.get("settings", True)


def to_dict(obj: Any) -> dict[str, Any]:
    """The persisted fields of a settings dataclass (nested ones included)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not _persisted(f):
            continue
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def _convert(hint: Any, v: Any, key: str, path: str | None) -> Any:
    """Check ``v`` (decoded JSON) against a field's type and build nested
    dataclasses and tuples; lists/dicts inside are taken as they are."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, v, key, path)
            except ConfigError as e:
                errors.append(e.reason)
        raise ConfigError(path, key, "; ".join(errors))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(v, dict):
            raise ConfigError(path, key, f"must be an object, not {v!r}")
        return from_dict(hint, v, path, prefix=f"{key}.")
    if origin is tuple:
        if not isinstance(v, list):
            raise ConfigError(path, key, f"must be a list, not {v!r}")
        return tuple(v)
    if origin is list:
        if not isinstance(v, list):
            raise ConfigError(path, key, f"must be a list, not {v!r}")
        return v
    if origin is dict or hint is dict:
        if not isinstance(v, dict):
            raise ConfigError(path, key, f"must be an object, not {v!r}")
        return v
    if hint is bool:
        if not isinstance(v, bool):
            raise ConfigError(path, key, f"must be true or false, not {v!r}")
        return v
    if hint is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(path, key, f"must be an integer, not {v!r}")
        return v
    if hint is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(path, key, f"must be a number, not {v!r}")
        return float(v)
    if hint is str:
        if not isinstance(v, str):
            raise ConfigError(path, key, f"must be a string, not {v!r}")
        return v
    return v  # Any and the like: taken as it is


def from_dict(cls: type[T], data: dict[str, Any], path: str | None = None,
              prefix: str = "") -> T:
    """Build ``cls`` from :func:`to_dict` output.

    Raises:
        ConfigError: unknown or missing key, wrong type (naming ``path`` and the key).
    """
    if not isinstance(data, dict):
        raise ConfigError(path, prefix.rstrip(".") or None, "must be a JSON object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if _persisted(f)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(path, prefix + unknown[0],
                          f"unknown setting (known: {', '.join(sorted(fields))})")
    kw = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(path, prefix + name, "missing")
            continue
        kw[name] = _convert(hints[name], data[name], prefix + name, path)
    return cls(**kw)


def write(path: str, obj: Any) -> str:
    """Write ``obj``'s settings to a new owner-only file at ``path``.

    Raises:
        FileExistsError: ``path`` exists (never overwritten, never followed).
    """
    data = json.dumps(to_dict(obj), indent=1).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def read(cls: type[T], path: str) -> T:
    """The settings written by :func:`write`, as ``cls``.

    Raises:
        ConfigError: unreadable, not JSON, or not ``cls``'s settings.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(path, None, f"cannot read the settings: {e.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ConfigError(path, None, f"settings are not valid JSON: {e}") from None
    return from_dict(cls, data, path)


def from_command_line(cls: type[T], args: Any, *, alone: tuple[str, ...],
                      required: tuple[str, ...]) -> T | None:
    """The one rule of every child's command line.

    ``--settings FILE`` (``args.settings``) carries every setting, so none of
    the options in ``alone`` may be given beside it: the settings read back
    are returned.  Without it, the options in ``required`` must all be
    given, and None is returned: the caller builds its settings from the
    options (the form used by hand and by tests).

    Raises:
        ConfigError: both forms mixed, a required option missing, or a
            settings file that :func:`read` refuses.
    """
    def flag(o: str) -> str:
        return "--" + o.replace("_", "-")
    if args.settings:
        if any(getattr(args, o) is not None for o in alone):
            raise ConfigError(args.settings, "settings", "carries every setting: give no "
                              + " or ".join(flag(o) for o in alone) + " with it")
        return read(cls, args.settings)
    missing = [o for o in required if getattr(args, o) is None]
    if missing:
        raise ConfigError(None, missing[0], f"{flag(missing[0])} is required (or give --settings FILE)")
    return None
