/* capture ring: the hot path in C.  This file is also the cffi cdef (see
 * ring/_build.py), so it holds only declarations cffi can parse: integer
 * #defines, plain structs and prototypes.  The layout of the shared header
 * is private to ring.c; Python reaches it only through these functions.
 *
 * Frame header, 32 bytes, little endian, every frame 8-byte aligned:
 *   0  u32 size     header + payload bytes, unpadded (0 = never written)
 *   4  u32 seq_lo   low 32 bits of seq        -- bytes 0..8 are the commit
 *                                                word, stored last (release)
 *   8  u64 seq      ring-lifetime sequence number
 *  16  i64 ts_ns    receive time, ns since the Unix epoch (CLOCK_REALTIME)
 *  24  u8  type     RING_T_*
 *  25  u8  flags    RING_F_*
 *  26  u16 conn     connection id inside the shard
 *  28  u32 crc      CRC32C over bytes 0..28 of the header, then the payload
 */

#define RING_MAGIC 0x31474e4952504143
#define RING_VERSION 3
#define RING_HEADER_SIZE 4096
#define RING_FRAME_HEADER 32
#define RING_MAX_READERS 8
#define RING_NAME_MAX 47

/* frame types */
#define RING_T_DATA 1
#define RING_T_CONTROL 2
#define RING_T_PADDING 3
#define RING_T_FRAG_BEGIN 4
#define RING_T_FRAG_MIDDLE 5
#define RING_T_FRAG_END 6

/* frame flags */
#define RING_F_BINARY 1
#define RING_F_ABORTED 2

/* ring_write results (negative) */
#define RING_FULL -1
#define RING_TOO_LARGE -2
#define RING_HELD -3

/* ring_head result: the seqlock stayed odd past its bound (a producer died
 * inside its head update); a producer's open repairs it */
#define RING_DAMAGED -4

/* ring_read_batch results */
#define RING_READ_OK 0
#define RING_READ_LAPPED 1
#define RING_READ_CORRUPT 2
#define RING_READ_TIMEOUT 3
#define RING_DRAIN_IO_ERROR 4

/* buckets of ring_drain_t.latency_hist */
#define RING_DRAIN_HIST 32

/* reader slot states */
#define RING_SLOT_FREE 0
#define RING_SLOT_ACTIVE 1
#define RING_SLOT_CLAIMING 2

/* producer state */
#define RING_PROD_NONE 0
#define RING_PROD_RUNNING 1
#define RING_PROD_STOPPED 2

/* Per-process producer state (not shared). */
typedef struct {
    uint8_t *base;          /* start of the mapped file */
    uint64_t capacity;
    uint64_t frag_limit;    /* largest payload of one frame */
    uint64_t cached_limit;  /* head may grow up to here without re-reading readers */
    uint64_t head;          /* private copy of the published head */
    uint64_t next_seq;
    uint64_t last_unit;     /* eighth of the ring of the last checkpoint */
    int test_pause;         /* test only: SIGSTOP self before the commit store */
    int hold;               /* non-zero: ring_write_unless_held refuses (see there) */
    uint64_t reserve;       /* bytes ring_write leaves free for ring_write_reserved */
    int repaired;           /* set by ring_producer_open: it found the seqlock odd */
} ring_producer_t;

/* Output of one batch read: caller-owned arrays of max_frames entries. */
typedef struct {
    uint64_t *pos;          /* absolute position of each frame header */
    uint32_t *size;         /* payload length */
    uint64_t *seq;
    int64_t *ts;
    uint8_t *type;
    uint8_t *flags;
    uint16_t *conn;
    uint32_t max_frames;
    uint64_t max_bytes;     /* stop before the batch spans more ring bytes */
    uint32_t n;             /* frames returned */
    uint64_t bad_pos;       /* with RING_READ_CORRUPT / LAPPED: where */
    uint64_t bad_seq;       /* ... and the sequence found there */
} ring_batch_t;

/* One ring_drain_to_fd call: what to write where, and what was written.
 * The index and histogram arrays are caller-owned. */
