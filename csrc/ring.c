/* capture ring: header setup and the producer (reader side: reader.c; CRC32C: crc32c.c;
 * header layout: layout.h).  See ring.h for the frame header and the API.
 *
 * Theory of operation
 * -------------------
 * Positions are 64-bit byte counters that only grow; the byte of the data
 * area that a position names is base + RING_HEADER_SIZE + (pos & (cap - 1)).
 * One producer appends frames at `head`; each reader owns a cursor (`pos`,
 * plus the sequence number it expects there) in its own 128-byte block.
 *
 * Publication.  The producer writes the header fields and the payload with
 * plain stores, then stores the 8-byte commit word {size, seq_lo} with
 * release semantics, then publishes `head` and `next_seq` (release).
 * A reader acquire-loads `head` (the copy in its own cache line, stored
 * last) once per batch and walks only below it, so everything it touches is
 * complete.  It never polls the commit word of a frame still being written:
 * that word shares a cache line with the tail of the previous frame, and
 * every poll would pull the line away from the producer mid-write.  For each frame it
 * still checks the commit word: size plausible and seq_lo equal to the low
 * half of the sequence it expects.  Stale bytes from an earlier lap carry an older
 * sequence, so they read as "not yet"; a newer sequence means the producer
 * lapped the reader.  Putting seq_lo in the commit word closes the ABA hole a
 * bare length would leave (an old frame of the same size is not "new").
 *
 * Wrap-around.  A frame never straddles the end of the data area.  If fewer
 * than RING_FRAME_HEADER bytes remain before the end, they are skipped by
 * rule (both sides compute it; nothing is written).  Otherwise, when the
 * frame does not fit, a padding frame (header only, size = bytes to the end,
 * seq = the sequence of the frame that follows, which it does not consume)
 * fills the tail.  So every multiple of the capacity is a frame boundary.
 *
 * Room.  Tethered readers are never overwritten: the producer may write up
 * to min(tethered pos) + capacity.  It caches that limit and re-reads the
 * reader cursors only when a write would pass it.  When there is no room the
 * write returns RING_FULL at once; the caller counts and records the drop.
 *
 * Untethered readers may be lapped.  A producer writing a frame at head h
 * touches [h, h + s) with s <= frag_limit + header; so bytes at position p
 * are intact while head + s_max <= p + cap.  Readers check that before and
 * after they use the bytes (ring_still_valid), the latter after an acquire
 * fence so their reads of the payload are ordered before the head load.
 *
 * Resume points.  The producer records, for each eighth of the ring, the
 * first frame boundary written in it (pos, seq): a lapped reader restarts at
 * the oldest checkpoint that is still safely inside the ring.
 *
 * Wake-ups.  A reader that found nothing spins, then yields, then announces
 * that it sleeps: it reads wake_seq, ORs its bit into `waiters` (seq_cst),
 * re-checks head, and futex-waits on wake_seq with a timeout.  The
 * producer, after publishing, issues a full fence and loads `waiters`; only
 * if it is non-zero does it exchange it to zero, bump wake_seq and call
 * FUTEX_WAKE.  The two full fences make it impossible for both sides to miss
 * each other (store-buffer / Dekker pattern), and the timeout bounds the cost
 * of any mistake.
 *
 * Reserve.  Ordinary writes leave p->reserve bytes free below the limit;
 * ring_write_reserved may use them.  So the records that account for a loss
 * (the drop record owed at open or close, producer_restart, producer_died,
 * shard_stop) find room even when the flusher has stalled and data frames
 * are being refused.
 *
 * Crash safety.  A producer killed before the commit store leaves nothing a
 * reader accepts; its successor rewrites the same position with the same
 * sequence.  A producer killed after the commit store but before publishing
 * head is repaired by ring_producer_open, which walks forward over committed
 * frames with the expected sequence before writing anything; readers see
 * such a frame once its successor has published it.  A producer killed
 * between the odd and the even store of the (head, next_seq) seqlock leaves
 * the generation odd: readers give up after a bound (RING_DAMAGED, never a
 * hang) and ring_producer_open makes it even again from a consistent pair.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <limits.h>
#include <sys/syscall.h>
#include <linux/futex.h>

#include "ring.h"
#include "crc32c.h"
#include "layout.h"

int64_t ring_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline uint32_t frame_crc_split(const uint8_t *hdr, const uint8_t *payload, uint32_t len)
{
    uint32_t c = crc32c_raw(0xffffffffu, hdr, 28);
    return ~crc32c_raw(c, payload, len);
}

uint32_t ring_frame_crc(const uint8_t *frame, uint32_t size)
{
    crc32c_setup();
    if (size < RING_FRAME_HEADER)
        return 0;
    return frame_crc_split(frame, frame + RING_FRAME_HEADER, size - RING_FRAME_HEADER);
}

/* ---- setup ------------------------------------------------------------- */

