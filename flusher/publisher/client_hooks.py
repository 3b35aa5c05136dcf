"""The acked pipeline's hooks into nats-py internals (see flusher.publisher.pipeline).

Two wrappers, installed on one client for one pipeline and removed when the
pipeline closes:

* the client's ``_process_msg``: replies to the pipeline's inbox go straight
  to the pipeline instead of becoming Msg objects queued for a task;
* the protocol parser's ``parse``: a run of the pipeline's acks at the start
  of the buffer is taken in one regular-expression pass; everything else
  (status replies, other subscriptions, PING, INFO, an ack cut off mid-read)
  goes through nats-py's parser unchanged.

Both read private attributes, so each checks they exist, and the parser hook
engages only on the nats-py release it was tested against
(``FAST_PARSER_TESTED``); anywhere else the pipeline gets the same results
through nats-py's own path, slower.  A removed wrapper that another one was
stacked on stays in the chain and passes everything on.
"""
from __future__ import annotations

import re
from typing import Any, Callable


def _nats_py_version() -> tuple[int, int]:
    from importlib.metadata import PackageNotFoundError, version
    try:
        major, minor = version("nats-py").split(".")[:2]
        return int(major), int(minor)
    except (PackageNotFoundError, ValueError):   # pragma: no cover
        return (0, 0)


#: nats-py releases whose parser internals the fast ack parser was tested
#: against.  It reads the parser's buffer and state, which a release may
#: change without notice.
FAST_PARSER_TESTED = {(2, 16)}
FAST_PARSER_OK = _nats_py_version() in FAST_PARSER_TESTED

_CRLF = b"\r\n"


class ClientHooks:
    """The wrappers for one pipeline.

    Args:
        nc: the nats-py client.
        sid: the pipeline's reply subscription id.
        inbox: the pipeline's inbox prefix (bytes); replies come to
            ``<inbox>.<seq>.<attempt>``.
        on_reply: ``(subject, data, headers)`` for one reply.
        take_acks: ``[(seq, attempt, length, body), ...]`` for a run of acks.
    """

    def __init__(self, nc: Any, sid: int, inbox: bytes, on_reply: Callable[..., None],
                 take_acks: Callable[[list], None]) -> None:
        self.nc = nc
        self.sid = sid
        self.inbox = inbox
        self.on_reply = on_reply
        self.take_acks = take_acks
        self.live = False
        self._orig_process_msg: Any = None
        self._process_msg_hook: Any = None
        self._orig_parse: Any = None
        self._parse_hook: Any = None

    @property
    def parser_installed(self) -> bool:
        return self._orig_parse is not None

    def install(self) -> None:
        self._install_replies()
        if self.live:
            self._install_parser()

    def _install_replies(self) -> None:
        """nats-py turns every MSG into a Msg object, queues it and hands it
        to a per-subscription task; for one small ack per published frame
        that is most of the cost.  The subscription stays registered, so
        nats-py still re-subscribes it after a reconnect."""
        nc, sid, on_reply = self.nc, self.sid, self.on_reply
        orig = getattr(nc, "_process_msg", None)
        if orig is None:
            return

        async def process_msg(s, subject, reply, data, headers, _orig=orig):
            if s == sid and self.live:
                on_reply(subject, data, headers)
                return None
            return await _orig(s, subject, reply, data, headers)

        self._orig_process_msg = orig
        self._process_msg_hook = process_msg
        nc._process_msg = process_msg
        self.live = True

    def _install_parser(self) -> None:
        """nats-py's parser handles one message per loop round (several
        regular expressions, a dict, two copies and an await each).  An ack is
        one short ``MSG <inbox>.<seq>.<attempt> <sid> <len>`` line and a
        one-line JSON body, so a run of them is recognised by one regular
        expression and split by ``findall``.  Only the beginning of the buffer
        is taken, and only in the parser's between-messages state."""
        ps = getattr(self.nc, "_ps", None)
        if (not FAST_PARSER_OK or ps is None or not hasattr(ps, "buf")
                or not hasattr(ps, "state") or not callable(getattr(ps, "parse", None))):
            return
        try:
            from nats.protocol.parser import AWAITING_CONTROL_LINE as ctl, MAX_CONTROL_LINE_SIZE
        except ImportError:   # pragma: no cover - a nats-py without this parser
            return
        head = re.escape(b"MSG " + self.inbox + b".")
        tail = re.escape(b" %d " % self.sid)
        one = re.compile(head + rb"(\d+)\.(\d+)" + tail + rb"(\d+)\r\n([^\r\n]*)\r\n")
        run = re.compile(rb"(?:" + head + rb"\d+\.\d+" + tail + rb"\d+\r\n[^\r\n]*\r\n)+")
        line = re.compile(head + rb"\d+\.\d+" + tail + rb"(\d+)\r\n")
        head_b = b"MSG " + self.inbox + b"."
        orig = ps.parse
        take = self.take_acks

        def incomplete_ack(buf: bytearray) -> bool:
            """The buffer holds the beginning of one of our acks, not all of it."""
            if len(buf) < len(head_b):
                return head_b.startswith(bytes(buf))
            if not buf.startswith(head_b):
                return False
            m = line.match(buf)
            if m is None:      # control line not complete yet (or not ours: nats-py decides)
                return len(buf) < MAX_CONTROL_LINE_SIZE and _CRLF not in buf
            return len(buf) < m.end() + int(m.group(1)) + 2

        async def parse(data: bytes = b"") -> None:
            if not self.live or ps.state != ctl:
                return await orig(data)
            buf = ps.buf
            if buf:
                buf.extend(data)
                src = buf
            else:
                src = data
            m = run.match(src)
            if m is not None:
                end = m.end()
                acks = one.findall(src, 0, end)
                if src is buf:
                    del buf[:end]
                else:
                    buf.extend(memoryview(data)[end:])
                take(acks)
            elif src is data:
                buf.extend(data)
            if buf and not incomplete_ack(buf):
                await orig(b"")

        self._orig_parse = orig
        self._parse_hook = parse
        ps.parse = parse

    def remove(self) -> None:
        self.live = False
        nc = self.nc
        if self._orig_process_msg is not None:
            _unwrap(nc, "_process_msg", self._process_msg_hook, self._orig_process_msg)
            self._orig_process_msg = None
        ps = getattr(nc, "_ps", None)
        if self._orig_parse is not None and ps is not None:
            _unwrap(ps, "parse", self._parse_hook, self._orig_parse)
            self._orig_parse = None


def _unwrap(obj: Any, name: str, hook: Any, orig: Any) -> None:
    """Undo ``obj.name = hook``.  If another wrapper was installed on top of
    ours, ours stays in the chain (it passes everything on once unhooked)."""
    if getattr(obj, name, None) is not hook:
        return
    if getattr(orig, "__self__", None) is obj and getattr(orig, "__func__", None) is \
            getattr(type(obj), name, None):
        delattr(obj, name)      # the class's method again
    else:
        setattr(obj, name, orig)
