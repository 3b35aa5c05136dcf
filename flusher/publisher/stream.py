"""Bus settings: NATS connection, subject prefix and per-venue JetStream streams.

Config shape (the ``nats`` table of the capture config; every key optional)::

    servers         ["nats://h1:4222", ...]   empty: use the embedded server
    user, password  | token | creds (path to a .creds file)
    tls             {ca, cert, key, hostname, insecure?}   (insecure not accepted)
    prefix          "prod"
    connect_timeout 2.0                           seconds, per attempt
    horizon         "2m"                          the catch-up horizon, see below
    streams         {venue: {name, storage, replicas, max_bytes, max_msgs,
                             max_age, duplicate_window, discard}}

Durations are seconds (int/float) or strings like ``"500ms"``, ``"30s"``,
``"10m"``, ``"2h"``, ``"7d"``; sizes are bytes or ``"512MiB"``, ``"10GB"``.

Catch-up horizon
----------------
The horizon is the longest time between the first send of a frame and a
resend of it that the publisher lets JetStream's de-duplication handle alone.
A resend (ack timeout, reconnect, publisher restart) of a frame first sent
less than ``horizon`` ago is sent blind with the same ``Nats-Msg-Id``; one
first sent longer ago is only sent after the publisher has read back, from
the stream, which sequences of its shard are already stored.  So the stream's
``duplicate_window`` must be at least the horizon, and a config that says
otherwise is refused (:class:`UnsafeStreamConfig`).

Other settings refused because they lose data: memory storage (gone on a
server restart), ``discard: new`` together with a size/count limit (the
stream refuses new frames when full; the publisher falls behind until the
segment files it would catch up from are deleted), ``max_age`` shorter than
the duplicate window, an existing stream with ``no_ack`` or ``sealed``.

Errors::

    ConfigError                (common.errors)
    ├── UnknownConfigKey       names the key and where it was
    └── UnsafeStreamConfig     a setting that would lose or duplicate data
    PublishError               (common.errors)
    ├── NatsUnreachable        no server answered
    │   └── NatsTLSError       the TLS handshake failed
    ├── NatsAuthError          credentials refused
    └── StreamMismatch         the server's stream cannot be made to match
"""
from __future__ import annotations

import asyncio
import logging
import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Mapping

import nats
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import APIError

from common import units
from common.errors import (ConfigError, NatsAuthError, NatsTLSError, NatsUnreachable, PublishError, StreamMismatch, UnknownConfigKey, UnsafeStreamConfig)  # noqa: F401
from common.log import event as log_event
from flusher.publisher.split import key_of_msg_id, key_seq

log = logging.getLogger("capture.publisher")

DEFAULT_PREFIX = "prod"
DEFAULT_HORIZON_S = 120.0
DEFAULT_DUPLICATE_WINDOW_S = 600.0
# How much younger than the duplicate window a blind resend must be: clocks,
# storage delays in a cluster.
HORIZON_MARGIN_S = 5.0


def horizon_margin(horizon_s: float) -> float:
    """Safety margin between the horizon and the duplicate window (5 s, less
    for tiny horizons used in tests)."""
    return min(HORIZON_MARGIN_S, horizon_s / 4)


# -- parsing helpers ------------------------------------------------------------------------

def parse_duration(v: Any, key: str, path: str | None = None) -> float:
    """Seconds (the shared grammar, :mod:`common.units`)."""
    return units.parse_duration(v, key, path)


def parse_size(v: Any, key: str, path: str | None = None) -> int:
    """Bytes (the shared grammar, :mod:`common.units`); -1 (or None) means
    unlimited, 0 is refused (a stream of no bytes holds nothing)."""
    if v is None or (v == -1 and not isinstance(v, bool)):
        return -1
    n = units.parse_size(v, key, path)
    if n == 0:
        raise ConfigError(path, key, "size must be positive or -1 (unlimited), got 0")
    return n