void ring_init(uint8_t *base, uint64_t capacity, uint64_t frag_limit, uint64_t max_frame,
               const uint8_t *ring_id, int64_t created_ns, uint32_t uid, uint64_t start_pos)
{
    crc32c_setup();
    *U64(base, H_MAGIC) = (uint64_t)RING_MAGIC;
    *U32(base, H_HEADER_SIZE) = RING_HEADER_SIZE;
    *U64(base, H_CAPACITY) = capacity;
    *U32(base, H_MAX_READERS) = RING_MAX_READERS;
    *U32(base, H_FRAME_HEADER) = RING_FRAME_HEADER;
    *U64(base, H_FRAG_LIMIT) = frag_limit;
    *U64(base, H_MAX_FRAME) = max_frame;
    memcpy(base + H_RING_ID, ring_id, 16);
    *I64(base, H_CREATED) = created_ns;
    *U32(base, H_UID) = uid;
    *U64(base, H_HEAD) = start_pos;
    *U64(base, H_HEAD_PUB) = start_pos;
    *U64(base, H_NEXT_SEQ) = 0;
    for (int k = 0; k < 8; k++) {
        *U64(base, H_CHECKPOINTS + 16 * k) = UINT64_MAX;
        *U64(base, H_CHECKPOINTS + 16 * k + 8) = 0;
    }
    /* The checkpoint for the start position, so a reader lapped before the
     * first eighth boundary can still resume. */
    *U64(base, H_CHECKPOINTS + 16 * ((start_pos / (capacity / 8)) & 7)) = start_pos;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    STORE_REL(U32(base, H_VERSION), (uint32_t)RING_VERSION);
}

uint32_t ring_version(const uint8_t *base)
{
    return LOAD_ACQ(U32(base, H_VERSION));
}

void ring_get_stats(const uint8_t *base, ring_stats_t *o)
{
    o->magic = *U64(base, H_MAGIC);
    o->version = LOAD_ACQ(U32(base, H_VERSION));
    o->header_size = *U32(base, H_HEADER_SIZE);
    o->capacity = *U64(base, H_CAPACITY);
    o->max_readers = *U32(base, H_MAX_READERS);
    o->frame_header = *U32(base, H_FRAME_HEADER);
    o->frag_limit = *U64(base, H_FRAG_LIMIT);
    o->max_frame = *U64(base, H_MAX_FRAME);
    memcpy(o->ring_id, base + H_RING_ID, 16);
    o->created_ns = *I64(base, H_CREATED);
    o->creator_uid = *U32(base, H_UID);
    o->head = LOAD_ACQ(U64(base, H_HEAD));
    o->next_seq = LOAD_ACQ(U64(base, H_NEXT_SEQ));
    o->producer_pid = LOAD_ACQ(U32(base, H_PROD_PID));
    o->producer_epoch = LOAD_ACQ(U32(base, H_PROD_EPOCH));
    o->producer_state = LOAD_ACQ(U32(base, H_PROD_STATE));
    o->producer_heartbeat_ns = LOAD_ACQ(I64(base, H_PROD_HB));
    o->frames = LOAD_RLX(U64(base, H_C_FRAMES));
    o->bytes = LOAD_RLX(U64(base, H_C_BYTES));
    o->drops_full = LOAD_RLX(U64(base, H_C_DROPS_FULL));
    o->drops_too_large = LOAD_RLX(U64(base, H_C_DROPS_TOO_LARGE));
    o->highest_fill = LOAD_RLX(U64(base, H_C_HIGHEST_FILL));
    o->wakes = LOAD_RLX(U64(base, H_C_WAKES));
    o->fragmented = LOAD_RLX(U64(base, H_C_FRAGMENTED));
    o->gap_records = LOAD_RLX(U64(base, H_C_GAP_RECORDS));
    o->dropped_bytes = LOAD_RLX(U64(base, H_C_DROPPED_BYTES));
    o->drops_recorded = LOAD_RLX(U64(base, H_C_DROPS_RECORDED));
    o->gap_since_ns = LOAD_RLX(I64(base, H_C_GAP_SINCE));
}