typedef struct {
    /* in */
    int fd;                 /* < 0: write nothing (skip frames below skip_below only) */
    uint64_t file_off;      /* file offset of the first byte written */
    uint64_t room;          /* write at most this many bytes ... */
    int oversize_ok;        /* ... except one first frame larger than room, if set */
    uint64_t max_bytes;     /* batch limit: file bytes */
    uint64_t skip_below;    /* frames with seq below this are consumed, not written */
    uint64_t records_before;/* records already in the file (index phase) */
    uint32_t index_every;   /* index entry for every Nth record of the file */
    uint32_t index_cap;
    uint64_t *index_seq;
    int64_t *index_ts;
    uint64_t *index_off;    /* absolute file offsets */
    uint64_t *latency_hist; /* RING_DRAIN_HIST buckets, added to: receive stamp to write */
    int large_frames;       /* in/out: the last batch's frames were large (sizes its writes) */
    /* out */
    uint32_t frames;        /* written */
    uint64_t skipped;
    uint64_t bytes;
    uint32_t index_n;
    uint64_t first_seq;
    uint64_t last_seq;
    int64_t first_ts;
    int64_t last_ts;
    int64_t min_ts;
    int64_t max_ts;
    int ts_monotonic;       /* receive times never decreased within the call */
    int room_full;          /* stopped at a frame that does not fit in room */
    int written_first;      /* the batch was written, then checked (see drain.c) */
    int err;                /* errno, with RING_DRAIN_IO_ERROR */
    uint64_t bad_pos;       /* with RING_READ_CORRUPT / LAPPED */
    uint64_t bad_seq;
} ring_drain_t;

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t capacity;
    uint32_t max_readers;
    uint32_t frame_header;
    uint64_t frag_limit;
    uint64_t max_frame;
    uint8_t ring_id[16];
    int64_t created_ns;
    uint32_t creator_uid;
    /* producer */
    uint64_t head;
    uint64_t next_seq;
    uint32_t producer_pid;
    uint32_t producer_epoch;
    uint32_t producer_state;
    int64_t producer_heartbeat_ns;
    /* counters, one writer each (the producer) */
    uint64_t frames;
    uint64_t bytes;
    uint64_t drops_full;
    uint64_t drops_too_large;
    uint64_t highest_fill;
    uint64_t wakes;
    uint64_t fragmented;
    uint64_t gap_records;
    uint64_t dropped_bytes;
    uint64_t drops_recorded; /* frames of drops_* already written as records */
    int64_t gap_since_ns;    /* receive time of the first drop not yet recorded */
} ring_stats_t;

typedef struct {
    uint32_t state;
    uint32_t tethered;
    uint32_t pid;
    char name[48];
    uint64_t pos;
    uint64_t seq;
    int64_t heartbeat_ns;
    uint64_t frames_read;
    uint64_t lapped;
} ring_reader_info_t;

/* --- setup ------------------------------------------------------------- */
/* Lay out a fresh header in a zero-filled mapping.  The version is stored
 * last, so a half-initialised file never validates. */
void ring_init(uint8_t *base, uint64_t capacity, uint64_t frag_limit,
               uint64_t max_frame, const uint8_t *ring_id, int64_t created_ns,
               uint32_t uid, uint64_t start_pos);
uint32_t ring_version(const uint8_t *base);
/* A consistent (head, next_seq) pair: where the next frame will start.
 * Returns 0, or RING_DAMAGED if the seqlock never settled within its bound
 * (RING_SEQLOCK_WAIT_NS): never waits longer. */
int ring_head(const uint8_t *base, uint64_t *pos, uint64_t *seq);
void ring_get_stats(const uint8_t *base, ring_stats_t *out);

/* --- producer ---------------------------------------------------------- */
/* Adopt the shared state: repair a seqlock a crashed producer left odd,
 * finish publishing a frame it committed but did not account for.  Returns
 * the new epoch. */
uint32_t ring_producer_open(ring_producer_t *p, uint8_t *base, uint32_t pid, int64_t now_ns);
void ring_producer_close(ring_producer_t *p, int64_t now_ns);
/* Write one frame.  ts_ns <= 0 means "take CLOCK_REALTIME now".  Returns the
 * sequence number (>= 0) or RING_FULL / RING_TOO_LARGE.  Never blocks. */
int64_t ring_write(ring_producer_t *p, const uint8_t *payload, uint32_t len,
                   uint8_t type, uint8_t flags, uint16_t conn, int64_t ts_ns);
/* ring_write for callers with a hot path of their own (the receiver): while
 * the owner holds writes back (a gap record is pending, or the producer is
 * closed) it returns RING_HELD without touching the ring, and the caller
 * hands the frame to the owner's full write path, which writes the gap
 * record first. */
int64_t ring_write_unless_held(ring_producer_t *p, const uint8_t *payload, uint32_t len,
                               uint8_t type, uint8_t flags, uint16_t conn, int64_t ts_ns);
/* ring_write that may use the reserve (p->reserve bytes ring_write leaves
 * free): for the records that must land - drop records owed at open or close,
 * producer_restart, producer_died, shard_stop.  RING_FULL only when even the
 * reserve is gone. */
int64_t ring_write_reserved(ring_producer_t *p, const uint8_t *payload, uint32_t len,
                            uint8_t type, uint8_t flags, uint16_t conn, int64_t ts_ns);
