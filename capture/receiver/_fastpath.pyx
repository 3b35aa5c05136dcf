# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The receiver's hot path, compiled: picows frame -> ring, no Python per frame.

picows calls ``on_ws_frame`` of a compiled listener through its C vtable, so
a complete data message whose bytes go straight into the ring costs no
Python call, no ``bytes`` copy and no cffi call: the payload pointer in
picows's read buffer is handed to the ring's C ``ring_write`` (through the
function pointer cffi gives us, so there is one copy of the ring code).

Only the plain case is taken here: a complete text or binary message, larger
than the connection's peek size (small frames may be acks, errors, pongs: the
Python path classifies them), on a connection without per-frame sequence
checks.  Everything else - and any write the C function refuses (FULL, a
frame above the fragment limit, or RING_HELD while the producer holds writes
back for a gap record) - goes to the Python listener's ``deliver(transport, frame,
ts)`` with the same receive stamp, which does exactly what it always did.

The receive stamp is taken first, once per socket read, like the Python
listener does (see capture/receiver/transport.py): frames parsed out of one read
share it.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uintptr_t
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from picows.picows cimport WSFrame, WSListener, WSMsgType, WSTransport

ctypedef int64_t (*ring_write_fn)(void *p, const uint8_t *payload, uint32_t n, uint8_t type,
                                  uint8_t flags, uint16_t conn, int64_t ts) noexcept nogil

cdef enum:
    T_DATA = 1
    F_BINARY = 1
    COPY_BELOW = 64 * 1024   # larger messages go the Python way (handed over as views)


cdef class FastState:
    """Per connection, across reconnects: where to write and what was taken.

    ``frames``, ``nbytes`` and ``last_data_ns`` count what the compiled path
    wrote (the connection adds its own Python-path counts).  ``peek`` and
    ``enabled`` are set by the connection.
    """
    cdef ring_write_fn write    # ring_write_unless_held: RING_HELD while a gap record is pending
    cdef void *prod
    cdef uint16_t conn
    cdef object producer        # keeps the producer (and its C state) alive
    cdef object odd_large       # callable(payload: bytes, ts): a large frame that does not end like JSON
    cdef public long long frames
    cdef public long long nbytes
    cdef public int64_t last_data_ns
    cdef public Py_ssize_t peek
    cdef public bint enabled

    def __init__(self, producer, int conn_id, odd_large, uintptr_t write_fn, uintptr_t prod_ptr):
        self.producer = producer
        self.write = <ring_write_fn>write_fn
        self.prod = <void *>prod_ptr
        self.conn = conn_id
        self.odd_large = odd_large
        self.frames = 0
        self.nbytes = 0
        self.last_data_ns = 0
        self.peek = 1 << 30
        self.enabled = False


cdef class FastListener(WSListener):
    """The listener of one connection attempt."""
    cdef FastState st
    cdef object deliver         # the Python listener's deliver(transport, frame, ts)
    cdef object connected       # callable(transport)
    cdef object disconnected    # callable(transport)
    cdef int64_t ts
    cdef bint fresh

    def __init__(self, FastState state, deliver, connected, disconnected):
        self.st = state
        self.deliver = deliver
        self.connected = connected
        self.disconnected = disconnected
        self.ts = 0
        self.fresh = True

    cpdef on_ws_connected(self, WSTransport transport):
        self.connected(transport)

    cpdef on_ws_disconnected(self, WSTransport transport):
        self.disconnected(transport)

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef timespec now
        cdef FastState st = self.st
        cdef Py_ssize_t n
        cdef WSMsgType mt
        cdef uint8_t last
        # First, before anything else: the receive time of this socket read.
        if self.fresh:
            clock_gettime(CLOCK_REALTIME, &now)
            self.ts = <int64_t>now.tv_sec * 1000000000 + now.tv_nsec
        self.fresh = frame.last_in_buffer
        mt = frame.msg_type
        n = frame.payload_size
        if (st.enabled and frame.fin and (mt == WSMsgType.TEXT or mt == WSMsgType.BINARY)
                and st.peek < n < COPY_BELOW):
            if st.write(st.prod, <const uint8_t *>frame.payload_ptr, <uint32_t>n, T_DATA,
                        0 if mt == WSMsgType.TEXT else F_BINARY, st.conn, self.ts) >= 0:
                st.frames += 1
                st.nbytes += n
                st.last_data_ns = self.ts
                last = <uint8_t>frame.payload_ptr[n - 1]
                if last != 0x7d and last != 0x5d:   # '}' ']': truncated, or not JSON at all
                    st.odd_large(frame.get_payload_as_bytes(), self.ts)
                return
        self.deliver(transport, frame, self.ts)