/* ---- producer ---------------------------------------------------------- */

/* Counters have one writer, so a relaxed load + store is enough; readers of
 * the counters only need each value to be untorn. */
static inline void bump(uint8_t *base, size_t off, uint64_t by)
{
    uint64_t *c = U64(base, off);
    STORE_RLX(c, LOAD_RLX(c) + by);
}

/* Lowest committed position of the active tethered readers, or head. */
static uint64_t min_tethered(const uint8_t *base, uint64_t head)
{
    uint64_t m = head;
    for (int s = 0; s < RING_MAX_READERS; s++) {
        const uint8_t *r = RD(base, s);
        uint32_t st = LOAD_ACQ(U32(r, R_STATE));
        if (st == RING_SLOT_FREE)
            continue;
        if (!LOAD_RLX(U32(r, R_TETHERED)))
            continue;
        uint64_t pos = LOAD_ACQ(U64(r, R_POS));
        if (pos < m)
            m = pos;
    }
    return m;
}

/* Publish (head, next_seq) as a pair readers can load consistently. */
static inline void publish_pair(uint8_t *base, uint64_t head, uint64_t seq)
{
    uint32_t *gen = U32(base, H_PAIR_GEN);
    uint32_t g = LOAD_RLX(gen);
    STORE_RLX(gen, g + 1);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    STORE_REL(U64(base, H_HEAD), head);
    RING_TEST_PAIR_HOOK();
    STORE_REL(U64(base, H_NEXT_SEQ), seq);
    STORE_REL(gen, g + 2);
    STORE_REL(U64(base, H_HEAD_PUB), head);
}

/* Bounded: a producer stopped or killed between the odd and the even store
 * would otherwise hold every reader of head here for ever, in every process
 * (stats, lag, drained, reader claims).  After RING_SEQLOCK_SPINS tries the
 * reader yields between tries and, past RING_SEQLOCK_WAIT_NS, reports the
 * ring damaged; the next producer's open repairs it. */
int ring_head(const uint8_t *base, uint64_t *pos, uint64_t *seq)
{
    const uint32_t *gen = U32(base, H_PAIR_GEN);
    int64_t t0 = 0;
    for (uint64_t i = 0;; i++) {
        uint32_t g1 = LOAD_ACQ(gen);
        if (!(g1 & 1)) {
            uint64_t h = LOAD_ACQ(U64(base, H_HEAD));
            uint64_t s = LOAD_ACQ(U64(base, H_NEXT_SEQ));
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (LOAD_RLX(gen) == g1) {
                *pos = h;
                *seq = s;
                return 0;
            }
        }
        if (i < RING_SEQLOCK_SPINS) {
            cpu_relax();
            continue;
        }
        int64_t now = mono_ns();
        if (i == RING_SEQLOCK_SPINS)
            t0 = now;
        else if (now - t0 > RING_SEQLOCK_WAIT_NS)
            return RING_DAMAGED;
        sched_yield();
    }
}