/* Room (payload bytes) available for one frame right now, re-reading readers. */
uint64_t ring_room(ring_producer_t *p);
void ring_producer_heartbeat(ring_producer_t *p, int64_t now_ns);
void ring_count_drop(ring_producer_t *p, int reason, uint64_t nbytes);
void ring_count_gap_record(ring_producer_t *p);
/* A record now on the ring accounts for `frames` dropped frames. */
void ring_count_recorded(ring_producer_t *p, uint64_t frames);
void ring_count_fragmented(ring_producer_t *p);

/* --- readers ----------------------------------------------------------- */
int ring_reader_claim(uint8_t *base, int slot, const char *name, int tethered,
                      uint32_t pid, uint64_t pos, uint64_t seq, int64_t now_ns);
void ring_reader_release(uint8_t *base, int slot);
void ring_reader_get(const uint8_t *base, int slot, ring_reader_info_t *out);
void ring_reader_set_pid(uint8_t *base, int slot, uint32_t pid, int64_t now_ns);
void ring_reader_commit(uint8_t *base, int slot, uint64_t pos, uint64_t seq,
                        uint64_t frames, int64_t now_ns);
void ring_reader_heartbeat(uint8_t *base, int slot, int64_t now_ns);
void ring_reader_count_lapped(uint8_t *base, int slot);
/* Read up to out->max_frames published frames from *pos / *seq (padding is
 * skipped, not returned) and advance them.  Does not commit. */
int ring_read_batch(const uint8_t *base, uint64_t *pos, uint64_t *seq,
                    ring_batch_t *out, int verify_crc);
/* 1 if the frame at pos with this seq is published. */
int ring_available(const uint8_t *base, uint64_t pos, uint64_t seq);
/* Untethered readers: 1 while nothing in [pos, ...) can have been overwritten. */
int ring_still_valid(const uint8_t *base, uint64_t pos);
/* Oldest frame boundary a lapped reader can safely resume at. */
int ring_resume_point(const uint8_t *base, uint64_t *pos, uint64_t *seq);
/* Spin, then yield, then sleep on the futex until the frame (pos, seq) is
 * published or timeout_ns passes.  Returns 1 if available.  spin_ns == 0:
 * neither spin nor yield, straight to the futex. */
int ring_wait(uint8_t *base, int slot, uint64_t pos, uint64_t seq,
              uint64_t spin_ns, uint64_t timeout_ns);

/* The latency path in one call: heartbeat, ring_wait, then (untethered
 * readers: after the lap check) ring_read_batch.  RING_READ_TIMEOUT if
 * nothing arrived in time; on RING_READ_LAPPED *pos / *seq are unchanged. */
int ring_wait_read(uint8_t *base, int slot, uint64_t *pos, uint64_t *seq,
                   ring_batch_t *out, int verify_crc, uint64_t spin_ns,
                   uint64_t timeout_ns);

/* A tethered reader's drain into a file (drain.c): the frames from *pos /
 * *seq, checked like ring_read_batch checks them, written at d->file_off
 * with padding left out.  Advances *pos / *seq past what was written or
 * skipped; never commits.  Returns RING_READ_OK, RING_READ_LAPPED /
 * RING_READ_CORRUPT (after the good frames before it, which are written),
 * or RING_DRAIN_IO_ERROR (d->err; *pos / *seq unchanged). */
int ring_drain_to_fd(const uint8_t *base, uint64_t *pos, uint64_t *seq, ring_drain_t *d);

/* Bit mask of reader slots that announced a futex sleep (for stats/tests). */
uint32_t ring_waiters(const uint8_t *base);

/* --- frames ------------------------------------------------------------ */
uint32_t ring_crc32c(uint32_t crc, const uint8_t *data, size_t len);
/* CRC of a frame laid out contiguously (header then payload). */
uint32_t ring_frame_crc(const uint8_t *frame, uint32_t size);
int ring_crc32c_hw(void);
int64_t ring_now_ns(void);

/* --- segment files ------------------------------------------------------ */
/* The plain records of a segment buffer (records back to back from buf[0],
 * each padded to 8 bytes), checked as the Python reader checks them: size
 * 32..max_record and inside the buffer, seq_lo, a type other than padding,
 * the CRC, and (when *expect_io is not UINT64_MAX) the sequence.  Copies the
 * 32-byte header of each good record to hdrs_out (max of them) and its
 * offset in buf to offs_out; *expect_io becomes the sequence after the last.
 * Returns how many; it stops before the first record it does not take (a
 * short or bad one, or a control record that may be a gap record, whose
 * payload starts with the gap prefix): the caller looks at that one itself.
 * *next_out is the offset where it stopped. */
uint32_t ring_seg_scan(const uint8_t *buf, uint64_t len, uint64_t max_record,
                       const uint8_t *gap_prefix, uint32_t gap_len, uint64_t *expect_io,
                       uint8_t *hdrs_out, uint32_t *offs_out, uint32_t max,
                       uint64_t *next_out);