def _check_keys(d: Mapping[str, Any], allowed: set[str], where: str, path: str | None) -> None:
    if not isinstance(d, Mapping):
        raise ConfigError(path, where or None, f"expected a table, got {type(d).__name__}")
    for k in d:
        if k not in allowed:
            raise UnknownConfigKey(path, f"{where}.{k}" if where else str(k), allowed)


_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


# -- settings -------------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamSettings:
    venue: str
    name: str
    subjects: list[str]
    storage: str = "file"
    replicas: int = 1
    max_bytes: int = -1
    max_msgs: int = -1
    max_age_s: float = 0.0             # 0: unlimited
    duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S
    discard: str = "old"

    def to_nats(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.name, subjects=list(self.subjects),
            storage=api.StorageType.FILE if self.storage == "file" else api.StorageType.MEMORY,
            num_replicas=self.replicas, max_bytes=self.max_bytes, max_msgs=self.max_msgs,
            max_age=self.max_age_s, duplicate_window=self.duplicate_window_s,
            discard=api.DiscardPolicy.OLD if self.discard == "old" else api.DiscardPolicy.NEW,
            retention=api.RetentionPolicy.LIMITS, allow_direct=True)


@dataclass(frozen=True)
class BusConfig:
    servers: list[str] = field(default_factory=list)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    tls: Mapping[str, Any] | None = None
    prefix: str = DEFAULT_PREFIX
    connect_timeout_s: float = 2.0
    horizon_s: float = DEFAULT_HORIZON_S
    streams: Mapping[str, StreamSettings] = field(default_factory=dict)

    def stream_for(self, venue: str) -> StreamSettings:
        s = self.streams.get(venue)
        return s if s is not None else default_stream(self.prefix, venue, self.horizon_s)


BUS_KEYS = {"servers", "user", "password", "token", "creds", "tls", "prefix", "connect_timeout",
            "horizon", "streams"}
STREAM_KEYS = {"name", "storage", "replicas", "max_bytes", "max_msgs", "max_age",
               "duplicate_window", "discard"}
TLS_KEYS = {"ca", "cert", "key", "hostname"}


def default_stream(prefix: str, venue: str, horizon_s: float = DEFAULT_HORIZON_S) -> StreamSettings:
    return StreamSettings(venue=venue, name=stream_name(prefix, venue),
                          subjects=[f"{prefix}.{venue}.>"],
                          duplicate_window_s=max(DEFAULT_DUPLICATE_WINDOW_S,
                                                 horizon_s + horizon_margin(horizon_s)))