uint32_t ring_producer_open(ring_producer_t *p, uint8_t *base, uint32_t pid, int64_t now_ns)
{
    crc32c_setup();
    p->base = base;
    p->capacity = *U64(base, H_CAPACITY);
    p->frag_limit = *U64(base, H_FRAG_LIMIT);
    p->test_pause = 0;
    p->hold = 0;
    p->reserve = 0;
    p->repaired = 0;
    uint64_t cap = p->capacity;
    uint64_t head = LOAD_ACQ(U64(base, H_HEAD));
    uint64_t seq = LOAD_ACQ(U64(base, H_NEXT_SEQ));
    uint32_t *gen = U32(base, H_PAIR_GEN);
    uint32_t g = LOAD_RLX(gen);
    if (g & 1) {
        /* The predecessor died inside publish_pair (odd, head, next_seq,
         * even, head_pub): head may be new while next_seq is still old.
         * head_pub still names the pair before that update; if the frame
         * there is committed with next_seq, the pair to start from is
         * (head_pub, next_seq) and the walk below steps over that frame.
         * Otherwise next_seq was stored too and (head, next_seq) holds.
         * We hold the producer lock, so no one else writes gen: make it
         * even again (publish_pair below moves it on by two). */
        uint64_t hp = LOAD_ACQ(U64(base, H_HEAD_PUB));
        uint32_t size;
        uint64_t at = hp, left = cap - (hp & (cap - 1));
        if (left < RING_FRAME_HEADER)
            at += left;
        if (hp <= head && committed_frame(base, cap, at, seq, &size))
            head = hp;
        STORE_REL(gen, g + 1);
        p->repaired = 1;
    }
    /* Walk over frames a dead predecessor committed but did not account for. */
    for (;;) {
        uint64_t left = cap - (head & (cap - 1));
        if (left < RING_FRAME_HEADER) {
            head += left;
            continue;
        }
        uint32_t size;
        if (!committed_frame(base, cap, head, seq, &size))
            break;
        const uint8_t *h = data_at(base, cap, head);
        if (h[24] == RING_T_PADDING) {
            head += size;
        } else {
            head += align8(size);
            seq += 1;
        }
    }
    p->head = head;
    p->next_seq = seq;
    publish_pair(base, head, seq);
    p->cached_limit = min_tethered(base, head) + cap;
    p->last_unit = UINT64_MAX;
    uint32_t epoch = LOAD_RLX(U32(base, H_PROD_EPOCH)) + 1;
    STORE_REL(U32(base, H_PROD_EPOCH), epoch);
    STORE_REL(U32(base, H_PROD_PID), pid);
    STORE_REL(I64(base, H_PROD_HB), now_ns);
    STORE_REL(U32(base, H_PROD_STATE), (uint32_t)RING_PROD_RUNNING);
    return epoch;
}

void ring_producer_close(ring_producer_t *p, int64_t now_ns)
{
    STORE_REL(I64(p->base, H_PROD_HB), now_ns);
    STORE_REL(U32(p->base, H_PROD_STATE), (uint32_t)RING_PROD_STOPPED);
    /* Wake every sleeper so drains notice the stop promptly. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(U32(p->base, H_WAITERS), 0, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(U32(p->base, H_WAKE_SEQ), 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, U32(p->base, H_WAKE_SEQ), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void ring_producer_heartbeat(ring_producer_t *p, int64_t now_ns)
{
    STORE_REL(I64(p->base, H_PROD_HB), now_ns);
}

void ring_count_drop(ring_producer_t *p, int reason, uint64_t nbytes)
{
    /* The first drop nothing has recorded yet opens the owed window. */
    if (LOAD_RLX(U64(p->base, H_C_DROPS_FULL)) + LOAD_RLX(U64(p->base, H_C_DROPS_TOO_LARGE)) ==
        LOAD_RLX(U64(p->base, H_C_DROPS_RECORDED)))
        STORE_RLX(I64(p->base, H_C_GAP_SINCE), ring_now_ns());
    bump(p->base, reason == RING_TOO_LARGE ? H_C_DROPS_TOO_LARGE : H_C_DROPS_FULL, 1);
    bump(p->base, H_C_DROPPED_BYTES, nbytes);
}

void ring_count_gap_record(ring_producer_t *p) { bump(p->base, H_C_GAP_RECORDS, 1); }
void ring_count_fragmented(ring_producer_t *p) { bump(p->base, H_C_FRAGMENTED, 1); }

void ring_count_recorded(ring_producer_t *p, uint64_t frames)
{
    bump(p->base, H_C_DROPS_RECORDED, frames);
    uint64_t owed = LOAD_RLX(U64(p->base, H_C_DROPS_FULL)) +
                    LOAD_RLX(U64(p->base, H_C_DROPS_TOO_LARGE)) -
                    LOAD_RLX(U64(p->base, H_C_DROPS_RECORDED));
    if (owed == 0)
        STORE_RLX(I64(p->base, H_C_GAP_SINCE), 0);
}

static inline void wake_readers(uint8_t *base)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(U32(base, H_WAITERS), __ATOMIC_RELAXED) == 0)
        return;
    if (__atomic_exchange_n(U32(base, H_WAITERS), 0, __ATOMIC_SEQ_CST) == 0)
        return;
    __atomic_add_fetch(U32(base, H_WAKE_SEQ), 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, U32(base, H_WAKE_SEQ), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    bump(base, H_C_WAKES, 1);
}

uint64_t ring_room(ring_producer_t *p)
{
    uint64_t cap = p->capacity;
    uint64_t limit = min_tethered(p->base, p->head) + cap;
    p->cached_limit = limit;
    uint64_t free_bytes = limit - p->head;
    free_bytes = free_bytes > p->reserve ? free_bytes - p->reserve : 0;
    /* The worst case for a frame: the tail is wasted on padding. */
    uint64_t tail = cap - (p->head & (cap - 1));
    uint64_t best = free_bytes;
    if (free_bytes > tail && free_bytes - tail > tail)
        best = free_bytes - tail;
    else if (free_bytes > tail)
        best = tail;
    if (best < RING_FRAME_HEADER)
        return 0;
    return best - RING_FRAME_HEADER;
}