def stream_name(prefix: str, venue: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{prefix}_{venue}").upper()


def parse_config(cfg: Mapping[str, Any] | None, path: str | None = None) -> BusConfig:
    """Validate the ``nats`` config table and return the settings.

    Raises:
        UnknownConfigKey: a key this code does not know (a typo must not be ignored).
        UnsafeStreamConfig: a stream setting that would lose data.
        ConfigError: a malformed value.
    """
    cfg = cfg or {}
    _check_keys(cfg, BUS_KEYS, "nats", path)
    servers = cfg.get("servers") or []
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
        raise ConfigError(path, "nats.servers", "expected a list of URLs")
    prefix = cfg.get("prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not all(_TOKEN.match(t) for t in prefix.split(".")):
        raise ConfigError(path, "nats.prefix", f"not a valid subject prefix: {prefix!r}")
    if cfg.get("token") and cfg.get("user"):
        raise ConfigError(path, "nats.token", "give either token or user/password, not both")
    if cfg.get("password") is not None and not cfg.get("user"):
        raise ConfigError(path, "nats.password", "password without user")
    tls = cfg.get("tls")
    if tls is not None:
        _check_keys(tls, TLS_KEYS, "nats.tls", path)
    horizon = parse_duration(cfg.get("horizon", DEFAULT_HORIZON_S), "nats.horizon", path)
    if horizon <= 0:
        raise ConfigError(path, "nats.horizon", "must be positive")
    streams: dict[str, StreamSettings] = {}
    raw_streams = cfg.get("streams") or {}
    _check_keys(raw_streams, set(raw_streams), "nats.streams", path)
    for venue, sc in raw_streams.items():
        if not _TOKEN.match(venue):
            raise ConfigError(path, f"nats.streams.{venue}", "venue is not a subject token")
        streams[venue] = _parse_stream(prefix, venue, sc or {}, horizon, path)
    return BusConfig(
        servers=list(servers), user=cfg.get("user"), password=cfg.get("password"),
        token=cfg.get("token"), creds=cfg.get("creds"), tls=tls, prefix=prefix,
        connect_timeout_s=parse_duration(cfg.get("connect_timeout", 2.0),
                                         "nats.connect_timeout", path),
        horizon_s=horizon, streams=streams)


def _parse_stream(prefix: str, venue: str, sc: Mapping[str, Any], horizon: float,
                  path: str | None) -> StreamSettings:
    where = f"nats.streams.{venue}"
    _check_keys(sc, STREAM_KEYS, where, path)
    d = default_stream(prefix, venue, horizon)
    name = sc.get("name", d.name)
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_-]+$", name):
        raise ConfigError(path, f"{where}.name", f"not a valid stream name: {name!r}")
    storage = sc.get("storage", "file")
    if storage not in ("file", "memory"):
        raise ConfigError(path, f"{where}.storage", f"expected file, got {storage!r}")
    if storage == "memory":
        raise UnsafeStreamConfig(path, f"{where}.storage",
                                 "memory storage loses the stream on a server restart; use file")
    replicas = sc.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 5:
        raise ConfigError(path, f"{where}.replicas", f"expected 1..5, got {replicas!r}")
    max_bytes = parse_size(sc.get("max_bytes"), f"{where}.max_bytes", path)
    max_msgs = sc.get("max_msgs", -1)
    if (not isinstance(max_msgs, int) or isinstance(max_msgs, bool) or max_msgs == 0
            or max_msgs < -1):
        raise ConfigError(path, f"{where}.max_msgs",
                          f"expected a positive count or -1, got {max_msgs!r}")
    max_age = parse_duration(sc.get("max_age", 0), f"{where}.max_age", path)
    dw = parse_duration(sc.get("duplicate_window", d.duplicate_window_s),
                        f"{where}.duplicate_window", path)
    discard = sc.get("discard", "old")
    if discard not in ("old", "new"):
        raise ConfigError(path, f"{where}.discard", f"expected old or new, got {discard!r}")
    if dw < horizon + horizon_margin(horizon):
        raise UnsafeStreamConfig(
            path, f"{where}.duplicate_window",
            f"{dw:g}s is shorter than the catch-up horizon {horizon:g}s + "
            f"{horizon_margin(horizon):g}s margin: a resend after a reconnect could be "
            f"stored twice")
    if max_age and max_age < dw:
        raise UnsafeStreamConfig(path, f"{where}.max_age",
                                 f"{max_age:g}s is shorter than the duplicate window {dw:g}s")
    if discard == "new" and (max_bytes != -1 or max_msgs != -1):
        raise UnsafeStreamConfig(
            path, f"{where}.discard",
            "discard: new with max_bytes/max_msgs refuses new frames when the stream is full; "
            "the publisher would fall behind until the segment files are gone. Use discard: old")
    return StreamSettings(venue=venue, name=name, subjects=[f"{prefix}.{venue}.>"],
                          storage=storage, replicas=replicas, max_bytes=max_bytes,
                          max_msgs=max_msgs, max_age_s=max_age, duplicate_window_s=dw,
                          discard=discard)


# -- connection -----------------------------------------------------------------------------

def _tls_context(tls: Mapping[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.get("ca"))
    if tls.get("cert"):
        ctx.load_cert_chain(tls["cert"], tls.get("key"))
    return ctx


async def connect(bus: BusConfig, *, name: str = "capture-publisher", attempts: int = 1,
                  reconnect_wait_s: float = 0.5, **callbacks: Any) -> Client:
    """Connect to the configured servers.

    The first connection is tried ``attempts`` times per server and then fails
    with a typed error; once connected, the client reconnects forever (the
    publisher outlives any outage).  Publishes are never buffered while
    disconnected (``pending_size=0``): the pipeline resends them itself.

    Raises:
        NatsAuthError: a server refused the credentials.
        NatsUnreachable: no server could be reached.
    """
    servers = bus.servers
    if not servers:
        raise ConfigError(None, "nats.servers", "no servers (start the embedded server first)")
    errors: list[BaseException] = []
    user_error_cb = callbacks.pop("error_cb", None)
    # nats-py may keep retrying past the attempts it was given (a TLS failure
    # does): give up once every server has failed attempts + 1 times.
    enough = asyncio.Event()

    async def error_cb(e: BaseException) -> None:
        errors.append(e)
        # A certificate that does not verify will not verify next time either.
        if len(errors) >= (attempts + 1) * len(servers) or isinstance(e, ssl.SSLError):
            enough.set()
        if user_error_cb:
            await user_error_cb(e)

    opts: dict[str, Any] = dict(
        servers=servers, name=name, connect_timeout=bus.connect_timeout_s,
        max_reconnect_attempts=attempts, reconnect_time_wait=reconnect_wait_s,
        pending_size=0, allow_reconnect=True, error_cb=error_cb,
        max_outstanding_pings=3, ping_interval=5, **callbacks)
    if bus.token:
        opts["token"] = bus.token
    if bus.user:
        opts["user"], opts["password"] = bus.user, bus.password or ""
    if bus.creds:
        opts["user_credentials"] = bus.creds
    if bus.tls:
        opts["tls"] = _tls_context(bus.tls)
        if bus.tls.get("hostname"):
            opts["tls_hostname"] = bus.tls["hostname"]
    budget = (bus.connect_timeout_s + reconnect_wait_s) * (attempts + 1) * len(servers) + 5
    task = asyncio.ensure_future(nats.connect(**opts))
    gave_up = asyncio.ensure_future(enough.wait())
    try:
        await asyncio.wait([task, gave_up], timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled on purpose
                pass
            raise TimeoutError("gave up connecting")
        nc = task.result()
    except Exception as exc:   # noqa: BLE001 - translated once, here, at the edge
        seen = errors + [exc]
        text = "; ".join(str(e) or type(e).__name__ for e in seen[-3:])
        if any("authorization" in str(e).lower() or "authentication" in str(e).lower()
               for e in seen):
            raise NatsAuthError(servers, text) from exc
        if any(isinstance(e, ssl.SSLError) for e in seen):
            raise NatsTLSError(servers, text) from exc
        raise NatsUnreachable(servers, text) from exc
    finally:
        gave_up.cancel()
    # From now on: reconnect forever.
    nc.options["max_reconnect_attempts"] = -1
    return nc


async def ensure_stream(nc: Client, s: StreamSettings, timeout: float = 10.0) -> api.StreamInfo:
    """Create the stream, or update it to the settings, and check the result.

    Raises:
        StreamMismatch: the server's stream differs in a way an update cannot fix
            (storage type, sealed, no_ack) or refused the update.
    """
    jsm = nc.jsm(timeout=timeout)
    want = s.to_nats()
    try:
        info = await jsm.stream_info(s.name)
    except nats.js.errors.NotFoundError:
        info = None
    except nats.errors.NoRespondersError as exc:
        raise StreamMismatch(s.name, "jetstream", "JetStream is not enabled on the server") from exc
    try:
        if info is None:
            info = await jsm.add_stream(want)
            log_event(log, "stream_created", stream=s.name, subjects=s.subjects)
        else:
            have = info.config
            if have.sealed:
                raise StreamMismatch(s.name, "sealed", "the stream is sealed")
            if have.no_ack:
                raise StreamMismatch(s.name, "no_ack", "the stream does not acknowledge publishes")
            have_storage = getattr(have.storage, "value", have.storage)
            if have_storage is not None and have_storage != want.storage.value:
                raise StreamMismatch(s.name, "storage",
                                     f"server has {have_storage}, config wants {s.storage}")
            subjects = list(dict.fromkeys((have.subjects or []) + want.subjects))
            info = await jsm.update_stream(want.evolve(subjects=subjects))
            log_event(log, "stream_updated", stream=s.name)
    except APIError as exc:
        raise StreamMismatch(s.name, "config", f"server refused: {exc.description or exc}") from exc
    except nats.errors.NoRespondersError as exc:
        raise StreamMismatch(s.name, "jetstream", "JetStream is not available") from exc
    got = info.config
    if (got.duplicate_window or 0) + 1e-9 < s.duplicate_window_s:
        raise StreamMismatch(s.name, "duplicate_window",
                             f"server kept {got.duplicate_window}s, need {s.duplicate_window_s}s")
    return info


# -- reading back what the stream holds -----------------------------------------------------

async def _stream_state(nc: Client, stream: str, timeout: float) -> dict[str, Any]:
    import orjson
    msg = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=timeout)
    resp = orjson.loads(msg.data)
    if "error" in resp:
        raise StreamMismatch(stream, "info", str(resp["error"].get("description", resp["error"])))
    return resp.get("state") or {}


def _parse_ts(text: str | None) -> float:
    """RFC 3339 with up to ns precision -> seconds since the epoch (0 if absent)."""
    import datetime as dt
    if not text or text.startswith("0001-"):
        return 0.0
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return 0.0
    base = dt.datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    return base.timestamp() + float("0." + (m.group(2) or "0"))


async def stored_sequences(nc: Client, stream: str, subject_filter: str, msg_id_prefix: str,
                           since_wall: float, min_seq: int = 0,
                           timeout: float = 10.0) -> set[int]:
    """Ring sequences of one shard that the stream already holds.

    Reads, headers only, every message of ``subject_filter`` stored since
    ``since_wall`` (seconds since the epoch) up to the stream's last message
    at the time of the call, and collects ``seq`` from each ``Nats-Msg-Id`` of
    the form ``<msg_id_prefix><seq>`` with ``seq >= min_seq``, and the
    pipeline key (:func:`flusher.publisher.split.part_key`) of each event of a
    split frame, ``<msg_id_prefix><seq>:<j>``: a crash between the acks of a
    split frame's events leaves some of them stored.  This is how
    the publisher learns what an earlier attempt stored once the duplicate
    window no longer protects a resend.

    Raises:
        PublishError: the stream could not be read within ``timeout`` seconds
            between two messages.
    """
    state = await _stream_state(nc, stream, timeout)
    last = int(state.get("last_seq") or 0)
    if not state.get("messages") or not last or _parse_ts(state.get("last_ts")) < since_wall:
        return set()
    import datetime as dt
    js = nc.jetstream(timeout=timeout)
    cfg = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_TIME,
        opt_start_time=dt.datetime.fromtimestamp(since_wall, dt.timezone.utc),
        headers_only=True)
    found: set[int] = set()
    plen = len(msg_id_prefix)
    sub = await js.subscribe(subject_filter, stream=stream, ordered_consumer=True, config=cfg,
                             pending_msgs_limit=1 << 16)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout)
            except (asyncio.TimeoutError, nats.errors.TimeoutError) as exc:
                raise PublishError(
                    f"stream {stream}: reading back stored messages stalled") from exc
            mid = (msg.headers or {}).get("Nats-Msg-Id", "")
            if mid.startswith(msg_id_prefix):
                key = key_of_msg_id(mid[plen:])
                if key is not None and key_seq(key) >= min_seq:
                    found.add(key)
            md = msg.metadata
            if md.sequence.stream >= last or md.num_pending == 0:
                break
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001 - the consumer is ephemeral anyway
            pass
    return found