static inline int64_t write_frame(ring_producer_t *p, const uint8_t *payload, uint32_t len,
                                  uint8_t type, uint8_t flags, uint16_t conn, int64_t ts_ns,
                                  uint64_t reserve)
{
    uint8_t *base = p->base;
    uint64_t cap = p->capacity;
    /* Drops are counted by the caller (ring_count_drop), which knows whether
     * a refused write is final or will be retried (fragment chains). */
    if (len > p->frag_limit)
        return RING_TOO_LARGE;
    uint64_t head = p->head;
    uint64_t size = RING_FRAME_HEADER + (uint64_t)len;
    uint64_t need = align8(size);
    uint64_t idx = head & (cap - 1);
    uint64_t tail = cap - idx;
    uint64_t skip = 0; /* bytes before the frame: skipped tail or padding */
    if (tail < RING_FRAME_HEADER || tail < need)
        skip = tail;
    /* Ordinary writes stop `reserve` bytes short of the limit, so the
     * records that must land (ring_write_reserved) find room. */
    uint64_t end = head + skip + need + reserve;
    if (end > p->cached_limit) {
        uint64_t lo = min_tethered(base, head);
        p->cached_limit = lo + cap;
        /* Fill is sampled here, when the producer meets its cached limit:
         * the only time it learns the true distance to the slowest reader. */
        if (head - lo > LOAD_RLX(U64(base, H_C_HIGHEST_FILL)))
            STORE_RLX(U64(base, H_C_HIGHEST_FILL), head - lo);
        if (end > p->cached_limit)
            return RING_FULL;
    }
    uint64_t seq = p->next_seq;
    if (skip) {
        if (skip >= RING_FRAME_HEADER) {
            /* Padding frame: header only, carries the next frame's sequence. */
            uint8_t *ph = data_at(base, cap, head);
            *(uint64_t *)(ph + 8) = seq;
            *(int64_t *)(ph + 16) = 0;
            ph[24] = RING_T_PADDING;
            ph[25] = 0;
            *(uint16_t *)(ph + 26) = 0;
            *(uint32_t *)(ph + 28) = 0;
            STORE_REL((uint64_t *)ph, (uint64_t)(uint32_t)skip | ((uint64_t)(uint32_t)seq << 32));
        }
        /* Publish the jump to the wrap point before touching the bytes there,
         * so an untethered reader's validity check (head load after its
         * reads) sees that the start of the ring is being rewritten. */
        head += skip;
        p->head = head;
        publish_pair(base, head, seq); /* padding consumes no sequence */
        __atomic_thread_fence(__ATOMIC_RELEASE);
    }
    uint64_t pos = head;
    if (ts_ns <= 0)
        ts_ns = ring_now_ns();
    uint8_t *h = data_at(base, cap, pos);
    /* Build the header locally, CRC it with the payload, then copy. */
    uint8_t hdr[RING_FRAME_HEADER];
    *(uint32_t *)(hdr + 0) = (uint32_t)size;
    *(uint32_t *)(hdr + 4) = (uint32_t)seq;
    *(uint64_t *)(hdr + 8) = seq;
    *(int64_t *)(hdr + 16) = ts_ns;
    hdr[24] = type;
    hdr[25] = flags;
    *(uint16_t *)(hdr + 26) = conn;
    *(uint32_t *)(hdr + 28) = frame_crc_split(hdr, payload, len);
    memcpy(h + 8, hdr + 8, RING_FRAME_HEADER - 8);
    if (len)
        memcpy(h + RING_FRAME_HEADER, payload, len);
    /* Zero the alignment padding: segment files hold these bytes too, and
     * they must not carry stale bytes of an older frame. */
    if (need > size)
        memset(h + size, 0, need - size);
    /* Clear the commit word where the next frame will start, so a reader
     * waiting there sees "not yet" instead of whatever stale payload bytes an
     * earlier lap left at that offset.  Only bytes every tethered reader has
     * passed may be touched; at exactly the limit the bytes there are the
     * start of a real old frame, which reads as stale by its sequence. */
    uint64_t next = pos + need;
    uint64_t next_left = cap - (next & (cap - 1));
    if (next_left < RING_FRAME_HEADER)
        next += next_left;
    if (next + 8 <= p->cached_limit)
        STORE_RLX((uint64_t *)data_at(base, cap, next), (uint64_t)0);
    /* Resume checkpoint: the first frame that starts in each eighth. */
    uint64_t unit = pos / (cap >> 3);
    if (unit != p->last_unit) {
        uint8_t *cp = base + H_CHECKPOINTS + 16 * (unit & 7);
        STORE_REL((uint64_t *)cp, UINT64_MAX); /* invalid while updating */
        STORE_REL((uint64_t *)(cp + 8), seq);
        STORE_REL((uint64_t *)cp, pos);
        p->last_unit = unit;
    }
    if (p->test_pause)
        kill(getpid(), SIGSTOP);
    STORE_REL((uint64_t *)h, *(uint64_t *)hdr);
    head = pos + need;
    p->head = head;
    p->next_seq = seq + 1;
    publish_pair(base, head, seq + 1);
    STORE_REL(I64(base, H_PROD_HB), ts_ns);
    bump(base, H_C_FRAMES, 1);
    bump(base, H_C_BYTES, len);
    wake_readers(base);
    return (int64_t)seq;
}

int64_t ring_write(ring_producer_t *p, const uint8_t *payload, uint32_t len, uint8_t type,
                   uint8_t flags, uint16_t conn, int64_t ts_ns)
{
    return write_frame(p, payload, len, type, flags, conn, ts_ns, p->reserve);
}

int64_t ring_write_reserved(ring_producer_t *p, const uint8_t *payload, uint32_t len,
                            uint8_t type, uint8_t flags, uint16_t conn, int64_t ts_ns)
{
    return write_frame(p, payload, len, type, flags, conn, ts_ns, 0);
}

int64_t ring_write_unless_held(ring_producer_t *p, const uint8_t *payload, uint32_t len,
                               uint8_t type, uint8_t flags, uint16_t conn, int64_t ts_ns)
{
    if (p->hold)
        return RING_HELD;
    return write_frame(p, payload, len, type, flags, conn, ts_ns, p->reserve);
}
